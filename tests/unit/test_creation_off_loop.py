"""Issue 12: a new queue's journal file is created by a worker thread (storage/newfiles),
so the hub serves other greenlets while ``open(O_CREAT)`` waits for the file system.
Checked by the order of events between greenlets and by the files, not by timing."""

import os
import time

import gevent

from erqpy.errors import LimitReached
from erqpy.storage import newfiles
from erqpy.storage.datadir import journal_path
from tests.unit.test_collection import make_collection


def slow_make_files(monkeypatch, seen):
    """make_files as it is, plus a wait in the thread: an open(O_CREAT) behind an fsync."""
    real = newfiles.make_files

    def slow(data_dir, name):
        seen.append(("thread", name))
        time.sleep(0.05)  # in the worker thread: the hub runs on meanwhile
        real(data_dir, name)

    monkeypatch.setattr(newfiles, "make_files", slow)


def test_other_greenlets_run_while_a_new_queues_file_is_created(tmp_path, monkeypatch):
    seen = []
    slow_make_files(monkeypatch, seen)
    collection = make_collection(tmp_path)

    def other():
        for _ in range(100):
            seen.append(("other", None))
            gevent.sleep(0.001)

    worker = gevent.spawn(other)
    gevent.sleep(0)
    queue = collection.get_or_create(b"fresh")
    seen.append(("created", "fresh"))
    worker.kill()

    assert ("thread", "fresh") in seen
    between = seen[seen.index(("thread", "fresh")):seen.index(("created", "fresh"))]
    assert ("other", None) in between, seen[:20]
    assert queue.add(b"x")
    assert os.path.getsize(journal_path(str(tmp_path), "fresh")) > 0
    collection.close_all()
    again = make_collection(tmp_path)
    assert 1 == again.load_all()
    assert b"x" == again.queues["fresh"].remove().data


def test_two_creations_of_one_name_make_one_queue(tmp_path, monkeypatch):
    """The second creation waits for the first one's file instead of making its own
    (which would be a second queue over one journal)."""
    seen = []
    slow_make_files(monkeypatch, seen)
    collection = make_collection(tmp_path)
    first = gevent.spawn(collection.get_or_create, b"same")
    second = gevent.spawn(collection.get_or_create, b"same")
    gevent.joinall([first, second], timeout=30, raise_error=True)
    assert first.value is second.value is collection.queues["same"]
    assert 1 == seen.count(("thread", "same"))
    assert 1 == collection.server_stats.queue_creates


def test_creations_in_flight_count_against_max_queues(tmp_path, monkeypatch):
    """Five greenlets create five queues at once under max_queues = 3: three get a
    queue, two are refused, though no creation had finished when the others began."""
    slow_make_files(monkeypatch, [])
    collection = make_collection(tmp_path, max_queues=3)
    creators = [gevent.spawn(collection.get_or_create, b"q%d" % n) for n in range(5)]
    gevent.joinall(creators, timeout=30)
    refused = [c for c in creators if isinstance(c.exception, LimitReached)]
    assert 3 == sum(1 for c in creators if c.successful())
    assert 2 == len(refused)
    assert 3 == len(collection.queues)


def test_creations_in_flight_count_against_max_fanout_children(tmp_path, monkeypatch):
    slow_make_files(monkeypatch, [])
    collection = make_collection(tmp_path, queues={"m": {"max_fanout_children": 2}})
    collection.get_or_create(b"m")
    creators = [gevent.spawn(collection.get_or_create, b"m+c%d" % n) for n in range(4)]
    gevent.joinall(creators, timeout=30)
    assert 2 == sum(1 for c in creators if c.successful())
    assert 2 == sum(1 for c in creators if isinstance(c.exception, LimitReached))
    assert 2 == len(collection.children["m"])


def test_a_journal_left_empty_by_a_crash_loads_as_an_empty_queue(tmp_path):
    """What a SIGKILL between the thread's open and its header write leaves: an empty
    journal.  Nothing was acknowledged; the queue loads empty and takes writes."""
    open(journal_path(str(tmp_path), "half"), "wb").close()
    collection = make_collection(tmp_path)
    assert 1 == collection.load_all()
    queue = collection.queues["half"]
    assert 0 == queue.count
    assert queue.add(b"after")
    collection.close_all()
    again = make_collection(tmp_path)
    again.load_all()
    assert b"after" == again.queues["half"].remove().data


def test_an_existing_journal_is_not_overwritten(tmp_path):
    """make_files creates with O_EXCL: a journal that is there already (a queue not
    loaded because keep_journal was off) keeps its records."""
    first = make_collection(tmp_path)
    first.get_or_create(b"kept").add(b"old")
    first.close_all()
    collection = make_collection(tmp_path)  # no load_all: the queue is not in memory
    newfiles.make_files(str(tmp_path), "kept")
    queue = collection.get_or_create(b"kept")
    assert b"old" == queue.remove().data


def test_a_long_name_is_recorded_by_the_thread(tmp_path):
    """A 250-byte name has a hashed file stem; its .name file is written with the journal."""
    name = "n" * 250
    collection = make_collection(tmp_path)
    collection.get_or_create(name.encode()).add(b"x")
    collection.close_all()
    again = make_collection(tmp_path)
    assert 1 == again.load_all()
    assert b"x" == again.queues[name].remove().data
