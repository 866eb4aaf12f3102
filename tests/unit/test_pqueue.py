"""PersistentQueue (erqpy.storage.pqueue) over a real Journal in tmp_path: FIFO, reliable reads,
flush, expiry with a controlled clock (``now=``), size limits, compaction and replay.

"Reopen" below means: close the queue and build a new one on the same journal file, as
a restart does; what the new queue holds is what the journal proved durable.
"""

import logging
import os

import pytest

from erqpy.storage import records
from erqpy.storage.collection import QueueCollection
from erqpy.server.config import QueueConfig, Settings
from erqpy.storage.datadir import TEMP_MARK, DataDir, journal_path, temporary_path
from erqpy.errors import JournalWriteError
from erqpy.events import EventBus
from erqpy.storage.syncer import FSYNC_NEVER, Syncer
from erqpy.storage.pqueue import PersistentQueue
from erqpy.server.state import ServerStats
from erqpy.storage.segments import QueueStore
from erqpy.storage.snapshot import RunCopy
from erqpy.server.waiters import Waiter

T0 = 1_700_000_000_000  # a fixed "now" in ms; tests move the clock by passing now=


def open_queue(tmp_path, name="q", move_item=None, keep_journal=True, **config):
    queue_config = QueueConfig(**config)
    store = None
    if keep_journal:
        store = QueueStore(str(tmp_path), name, FSYNC_NEVER, Syncer(), queue_config.max_journal_size)
    queue = PersistentQueue(name, queue_config, store, move_item, EventBus())
    if store is not None:
        queue.replay()
    return queue


def reopen(tmp_path, queue, **config):
    queue.close()
    return open_queue(tmp_path, queue.name, **config)


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def queue_log():
    """Records of the erqpy.queue logger, collected directly so that another test's
    logging setup (propagate off on "erqpy") cannot hide them."""
    logger = logging.getLogger("erqpy.queue")
    handler = _Collect()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def datas(queue):
    return [item.data for item in queue.items]


def fill(queue, *payloads, now=T0):
    for data in payloads:
        assert queue.add(data, now=now) is True


# -- FIFO -------------------------------------------------------------------------------------


def test_items_come_out_in_the_order_they_went_in(tmp_path):
    """add then remove is first in, first out, and keeps flags and data."""
    queue = open_queue(tmp_path)
    queue.add(b"one", flags=7, now=T0)
    queue.add(b"two", flags=8, now=T0)

    first = queue.remove(now=T0)
    second = queue.remove(now=T0)

    assert [(b"one", 7), (b"two", 8)] == [(first.data, first.flags), (second.data, second.flags)]
    assert queue.remove(now=T0) is None


def test_item_ids_increase_from_one(tmp_path):
    """Each added item gets the next id; ids are the gets cas value."""
    queue = open_queue(tmp_path)
    fill(queue, b"a", b"b", b"c")

    assert [1, 2, 3] == [item.id for item in queue.items]


def test_counters_follow_adds_and_removes(tmp_path):
    """bytes, total_items, puts, gets and last_age_ms follow the operations."""
    queue = open_queue(tmp_path)
    fill(queue, b"12345", b"123", now=T0)

    queue.remove(now=T0 + 250)

    assert (3, 2, 2, 1, 250) == (
        queue.bytes, queue.stats.total_items, queue.stats.puts, queue.stats.gets, queue.stats.last_age_ms,
    )


def test_add_wakes_the_oldest_waiter_only(tmp_path):
    """An add notifies exactly one waiter, the oldest."""
    queue = open_queue(tmp_path)
    first, second = Waiter(), Waiter()
    queue.waiters.extend([first, second])

    queue.add(b"x", now=T0)

    assert (True, False, [second]) == (first.notified, second.notified, list(queue.waiters))


# -- reliable reads -----------------------------------------------------------------------------


