"""Read-behind: queues larger than ``max_memory_size`` keep only a window in memory, the
rest in segment files, and survive reopening in order with bounded memory."""

import os

from erqpy.server.config import QueueConfig
from erqpy.events import EventBus
from erqpy.storage.syncer import FSYNC_NEVER, Syncer
from erqpy.storage.pqueue import PersistentQueue
from erqpy.storage.datadir import SEGMENT_SUFFIX
from erqpy.storage.segments import QueueStore

T0 = 1_700_000_000_000
SMALL = {"max_memory_size": 1000, "max_journal_size": 4096}


def open_queue(path, name="rb", **config):
    config = QueueConfig(**{**SMALL, **config})
    store = QueueStore(str(path), name, FSYNC_NEVER, Syncer(), config.max_journal_size)
    queue = PersistentQueue(name, config, store, None, EventBus())
    queue.replay()
    return queue


def payload(n: int) -> bytes:
    return b"%05d" % n + b"x" * 95  # 100 bytes, numbered


def segments(path):
    return sorted(n for n in os.listdir(path) if n.endswith(SEGMENT_SUFFIX))


def drain(queue, open_read=False):
    out = []
    while True:
        item = queue.remove(open_read, now=T0)
        if item is None:
            return out
        out.append(item.data)


def test_deep_queue_keeps_a_bounded_window_in_memory(tmp_path):
    """Past max_memory_size new items go to segment files; memory stays near the budget."""
    queue = open_queue(tmp_path)
    for n in range(500):
        assert queue.add(payload(n), now=T0)

    assert 500 == queue.count
    assert queue.mem_bytes <= 1000
    assert 500 * 100 == queue.bytes
    assert len(segments(tmp_path)) >= 10


def test_items_come_back_in_order_across_memory_and_disk(tmp_path):
    """Draining a read-behind queue returns every item once, in order."""
    queue = open_queue(tmp_path)
    for n in range(500):
        queue.add(payload(n), now=T0)

    assert [payload(n) for n in range(500)] == drain(queue)
    assert 0 == queue.count and 0 == queue.bytes


def test_consumed_segments_are_deleted(tmp_path):
    """Disk use follows live data: drained segments are deleted, and an empty queue's
    files shrink back to almost nothing after compaction."""
    queue = open_queue(tmp_path)
    for n in range(500):
        queue.add(payload(n), now=T0)
    peak = len(segments(tmp_path))
    for _ in range(400):
        queue.remove(now=T0)
    assert len(segments(tmp_path)) < peak
    drain(queue)
    queue.compact()

    assert [] == segments(tmp_path)
    assert queue.store.size < 200


def test_reopen_midway_keeps_order_and_count(tmp_path):
    """A restart in the middle of a deep queue resumes at the right item."""
    queue = open_queue(tmp_path)
    for n in range(500):
        queue.add(payload(n), now=T0)
    first = [queue.remove(now=T0).data for _ in range(123)]
    queue.close()

    queue = open_queue(tmp_path)

    assert 377 == queue.count
    assert queue.mem_bytes <= 1000
    assert [payload(n) for n in range(123)] == first
    assert [payload(n) for n in range(123, 500)] == drain(queue)


def test_open_reads_of_disk_items_come_back_first_after_reopen(tmp_path):
    """Reads opened from segment items and not confirmed return to the head on restart,
    in the order they were opened."""
    queue = open_queue(tmp_path)
    for n in range(300):
        queue.add(payload(n), now=T0)
    for _ in range(50):
        queue.remove(now=T0)
    opened = [queue.remove(True, now=T0) for _ in range(3)]
    queue.confirm(opened[1].id)
    queue.close()

    queue = open_queue(tmp_path)
    order = drain(queue)

    assert [payload(50), payload(52)] == order[:2]
    assert [payload(n) for n in range(53, 300)] == order[2:]


