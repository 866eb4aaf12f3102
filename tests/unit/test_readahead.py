"""Read-behind asks a thread of its own to read the segment pages past its cursor
(``storage/readahead``), so that a refill on the hub finds them cached instead of
waiting for the device.  Checked by what the thread reports it read, waiting for it
a bounded time; not by timing."""

import time

from erqpy.storage import readahead
from erqpy.storage.readahead import AHEAD_BYTES, READ_AHEAD, WINDOW_BYTES
from tests.unit.test_readbehind import T0, open_queue, segments

KIB = b"r" * 1024


def wait_for(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_a_refill_has_the_pages_ahead_of_the_cursor_read_by_the_thread(tmp_path):
    queue = open_queue(tmp_path, max_memory_size=256 * 1024, max_journal_size=4 << 20)
    for n in range(6000):  # about 6 MiB: two segments
        queue.add(b"%06d" % n + KIB, now=T0)
    assert len(segments(tmp_path)) >= 2
    requested, read = READ_AHEAD.requested, READ_AHEAD.read_bytes

    taken = []
    while READ_AHEAD.requested == requested and len(taken) < 6000:  # up to the first refill
        taken.append(queue.remove(now=T0).data)

    store = queue.store
    asked = READ_AHEAD.requested - requested
    assert store.ahead.until >= store._cursor_offset + AHEAD_BYTES  # asked for, past the cursor
    assert asked == -(-(store.ahead.until - store.segments[0].format.header_size) // WINDOW_BYTES)
    assert wait_for(lambda: READ_AHEAD.read_bytes - read >= asked * WINDOW_BYTES)
    assert [b"%06d" % n + KIB for n in range(len(taken))] == taken


def test_near_the_end_of_a_sealed_segment_the_next_one_is_read_ahead(tmp_path):
    queue = open_queue(tmp_path, max_memory_size=256 * 1024, max_journal_size=1 << 20)
    for n in range(3000):  # 1 MiB segments: the frontier passes the first one's end at once
        queue.add(b"%06d" % n + KIB, now=T0)
    assert len(segments(tmp_path)) >= 3
    requested, read = READ_AHEAD.requested, READ_AHEAD.read_bytes
    for _ in range(3000):
        if READ_AHEAD.requested != requested:
            break
        queue.remove(now=T0)

    # The whole first segment (a record over 1 MiB), then the start of the second.
    first, second = queue.store.segments[:2]
    assert queue.store.ahead.next_asked
    assert 3 == READ_AHEAD.requested - requested
    assert wait_for(lambda: READ_AHEAD.read_bytes - read >= first.size - first.format.header_size + WINDOW_BYTES)


def test_a_read_ahead_of_a_file_deleted_meanwhile_costs_only_itself(tmp_path):
    failed, read = READ_AHEAD.failed, READ_AHEAD.read_bytes
    there = tmp_path / "there.seg"
    there.write_bytes(b"x" * 4096)

    READ_AHEAD.request(str(tmp_path / "gone.seg"), 0, WINDOW_BYTES)
    READ_AHEAD.request(str(there), 0, WINDOW_BYTES)

    assert wait_for(lambda: READ_AHEAD.read_bytes - read >= 4096)
    assert 1 == READ_AHEAD.failed - failed


def test_requests_past_the_waiting_limit_are_dropped_not_waited_for(tmp_path, monkeypatch):
    """The hub never waits for the thread: with the limit at 0 every request is dropped."""
    monkeypatch.setattr(readahead, "MAX_WAITING", 0)
    dropped, requested = READ_AHEAD.dropped, READ_AHEAD.requested

    READ_AHEAD.request(str(tmp_path / "any.seg"), 0, WINDOW_BYTES)

    assert (1, 0) == (READ_AHEAD.dropped - dropped, READ_AHEAD.requested - requested)
