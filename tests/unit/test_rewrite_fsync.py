"""Issue 12: the last records captured by a large rewrite are fsynced on the hub only
under ``always``.  Under ``interval`` an fsync there waited for the device (hundreds of
ms while gigabytes were under writeback, seen while draining 10 M items); the syncer's
next round fsyncs that tail instead, as it does any record.  Checked by which thread
called ``os.fsync`` (the real one, recorded and called through) and by what a reopen
finds, not by timing."""

import os
import threading

import gevent

from erqpy.events import EventBus
from erqpy.server.config import QueueConfig
from erqpy.storage.pqueue import PersistentQueue
from erqpy.storage.segments import QueueStore
from erqpy.storage.syncer import FSYNC_ALWAYS, FSYNC_INTERVAL, Syncer
from tests.unit.test_readbehind import T0, drain

KIB = b"k" * 1024
CONFIG = {"max_memory_size": 64 << 20, "max_journal_size": 64 << 20}


def open_queue(path, policy, syncer):
    config = QueueConfig(**CONFIG)
    store = QueueStore(str(path), "q", policy, syncer, config.max_journal_size)
    queue = PersistentQueue("q", config, store, None, EventBus())
    queue.replay()
    return queue


def compact_while_adding(tmp_path, monkeypatch, policy):
    """A 2 MiB journal compacted by the worker thread while a greenlet adds 20 small
    items (fewer than CAPTURE_ON_HUB_BYTES: the last capture, copied on the hub).
    ``(queue, syncer, the fds fsynced on the main thread, what was added late)``."""
    syncer = Syncer()
    queue = open_queue(tmp_path, policy, syncer)
    for n in range(2000):
        queue.add(b"%06d" % n + KIB, now=T0)
    syncer.sync_now()
    main = threading.get_ident()
    on_hub = []
    real_fsync = os.fsync

    def recorded_fsync(fd):
        if threading.get_ident() == main:
            on_hub.append(fd)
        return real_fsync(fd)

    late = []

    def add_late():
        for n in range(20):
            if queue.journal._capture is not None:
                late.append(b"late%02d" % n)
                queue.add(late[-1], now=T0)
            gevent.sleep(0)

    monkeypatch.setattr(os, "fsync", recorded_fsync)
    adder = gevent.spawn(add_late)
    gevent.sleep(0)
    queue.compact()
    adder.join()
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert 1 == queue.journal.rewrites
    assert late, "nothing was added while the rewrite was written"
    return queue, syncer, on_hub, late


def test_under_interval_the_captured_tail_is_left_to_the_syncer_not_fsynced_on_the_hub(tmp_path, monkeypatch):
    queue, syncer, on_hub, late = compact_while_adding(tmp_path, monkeypatch, FSYNC_INTERVAL)

    assert [] == on_hub
    assert queue.journal in syncer.dirty  # the interval round fsyncs the new file's tail
    syncer.sync_now()
    queue.close()
    queue = open_queue(tmp_path, FSYNC_INTERVAL, Syncer())
    assert [b"%06d" % n + KIB for n in range(2000)] + late == drain(queue)


def test_under_always_the_captured_tail_is_fsynced_before_the_switch(tmp_path, monkeypatch):
    """Its records were acknowledged after an fsync of the old file: the new file holds
    them durably before it replaces that one."""
    queue, syncer, on_hub, late = compact_while_adding(tmp_path, monkeypatch, FSYNC_ALWAYS)

    assert [queue.journal.fd] == on_hub
    assert queue.journal not in syncer.dirty
    queue.close()
    queue = open_queue(tmp_path, FSYNC_ALWAYS, Syncer())
    assert [b"%06d" % n + KIB for n in range(2000)] + late == drain(queue)