def test_open_read_leaves_the_queue_but_is_held_open(tmp_path):
    """remove(open_read=True) takes the head out of items and into open."""
    queue = open_queue(tmp_path)
    fill(queue, b"one", b"two")

    item = queue.remove(open_read=True, now=T0)

    assert ([b"two"], {item.id: item}, 3, 3) == (datas(queue), queue.open, queue.open_bytes, queue.bytes)
    assert 1 == queue.stats.transactions


def test_confirm_finishes_an_open_read_once(tmp_path):
    """confirm forgets the open read; a second confirm of the same id is refused."""
    queue = open_queue(tmp_path)
    fill(queue, b"one")
    item = queue.remove(open_read=True, now=T0)

    assert queue.confirm(item.id) is True
    assert queue.confirm(item.id) is False
    assert ({}, 0) == (queue.open, queue.open_bytes)


def test_unremove_puts_the_item_back_at_the_head(tmp_path):
    """An aborted read goes to the head, ahead of items that were behind it, and wakes a waiter."""
    queue = open_queue(tmp_path)
    fill(queue, b"one", b"two", b"three")
    item = queue.remove(open_read=True, now=T0)
    waiter = Waiter()
    queue.waiters.append(waiter)

    assert queue.unremove(item.id) is True

    assert [b"one", b"two", b"three"] == datas(queue)
    assert (True, 1, {}) == (waiter.notified, queue.stats.canceled_transactions, queue.open)


def test_unremove_of_an_unknown_read_is_refused(tmp_path):
    """unremove of an id that is not open changes nothing."""
    queue = open_queue(tmp_path)
    fill(queue, b"one")

    assert queue.unremove(1) is False
    assert [b"one"] == datas(queue)


def test_flush_removes_waiting_items_but_not_open_reads(tmp_path):
    """flush empties items and leaves open reads to be confirmed or aborted."""
    queue = open_queue(tmp_path)
    fill(queue, b"one", b"two", b"three")
    held = queue.remove(open_read=True, now=T0)

    assert 2 == queue.flush()
    assert ([], 0, [held.id]) == (datas(queue), queue.bytes, list(queue.open))
    assert queue.unremove(held.id) is True
    assert [b"one"] == datas(queue)


# -- expiry -----------------------------------------------------------------------------------


def test_expired_items_are_skipped_by_remove(tmp_path):
    """An item past its expiry is dropped at the head and counted, never returned."""
    queue = open_queue(tmp_path)
    queue.add(b"short", expires_ms=T0 + 1000, now=T0)
    queue.add(b"long", expires_ms=T0 + 10_000, now=T0)
    queue.add(b"forever", now=T0)

    item = queue.remove(now=T0 + 5000)

    assert (b"long", 1) == (item.data, queue.stats.expired_items)
    assert b"forever" == queue.remove(now=T0 + 20_000).data


def test_item_is_live_until_its_expiry_moment(tmp_path):
    """An item is returned one millisecond before its expiry and dropped at it."""
    queue = open_queue(tmp_path)
    queue.add(b"a", expires_ms=T0 + 1000, now=T0)
    queue.add(b"b", expires_ms=T0 + 1000, now=T0)

    assert b"a" == queue.remove(now=T0 + 999).data
    assert queue.remove(now=T0 + 1000) is None
    assert 1 == queue.stats.expired_items


def test_peek_does_not_return_expired_items(tmp_path):
    """peek drops expired heads and shows the first live item without removing it."""
    queue = open_queue(tmp_path)
    queue.add(b"old", expires_ms=T0 + 10, now=T0)
    queue.add(b"new", now=T0)

    assert b"new" == queue.peek(now=T0 + 100).data
    assert [b"new"] == datas(queue)


def test_discard_expired_stops_at_the_first_live_item_and_obeys_the_limit(tmp_path):
    """discard_expired removes expired items from the head only, at most ``limit`` of them."""
    queue = open_queue(tmp_path)
    for i in range(3):
        queue.add(b"x%d" % i, expires_ms=T0 + 1, now=T0)
    queue.add(b"live", now=T0)
    queue.add(b"expired-behind", expires_ms=T0 + 1, now=T0)

    assert 2 == queue.discard_expired(now=T0 + 5, limit=2)
    assert 1 == queue.discard_expired(now=T0 + 5)
    assert [b"live", b"expired-behind"] == datas(queue)