def test_given_back_reads_stay_at_the_head_through_compaction(tmp_path):
    """An aborted read stays at the head across a snapshot and a restart."""
    queue = open_queue(tmp_path)
    for n in range(300):
        queue.add(payload(n), now=T0)
    first = queue.remove(True, now=T0)
    second = queue.remove(True, now=T0)
    queue.unremove(second.id)
    queue.unremove(first.id)
    queue.compact()
    queue.close()

    queue = open_queue(tmp_path)

    assert [payload(n) for n in range(300)] == drain(queue)


def test_flush_of_a_deep_queue_frees_its_segments(tmp_path):
    """flush empties memory and disk; the segments are deleted and later adds work."""
    queue = open_queue(tmp_path)
    for n in range(500):
        queue.add(payload(n), now=T0)

    assert 500 == queue.flush()

    assert 0 == queue.count
    assert [] == segments(tmp_path)
    queue.add(b"after", now=T0)
    queue.close()
    queue = open_queue(tmp_path)
    assert [b"after"] == drain(queue)


def test_adds_after_catching_up_interleave_correctly(tmp_path):
    """Items added to the journal after read-behind ended, then more read-behind, keep
    their order through a restart."""
    queue = open_queue(tmp_path)
    sent = []
    n = 0
    for rounds in range(3):
        for _ in range(60):
            queue.add(payload(n), now=T0)
            sent.append(payload(n))
            n += 1
        for _ in range(40):
            assert sent.pop(0) == queue.remove(now=T0).data
    queue.close()

    queue = open_queue(tmp_path)

    assert sent == drain(queue)


def test_torn_tail_segment_keeps_earlier_items(tmp_path):
    """A crash in the middle of a segment append loses only that unacknowledged item."""
    queue = open_queue(tmp_path)
    for n in range(100):
        queue.add(payload(n), now=T0)
    queue.close()
    last = os.path.join(tmp_path, segments(tmp_path)[-1])
    os.truncate(last, os.path.getsize(last) - 10)

    queue = open_queue(tmp_path)

    assert [payload(n) for n in range(99)] == drain(queue)


def test_background_snapshot_keeps_what_happened_while_it_was_written(tmp_path):
    """A snapshot over 1 MiB is written by a worker thread while the queue keeps
    working; adds, removes and reads opened meanwhile survive the switch to the new
    journal and a reopen."""
    import gevent

    queue = open_queue(tmp_path, max_memory_size=64 << 20, max_journal_size=16 << 20)
    big = [b"%05d" % n + b"y" * 5000 for n in range(400)]  # about 2 MB in the journal
    for data in big:
        queue.add(data, now=T0)
    ran_during = []

    def churn():
        ran_during.append(queue.journal._capture is not None)
        for n in range(400, 450):
            queue.add(b"%05d" % n, now=T0)
        for _ in range(10):
            queue.remove(now=T0)
        queue.remove(True, now=T0)  # an open read, journaled while the snapshot is written

    worker = gevent.spawn(churn)
    queue.compact()
    worker.join()
    expected = big[11:] + [b"%05d" % n for n in range(400, 450)]
    queue.close()

    queue = open_queue(tmp_path, max_memory_size=64 << 20, max_journal_size=16 << 20)

    assert [True] == ran_during
    assert [big[10]] + expected == drain(queue)


def test_damaged_id_at_the_read_behind_cursor_does_not_become_the_snapshot_head(tmp_path):
    """A snapshot's HEAD is the id of the next record on disk, and segments below HEAD are
    deleted: that id must come from a validated record.  With the top byte of the next
    record's id flipped, only that item is lost, not every segment."""
    from erqpy.storage import records

    queue = open_queue(tmp_path)
    for n in range(100):
        queue.add(payload(n), now=T0)
    assert 10 == len(queue.items) and 90 == queue.disk_count  # the disk part is not loaded yet
    first = os.path.join(tmp_path, segments(tmp_path)[0])
    with open(first, "r+b") as f:
        f.seek(records.HEADER_SIZE + records.RECORD_HEAD_SIZE + 7)  # the id's top byte
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes((byte ^ 0x01,)))

    queue.compact()
    queue.close()
    queue = open_queue(tmp_path)

    assert [payload(n) for n in range(100) if n != 10] == drain(queue)
