"""Descriptor lifetime (erqpy.storage.journal, erqpy.descriptors) on real files: a descriptor a
flush round is fsyncing stays open until the fsync returns, however its journal is closed
meanwhile, and the LRU of open files closes idle journals and reopens them on demand."""

import os
import socket
import stat
import threading

import gevent
import pytest

from erqpy.storage import records
from erqpy.descriptors import OpenFiles, derived_max_open_files
from erqpy.errors import JournalWriteError
from erqpy.storage.datadir import journal_path
from erqpy.storage.journal import Journal
from erqpy.storage.syncer import FSYNC_ALWAYS, FSYNC_NEVER, Syncer


def new_journal(tmp_path, name, syncer, policy=FSYNC_NEVER):
    journal = Journal(journal_path(str(tmp_path), name), name, policy, syncer)
    journal.open(lambda record: None)
    return journal


def replayed_ids(tmp_path, name):
    journal = Journal(journal_path(str(tmp_path), name), name, FSYNC_NEVER, Syncer())
    seen = []
    journal.open(seen.append)
    journal.close()
    return [r.item_id for r in seen]


class HeldFsync:
    """Makes os.fsync in the worker thread wait until released, and notes what each fsync
    hit, so a test can act on the hub while a flush round is in flight."""

    def __init__(self, monkeypatch):
        self.entered = threading.Event()
        self.release = threading.Event()
        self.seen = []  # (fd, st_mode, st_ino) at the moment of the fsync
        real = os.fsync

        def held(fd):
            if threading.current_thread() is threading.main_thread():
                return real(fd)  # the hub's own fsyncs (a rewrite) are not held
            self.entered.set()
            self.release.wait(10)
            info = os.fstat(fd)
            self.seen.append((fd, info.st_mode, info.st_ino))
            return real(fd)

        monkeypatch.setattr(os, "fsync", held)

    def wait_entered(self):
        for _ in range(1000):  # bounded: 10 s
            if self.entered.is_set():
                return
            gevent.sleep(0.01)
        raise AssertionError("the flush round never reached fsync")


@pytest.mark.parametrize("how", ["close", "erase", "rewrite"])
def test_a_descriptor_being_fsynced_is_not_reused_when_its_journal_lets_go(tmp_path, monkeypatch, how):
    syncer = Syncer()
    journal = new_journal(tmp_path, "q", syncer, FSYNC_ALWAYS)
    journal.append(journal.format.encode_add(1, 0, 1000, 0, b"one"))
    inode = os.stat(journal.path).st_ino
    old_fd = journal.fd
    held = HeldFsync(monkeypatch)
    round_ = gevent.spawn(syncer._flush_round)
    held.wait_entered()

    if how == "close":
        journal.close()
    elif how == "erase":
        journal.erase()
    else:
        assert journal.rewrite(2, [journal.format.encode_add(1, 0, 1000, 0, b"one")])
    # The lowest free numbers go to the next descriptors the process opens: a socket
    # here, as when a client connects.  It must not get the number being fsynced.
    a, b = socket.socketpair()
    try:
        assert old_fd not in (a.fileno(), b.fileno())
        held.release.set()
        error = round_.get(timeout=10)
    finally:
        a.close()
        b.close()
    assert error is None
    fd, mode, synced_inode = held.seen[0]
    assert fd == old_fd and stat.S_ISREG(mode) and synced_inode == inode
    # And once the round is over, the descriptor is closed.
    try:
        target = os.readlink(f"/proc/self/fd/{old_fd}")
    except FileNotFoundError:
        target = ""
    assert target != journal.path and "(deleted)" not in target
    if how == "rewrite":
        journal.close()


def test_appending_to_a_closed_journal_fails_and_writes_nowhere(tmp_path):
    syncer = Syncer()
    journal = new_journal(tmp_path, "q", syncer)
    journal.close()
    r, w = os.pipe()  # takes the number the journal had
    try:
        with pytest.raises(JournalWriteError):
            journal.append(journal.format.encode_add(1, 0, 1000, 0, b"lost?"))
        os.set_blocking(r, False)
        with pytest.raises(BlockingIOError):
            os.read(r, 100)
    finally:
        os.close(r)
        os.close(w)


def test_idle_journals_past_the_budget_are_closed_and_reopened_on_append(tmp_path):
    syncer = Syncer(files=OpenFiles(limit=4))
    journals = [new_journal(tmp_path, f"q{i}", syncer) for i in range(10)]
    assert len(syncer.files) <= 4
    assert sum(j.fd >= 0 for j in journals) <= 4
    for round_ in range(3):
        for i, journal in enumerate(journals):
            journal.append(journal.format.encode_add(round_ + 1, 0, 1000, 0, b"%d-%d" % (i, round_)))
            assert sum(j.fd >= 0 for j in journals) <= 4
    for journal in journals:
        journal.close()
    assert len(syncer.files) == 0
    for i in range(10):
        assert replayed_ids(tmp_path, f"q{i}") == [1, 2, 3]


def test_a_journal_with_unsynced_writes_is_fsynced_before_the_budget_closes_it(tmp_path, monkeypatch):
    syncer = Syncer(files=OpenFiles(limit=2))
    dirty = new_journal(tmp_path, "dirty", syncer, FSYNC_ALWAYS)
    dirty.append(dirty.format.encode_add(1, 0, 1000, 0, b"not yet synced"))
    dirty_fd, dirty_inode = dirty.fd, os.fstat(dirty.fd).st_ino
    synced = []
    real = os.fsync

    def noting(fd):
        synced.append(os.fstat(fd).st_ino)
        return real(fd)

    monkeypatch.setattr(os, "fsync", noting)
    dirty.used = False
    others = [new_journal(tmp_path, f"q{i}", syncer) for i in range(3)]
    assert dirty.fd < 0 and dirty_fd >= 0
    assert dirty_inode in synced  # fsynced through its own descriptor before the close
    assert dirty not in syncer.dirty
    for journal in others:
        journal.close()
    assert replayed_ids(tmp_path, "dirty") == [1]


def test_the_least_recently_used_journal_goes_first(tmp_path):
    syncer = Syncer(files=OpenFiles(limit=3))
    a, b, c = (new_journal(tmp_path, name, syncer) for name in "abc")
    for journal in (a, b, c):  # the clock hand passes once; a is used again after it
        journal.used = False
    a.append(a.format.encode_add(1, 0, 1000, 0, b"a"))
    new_journal(tmp_path, "d", syncer)
    assert a.fd >= 0 and b.fd < 0 and c.fd >= 0


def test_the_default_budget_leaves_room_for_sockets():
    assert derived_max_open_files(1024) == 768
    assert derived_max_open_files(256) == 192
    assert derived_max_open_files(10) == 8