def test_max_age_caps_the_life_of_every_item(tmp_path):
    """max_age shortens a later or missing expiry, and keeps an earlier one."""
    queue = open_queue(tmp_path, max_age=10)
    queue.add(b"never", now=T0)
    queue.add(b"late", expires_ms=T0 + 60_000, now=T0)
    queue.add(b"early", expires_ms=T0 + 3000, now=T0)

    assert [T0 + 10_000, T0 + 10_000, T0 + 3000] == [item.expires_ms for item in queue.items]
    assert queue.remove(now=T0 + 10_000) is None
    assert 3 == queue.stats.expired_items


def test_expired_items_move_to_the_expire_to_queue(tmp_path):
    """With expire_to, an expired item is added to the other queue instead of dropped."""
    settings = Settings(data_dir=str(tmp_path), queues={"q": {"expire_to": "dead"}})
    collection = QueueCollection(DataDir(str(tmp_path)), settings, Syncer(), EventBus(), ServerStats())
    queue = collection.create("q")
    queue.add(b"stale", flags=3, expires_ms=T0 + 1, now=T0)
    queue.add(b"fresh", now=T0)

    assert b"fresh" == queue.remove(now=T0 + 2).data

    dead = collection.queues["dead"]
    assert ([b"stale"], 3) == (datas(dead), dead.items[0].flags)
    collection.close_all()


# -- limits -----------------------------------------------------------------------------------


def test_full_queue_refuses_by_item_count(tmp_path):
    """With max_items reached, add is refused and the queue is unchanged."""
    queue = open_queue(tmp_path, max_items=2)
    fill(queue, b"a", b"b")

    assert queue.add(b"c", now=T0) is False
    assert [b"a", b"b"] == datas(queue)


def test_full_queue_refuses_by_total_size(tmp_path):
    """An add that would pass max_size bytes is refused."""
    queue = open_queue(tmp_path, max_size=10)
    fill(queue, b"12345", b"1234")

    assert queue.add(b"12", now=T0) is False
    assert queue.add(b"1", now=T0) is True
    assert 10 == queue.bytes


def test_too_large_item_is_refused(tmp_path):
    """An item above max_item_size is refused even on an empty queue."""
    queue = open_queue(tmp_path, max_item_size=4)

    assert (False, True) == (queue.add(b"12345", now=T0), queue.add(b"1234", now=T0))


def test_discard_old_when_full_drops_the_oldest(tmp_path):
    """With discard_old_when_full, a full queue drops its head to make room, and counts it."""
    queue = open_queue(tmp_path, max_items=3, discard_old_when_full=True)
    fill(queue, b"a", b"b", b"c", b"d", b"e")

    assert ([b"c", b"d", b"e"], 2) == (datas(queue), queue.stats.discarded)


def test_discard_old_when_full_makes_room_by_size(tmp_path):
    """Dropping by size removes as many old items as the new one needs."""
    queue = open_queue(tmp_path, max_size=10, discard_old_when_full=True)
    fill(queue, b"aaa", b"bbb", b"ccc")

    assert queue.add(b"dddddd", now=T0) is True
    assert ([b"ccc", b"dddddd"], 9) == (datas(queue), queue.bytes)


def test_discard_old_when_full_refuses_an_item_larger_than_the_queue(tmp_path):
    """An item bigger than max_size is refused rather than emptying the queue."""
    queue = open_queue(tmp_path, max_size=10, discard_old_when_full=True)
    fill(queue, b"keep")

    assert queue.add(b"x" * 11, now=T0) is False
    assert [b"keep"] == datas(queue)


def test_discarded_items_stay_gone_after_replay(tmp_path):
    """Items discarded to make room are journaled as removed."""
    queue = open_queue(tmp_path, max_items=2, discard_old_when_full=True)
    fill(queue, b"a", b"b", b"c")

    queue = reopen(tmp_path, queue)

    assert [b"b", b"c"] == datas(queue)


# -- replay -----------------------------------------------------------------------------------


def test_replay_restores_items_fields_and_next_id(tmp_path):
    """A reopened queue has the same items, flags, times and ids, and continues the ids."""
    queue = open_queue(tmp_path)
    queue.add(b"one", flags=1, now=T0)
    queue.add(b"two", flags=2, expires_ms=T0 + 99_000, now=T0 + 5)
    queue.add(b"three", now=T0)
    queue.remove(now=T0)

    queue = reopen(tmp_path, queue)

    fields = [(i.id, i.data, i.flags, i.added_ms, i.expires_ms) for i in queue.items]
    assert [(2, b"two", 2, T0 + 5, T0 + 99_000), (3, b"three", 0, T0, 0)] == fields
    assert (4, 8) == (queue.next_id, queue.bytes)


def test_replay_gives_open_reads_back_at_the_head_in_order(tmp_path):
    """Reads open at a restart go back ahead of waiting items, oldest opened first."""
    queue = open_queue(tmp_path)
    fill(queue, b"a", b"b", b"c", b"d", b"e")
    first = queue.remove(open_read=True, now=T0)
    queue.remove(open_read=True, now=T0)
    third = queue.remove(open_read=True, now=T0)
    queue.confirm(first.id)  # a: confirmed, gone
    queue.unremove(third.id)  # c: already back at the head

    queue = reopen(tmp_path, queue)

    assert ([b"b", b"c", b"d", b"e"], {}) == (datas(queue), queue.open)


def test_replay_gives_several_open_reads_back_in_the_order_they_were_opened(tmp_path):
    """Three reads open at a restart come back as a, b, c ahead of the waiting d, e."""
    queue = open_queue(tmp_path)
    fill(queue, b"a", b"b", b"c", b"d", b"e")
    for _ in range(3):
        queue.remove(open_read=True, now=T0)

    queue = reopen(tmp_path, queue)

    assert ([b"a", b"b", b"c", b"d", b"e"], 0) == (datas(queue), queue.stats.canceled_transactions)


def test_replay_journals_the_returned_open_reads(tmp_path):
    """The give-back at replay is itself journaled, so a second restart agrees."""
    queue = open_queue(tmp_path)
    fill(queue, b"a", b"b", b"c")
    queue.remove(open_read=True, now=T0)
    queue.remove(open_read=True, now=T0)

    queue = reopen(tmp_path, queue)
    queue.remove(now=T0)  # a, for good
    queue = reopen(tmp_path, queue)

    assert [b"b", b"c"] == datas(queue)


def test_replay_applies_flush_and_later_adds(tmp_path):
    """A FLUSH in the journal drops earlier waiting items but not later ones or open reads."""
    queue = open_queue(tmp_path)
    fill(queue, b"a", b"b", b"c")
    queue.remove(open_read=True, now=T0)
    queue.flush()
    fill(queue, b"d")

    queue = reopen(tmp_path, queue)

    assert [b"a", b"d"] == datas(queue)


def test_replay_keeps_expiry_and_expired_items_stay_gone(tmp_path):
    """Expired removals are journaled; unexpired items keep their expiry after replay."""
    queue = open_queue(tmp_path)
    queue.add(b"gone", expires_ms=T0 + 1, now=T0)
    queue.add(b"later", expires_ms=T0 + 60_000, now=T0)
    queue.discard_expired(now=T0 + 10)

    queue = reopen(tmp_path, queue)

    assert [(b"later", T0 + 60_000)] == [(i.data, i.expires_ms) for i in queue.items]


def test_replay_of_a_torn_tail_keeps_earlier_items_and_warns(tmp_path, queue_log):
    """A journal cut inside its last record replays the rest and logs a warning."""
    queue = open_queue(tmp_path)
    fill(queue, b"first", b"second", b"third")
    queue.close()
    path = journal_path(str(tmp_path), "q")
    os.truncate(path, os.path.getsize(path) - 4)

    queue = open_queue(tmp_path)

    assert [b"first", b"second"] == datas(queue)
    assert any("truncated" in r.getMessage() and r.levelno == logging.WARNING for r in queue_log)


def test_replay_of_damage_repairs_the_journal_and_keeps_a_copy(tmp_path, queue_log):
    """A corrupt record in the middle is reported as possible data loss, a copy of the
    damaged file is kept, and the journal is rewritten so the next replay is clean."""
    queue = open_queue(tmp_path)
    fill(queue, b"first", b"second", b"third")
    queue.close()
    path = journal_path(str(tmp_path), "q")
    second_record = records.HEADER_SIZE + records.RECORD_HEAD_SIZE + records.ADD_FIELDS_SIZE + 5
    with open(path, "r+b") as f:
        f.seek(second_record + records.RECORD_HEAD_SIZE + records.ADD_FIELDS_SIZE)
        f.write(b"X")
    with open(path, "rb") as f:
        damaged = f.read()

    queue = open_queue(tmp_path)

    assert [b"first", b"third"] == datas(queue)
    messages = [r.getMessage() for r in queue_log if r.levelno == logging.ERROR]
    assert any("DATA MAY HAVE BEEN LOST" in m and f"offset {second_record}" in m for m in messages)
    copies = [n for n in os.listdir(tmp_path) if n.startswith("q.journal.corrupt-")]
    assert 1 == len(copies)
    with open(tmp_path / copies[0], "rb") as f:
        assert damaged == f.read()
    assert 1 == queue.journal.rewrites
    queue_log.clear()
    queue = reopen(tmp_path, queue)
    assert [b"first", b"third"] == datas(queue)
    assert [] == [r for r in queue_log if "DATA MAY HAVE BEEN LOST" in r.getMessage()]


# -- compaction -------------------------------------------------------------------------------


def test_steady_traffic_through_an_empty_queue_keeps_the_journal_bounded(tmp_path):
    """Add/remove cycles rewrite the journal whenever it passes max_journal_size."""
    limit = 4096
    queue = open_queue(tmp_path, max_journal_size=limit)
    largest = 0
    for i in range(500):
        queue.add(b"payload-%03d" % i + b"." * 40, now=T0)
        assert b"payload-%03d" % i == queue.remove(now=T0).data[:11]
        largest = max(largest, queue.journal.size, os.path.getsize(queue.journal.path))

    assert largest <= limit + 200
    assert queue.journal.rewrites > 0


def test_compaction_keeps_waiting_items_and_open_reads(tmp_path):
    """A rewrite with live data keeps it all: after replay open reads are at the head."""
    queue = open_queue(tmp_path, max_journal_size=2048)
    fill(queue, b"held-1", b"held-2")
    queue.remove(open_read=True, now=T0)
    queue.remove(open_read=True, now=T0)
    for i in range(200):
        fill(queue, b"churn-%d" % i + b"." * 30)
        queue.remove(now=T0)
    fill(queue, b"waiting-1", b"waiting-2")
    queue.compact()
    size_after_compaction = queue.journal.size

    queue = reopen(tmp_path, queue, max_journal_size=2048)

    assert [b"held-1", b"held-2", b"waiting-1", b"waiting-2"] == datas(queue)
    assert size_after_compaction < 2048
    assert queue.journal.rewrites == 0  # the reopened journal did not need another rewrite


def test_the_count_of_snapshot_copies_alive_returns_to_0_after_every_compaction(tmp_path):
    """``RunCopy.alive`` holds the server's young collections back (gcpolicy), so it must
    come back to 0 after every compaction, one that fails included."""
    queue = open_queue(tmp_path, max_journal_size=2048)
    fill(queue, *[b"item-%d" % n for n in range(50)])

    queue.compact()
    assert (1, 0) == (queue.journal.rewrites, RunCopy.alive)

    os.mkdir(temporary_path(queue.journal.path))  # the rewrite cannot create its file
    with pytest.raises(OSError):
        queue.compact()
    assert (1, 0) == (queue.journal.rewrites, RunCopy.alive)
    assert [b"item-%d" % n for n in range(50)] == datas(queue)


def test_compaction_waits_while_live_data_is_a_large_part_of_the_file(tmp_path):
    """With live bytes over a quarter of the journal, a rewrite would gain little: skipped."""
    queue = open_queue(tmp_path, max_journal_size=1000)
    fill(queue, *[b"x" * 200 for _ in range(10)])

    assert queue.compact_safely() is False
    assert 0 == queue.journal.rewrites


def test_a_journal_of_small_live_items_is_not_rewritten_at_every_removal(tmp_path):
    """Items of 7 bytes: their records (41 bytes each without data) are most of the
    journal.  Counting only their data, a journal of live items looked mostly history,
    and each removal rewrote all of it (300 removals, 300 rewrites of 1.4 MB)."""
    queue = open_queue(tmp_path, max_journal_size=64 * 1024)
    fill(queue, *[b"%07d" % n for n in range(3000)])
    for _ in range(300):
        queue.remove(now=T0)

    assert queue.journal.size > 64 * 1024
    assert 0 == queue.journal.rewrites
    for _ in range(2600):  # the journal becomes mostly history: rewritten then
        queue.remove(now=T0)
    assert 1 <= queue.journal.rewrites <= 3
    assert queue.journal.size < 2 * 64 * 1024
    queue = reopen(tmp_path, queue, max_journal_size=64 * 1024)
    assert [b"%07d" % n for n in range(2900, 3000)] == datas(queue)


def test_ids_do_not_go_backwards_after_an_empty_compaction(tmp_path):
    """After a rewrite leaves no records, a restart still continues the ids."""
    queue = open_queue(tmp_path)
    fill(queue, b"a", b"b", b"c")
    for _ in range(3):
        queue.remove(now=T0)
    queue.compact()

    queue = reopen(tmp_path, queue)
    fill(queue, b"d")

    assert [4] == [item.id for item in queue.items]


def test_flush_compacts_a_large_journal(tmp_path):
    """flush leaves nothing live, so a journal past its limit is rewritten at once."""
    queue = open_queue(tmp_path, max_journal_size=1024)
    fill(queue, *[b"y" * 100 for _ in range(20)])

    queue.flush()

    assert (1, records.HEADER_SIZE) == (queue.journal.rewrites, queue.journal.size)
    assert [] == [n for n in os.listdir(tmp_path) if TEMP_MARK in n]


# -- write-ahead ----------------------------------------------------------------------------------


def break_journal(queue):
    """Point the journal at /dev/full: every later write fails with ENOSPC."""
    os.close(queue.journal.fd)
    queue.journal.fd = os.open("/dev/full", os.O_WRONLY)


def test_failed_journal_write_leaves_the_queue_unchanged(tmp_path):
    """When the journal cannot be written, add, remove, open, confirm and unremove raise
    and memory is left exactly as it was (nothing unjournaled is acknowledged)."""
    queue = open_queue(tmp_path)
    fill(queue, b"a", b"b", b"c")
    held = queue.remove(open_read=True, now=T0)
    break_journal(queue)

    for operation in (
        lambda: queue.add(b"d", now=T0),
        lambda: queue.remove(now=T0),
        lambda: queue.remove(open_read=True, now=T0),
        lambda: queue.confirm(held.id),
        lambda: queue.unremove(held.id),
    ):
        with pytest.raises(JournalWriteError):
            operation()

    assert ([b"b", b"c"], [held.id], 2, 4) == (datas(queue), list(queue.open), queue.bytes, queue.next_id)
    queue.close()


def test_memory_only_queue_works_without_a_journal(tmp_path):
    """With keep_journal false there is no file, and the queue still behaves as a FIFO."""
    queue = open_queue(tmp_path, keep_journal=False)
    fill(queue, b"a", b"b")
    held = queue.remove(open_read=True, now=T0)
    queue.unremove(held.id)

    assert ([b"a", b"b"], []) == (datas(queue), os.listdir(tmp_path))
