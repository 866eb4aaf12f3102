"""The Redis backend through the seam's names, against a real redis-server: the same kinds
of checks a seam test makes of the journaled queue (FIFO, open reads, limits, expiry,
flush, delete, fanout, pause, waiting readers, stats)."""

import time

import gevent
import pytest

from erqpy.events import EventBus
from erqpy.server.waiters import wait_for_item
from tests.engine import redis_procs
from tests.engine.engine_helpers import (
    gevent_wait_until,
    make_collection,
    settings_with,
)


@pytest.fixture
def collection(redis_primary, key_prefix):
    made = []

    def build(settings=None, **options):
        made.append(make_collection(redis_primary.port, key_prefix, settings, **options))
        return made[-1]

    build.prefix = key_prefix
    yield build
    for each in made:
        each.close_all()


def put_all(collection, queue, *payloads, expires_ms=0, now=0):
    return [collection.put(queue, payload, 0, expires_ms, now) for payload in payloads]


def drain(queue, limit=100):
    taken = []
    for _ in range(limit):
        item = queue.remove()
        if item is None:
            return taken
        taken.append(item.data)
    raise AssertionError(f"more than {limit} items in {queue.name}")


def test_fifo_ids_and_levels(collection):
    queues = collection()
    queue = queues.get_or_create(b"fifo")
    assert put_all(queues, queue, b"a", b"bb", b"ccc") == [True] * 3
    assert (queue.count, queue.bytes) == (3, 6)
    first = queue.remove()
    assert (first.id, first.data, first.flags) == (1, b"a", 0)
    assert drain(queue) == [b"bb", b"ccc"]
    assert queue.remove() is None and queue.peek() is None
    assert (queue.count, queue.bytes) == (0, 0)
    queues.put(queue, b"d", 9, 0, 0)
    item = queue.peek()
    assert (item.id, item.flags) == (4, 9)  # ids go on after the queue emptied
    assert queue.peek().id == 4 and queue.count == 1  # peek takes nothing


def test_open_confirm_and_unremove_to_the_head(collection):
    queues = collection()
    queue = queues.get_or_create(b"reliable")
    put_all(queues, queue, b"one", b"two", b"three")
    opened = queue.remove(open_read=True)
    assert opened.data == b"one" and opened.opened_ms > 0 and opened.open_token > 0
    assert queue.open_count == 1 and queue.count == 2 and queue.bytes == 8
    second = queue.remove(open_read=True)
    assert queue.unremove(opened.id) is True
    assert queue.unremove(opened.id) is False  # no longer out
    assert queue.peek().data == b"one"  # back at the head, ahead of "three"
    assert queue.confirm(second.id) is True
    assert queue.confirm(second.id) is False
    assert queue.confirm(12345) is False
    assert drain(queue) == [b"one", b"three"]
    stats = queue.stats
    assert (stats.transactions, stats.canceled_transactions, stats.gets, stats.puts) == (2, 1, 4, 3)


def test_limits_refuse_or_discard_the_head(collection):
    settings = settings_with(
        small={"max_items": 2, "max_item_size": 4},
        bounded={"max_size": 5},
        rolling={"max_items": 2, "discard_old_when_full": True},
    )
    queues = collection(settings)
    small = queues.get_or_create(b"small")
    assert put_all(queues, small, b"1", b"2", b"3") == [True, True, False]
    assert queues.put(small, b"12345", 0, 0, 0) is False  # over max_item_size
    bounded = queues.get_or_create(b"bounded")
    assert put_all(queues, bounded, b"abc", b"de", b"f") == [True, True, False]
    rolling = queues.get_or_create(b"rolling")
    assert put_all(queues, rolling, b"1", b"2", b"3", b"4") == [True] * 4
    assert drain(rolling) == [b"3", b"4"]
    assert rolling.stats.discarded == 2
    assert drain(small) == [b"1", b"2"]


def test_expiry_drops_heads_and_moves_to_expire_to(collection):
    settings = settings_with(ageing={"max_age": 0.2, "expire_to": "graveyard"})
    queues = collection(settings)
    queue = queues.get_or_create(b"short")
    now = int(time.time() * 1000)
    queues.put(queue, b"old", 0, now + 50, now)
    queues.put(queue, b"fresh", 0, 0, now)
    assert queue.remove(now=now + 100).data == b"fresh"
    assert queue.stats.expired_items == 1
    ageing = queues.get_or_create(b"ageing")
    put_all(queues, ageing, b"x", b"y", now=now)
    assert ageing.discard_expired(now + 300) == 2
    graveyard = queues.lookup(b"graveyard")
    assert graveyard is not None and drain(graveyard) == [b"x", b"y"]
    assert queues.flush_all_expired() == 0


def test_an_expired_head_longer_than_one_batch_is_never_returned(collection, monkeypatch):
    from erqpy.storage import engine_redis_queue

    monkeypatch.setattr(engine_redis_queue, "EXPIRE_BATCH", 3)
    queues = collection()
    queue = queues.get_or_create(b"many-expired")
    now = int(time.time() * 1000)
    for index in range(10):
        queues.put(queue, b"gone%d" % index, 0, now + 1, now)
    queues.put(queue, b"alive", 0, 0, now)
    assert queue.remove(now=now + 10).data == b"alive"
    assert queue.stats.expired_items == 10


def test_flush_keeps_open_reads_and_delete_forgets_the_queue(collection):
    queues = collection()
    queue = queues.get_or_create(b"doomed")
    put_all(queues, queue, b"a", b"b", b"c")
    opened = queue.remove(open_read=True)
    assert queue.flush() == 2 and queue.count == 0 and queue.stats.total_flushes == 1
    assert queue.unremove(opened.id) and queue.count == 1
    assert queues.delete("doomed") is True
    assert queue.deleted and queues.lookup(b"doomed") is None
    assert queues.delete("doomed") is False
    again = queues.get_or_create(b"doomed")
    assert again is not queue and again.count == 0 and again.remove() is None


def test_fanout_children_share_one_script(collection):
    settings = settings_with(only={"fanout_only": True})
    queues = collection(settings)
    master = queues.get_or_create(b"news")
    assert queues.get_for_read(b"news") is master
    assert queues.lookup(b"news+late") is None
    first, second = queues.get_for_read(b"news+a"), queues.get_for_read(b"news+b")
    assert set(queues.children["news"]) == {"news+a", "news+b"}
    assert put_all(queues, master, b"m1", b"m2") == [True, True]
    assert drain(first) == drain(second) == drain(master) == [b"m1", b"m2"]
    only = queues.get_or_create(b"only")
    child = queues.get_for_read(b"only+x")
    assert queues.put(only, b"z", 0, 0, 0) is True
    assert only.count == 0 and drain(child) == [b"z"]


def test_max_queues_and_max_fanout_children(collection):
    from erqpy.errors import LimitReached
    from erqpy.server.config import Settings

    queues = collection(Settings(max_queues=3, queues={"m": {"max_fanout_children": 1}}))
    queues.get_or_create(b"m")
    queues.get_for_read(b"m+1")
    with pytest.raises(LimitReached, match="max_fanout_children"):
        queues.get_for_read(b"m+2")
    queues.get_or_create(b"third")
    with pytest.raises(LimitReached, match="max_queues"):
        queues.get_or_create(b"fourth")


def test_pause_is_shared_and_resume_wakes_waiters(collection):
    node_a, node_b = collection(), collection()
    queue_a = node_a.get_or_create(b"paused")
    queue_b = node_b.lookup(b"paused")
    node_a.set_paused(queue_a, True)
    assert queue_b.paused is True
    node_a.put(queue_a, b"held", 0, 0, 0)
    waiter_result = gevent.spawn(
        wait_for_item, queue_b, 5.0, lambda: None if queue_b.paused else queue_b.remove(), lambda: False)
    gevent_wait_until(lambda: queue_b.waiters, 1.0, "the reader in line")
    gevent.sleep(0.2)  # four rounds of the poller (every 50 ms): none may offer the item
    assert not waiter_result.ready()
    node_b.set_paused(queue_b, False)
    assert waiter_result.get(timeout=3).data == b"held"


def test_two_nodes_share_queues_and_a_blocked_reader_gets_a_remote_write(collection):
    node_a, node_b = collection(), collection()
    assert node_a.engine.node_id != node_b.engine.node_id
    awaited = node_b.await_queue(b"shared")  # it does not exist yet
    started = time.monotonic()
    reader = gevent.spawn(
        wait_for_item, awaited, 5.0,
        lambda: awaited.queue.remove() if awaited.queue is not None else None, lambda: False)
    gevent_wait_until(lambda: awaited.waiters, 1.0, "the reader in line")
    queue_a = node_a.get_or_create(b"shared")
    node_a.put(queue_a, b"from A", 0, 0, 0)
    item = reader.get(timeout=3)
    node_b.release_awaited(awaited)
    assert item.data == b"from A" and time.monotonic() - started < 2
    assert node_b.total_items == 0
    node_b.put(node_b.lookup(b"shared"), b"from B", 0, 0, 0)
    assert queue_a.remove().data == b"from B"
    node_a.delete("shared")
    node_b.maintain()  # follows the registry: B's object is gone too
    assert node_b.lookup(b"shared") is None and "shared" not in node_b.queues


def test_waiters_are_served_oldest_first_and_a_reader_that_left_gets_nothing(collection):
    queues = collection()
    queue = queues.get_or_create(b"line")
    order = []

    def reader(name, timeout):
        item = wait_for_item(queue, timeout, queue.remove, lambda: False)
        order.append((name, item.data if item else None))

    early = gevent.spawn(reader, "early", 0.2)  # leaves before anything comes
    first = gevent.spawn(reader, "first", 5.0)
    gevent_wait_until(lambda: len(queue.waiters) == 2, 1.0, "early and first in line")
    second = gevent.spawn(reader, "second", 5.0)
    early.join(timeout=2)
    assert early.dead and len(queue.waiters) == 2
    put_all(queues, queue, b"1", b"2")
    gevent.joinall([early, first, second], timeout=5)
    assert order == [("early", None), ("first", b"1"), ("second", b"2")]
    assert queue.count == 0 and not queue.waiters


def test_events_and_totals(collection):
    queues = collection()
    seen = []
    queues.events.subscribe("enqueued", lambda event, name, item: seen.append((event, name, item.data)))
    queues.events.subscribe("opened", lambda event, name, item: seen.append((event, name, item.data)))
    queue = queues.get_or_create(b"evented")
    queues.put(queue, b"e", 0, 0, 0)
    queue.remove(open_read=True)
    assert seen == [("enqueued", "evented", b"e"), ("opened", "evented", b"e")]
    other = queues.get_or_create(b"other")
    put_all(queues, other, b"12", b"345")
    assert (queues.total_items, queues.total_bytes) == (2, 5)
    assert queues.flush_all() == 2
    assert queues.load_all() == 2


def test_a_full_redis_refuses_with_not_stored(collection, redis_primary):
    queues = collection()
    queue = queues.get_or_create(b"full")
    used = int(redis_primary.info("memory")["used_memory"])
    redis_procs.command(redis_primary.port, "CONFIG", "SET", "maxmemory-policy", "noeviction")
    redis_procs.command(redis_primary.port, "CONFIG", "SET", "maxmemory", str(used + 256 * 1024))
    try:
        results = [queues.put(queue, b"x" * 64 * 1024, 0, 0, 0) for _ in range(20)]
    finally:
        redis_procs.command(redis_primary.port, "CONFIG", "SET", "maxmemory", "0")
    assert results[0] is True and results[-1] is False
    assert queue.count == results.count(True)


def test_scripts_are_reloaded_after_script_flush(collection, redis_primary):
    queues = collection()
    queue = queues.get_or_create(b"noscript")
    queues.put(queue, b"before", 0, 0, 0)
    assert redis_procs.command(redis_primary.port, "SCRIPT", "FLUSH") == "+OK"
    queues.put(queue, b"after", 0, 0, 0)
    assert drain(queue) == [b"before", b"after"]


def test_the_backend_is_an_implementation_of_the_seam(collection):
    from erqpy.storage import seam

    queues = collection()
    queue = queues.get_or_create(b"names")
    assert isinstance(queue, seam.Queue) and isinstance(queues, seam.Collection)
    # The read-only facts the operations layer asks of a queue (erqpy/server/ops.py).
    queues.put(queue, b"first", 0, 0, 0)
    queues.put(queue, b"second", 0, 0, 0)
    assert [item.data for item in queue.first_items(5)] == [b"first", b"second"] and queue.count == 2
    assert queue.first_items(0) == []
    opened = queue.remove(open_read=True)
    assert queue.is_open(opened.id) and not queue.is_open(opened.id + 1)
    assert queue.confirm(opened.id) and not queue.is_open(opened.id)
    assert (queue.journal_size, queue.mem_bytes) == (0, queue.bytes) == (0, 6)
    assert isinstance(queues.events, EventBus)
    gevent_wait_until(lambda: queues.lease.renewed_at > 0, 1.0, "the lease")


def test_reads_open_past_open_read_timeout_are_given_back_by_the_sweep(collection):
    queues = collection(settings_with(slow={"open_read_timeout": 0.1}))
    queue = queues.get_or_create(b"slow")
    put_all(queues, queue, b"first", b"second", b"third")
    opened = [queue.remove(open_read=True), queue.remove(open_read=True)]
    queues.maintain()
    assert queue.count == 1  # not yet stale
    gevent.sleep(0.15)
    queues.maintain()
    assert not queue.open and queue.confirm(opened[0].id) is False
    assert drain(queue) == [b"first", b"second", b"third"]


def test_every_key_of_a_fanout_set_is_in_one_hash_slot(collection):
    from redis.crc import key_slot

    queues = collection()
    for master in (b"slot", b"br{ace}s"):  # braces in a name must not split the set
        queues.get_or_create(master)
        child = queues.get_for_read(master + b"+child")
        master_queue = queues.lookup(master)
        keys = [master_queue.keys, child.keys]
        names = [key for k in keys for key in (k.items, k.meta, k.opennodes, k.children, k.open("n1"))]
        assert len({key_slot(name.encode()) for name in names}) == 1, names
        assert queues.put(master_queue, b"both", 0, 0, 0)
        assert child.remove().data == master_queue.remove().data == b"both"


def test_a_set_to_a_queue_another_node_deleted_creates_it_and_feeds_children_once(collection):
    node_a, node_b = collection(), collection()
    queue_a = node_a.get_or_create(b"recreated")
    child = node_a.get_for_read(b"recreated+c")
    waiting = gevent.spawn(wait_for_item, queue_a, 5.0, queue_a.remove, lambda: False)
    gevent_wait_until(lambda: queue_a.waiters, 1.0, "the reader in line")
    assert node_b.delete("recreated") is True  # node A has not looked since
    assert node_a.put(queue_a, b"again", 0, 0, 0) is True
    assert waiting.get(timeout=2) is None  # told, as by a local delete
    fresh = node_a.lookup(b"recreated")
    assert fresh is not queue_a and drain(fresh) == [b"again"]
    assert drain(child) == [b"again"]


def test_enqueued_events_of_fanout_children_carry_their_item_ids(collection):
    queues = collection()
    master = queues.get_or_create(b"ids")
    child = queues.get_for_read(b"ids+c")
    queues.put(child, b"own", 0, 0, 0)  # the child's ids run ahead of the master's
    seen = []
    queues.events.subscribe("enqueued", lambda event, name, item: seen.append((name, item.id)))
    queues.put(master, b"both", 0, 0, 0)
    assert sorted(seen) == [("ids", 1), ("ids+c", 2)]


def test_an_empty_item_is_stored_taken_and_given_back(collection):
    queues = collection()
    queue = queues.get_or_create(b"empty")
    assert put_all(queues, queue, b"", b"") == [True, True]
    opened = queue.remove(open_read=True)
    assert opened.data == b"" and queue.unremove(opened.id)
    assert drain(queue) == [b"", b""] and queue.bytes == 0


def test_the_sweep_drops_expired_heads_of_every_queue_in_one_round(collection, monkeypatch):
    from erqpy.storage import engine_redis_queue

    monkeypatch.setattr(engine_redis_queue, "EXPIRE_BATCH", 3)
    queues = collection(settings_with(moving={"expire_to": "moved"}))
    now = int(time.time() * 1000)
    many, moving, fresh = (queues.get_or_create(name) for name in (b"many", b"moving", b"fresh"))
    for index in range(8):  # more than two batches
        queues.put(many, b"%d" % index, 0, now + 1, now)
    queues.put(moving, b"m", 0, now + 1, now)
    queues.put(fresh, b"f", 0, 0, now)
    gevent_wait_until(lambda: int(time.time() * 1000) > now + 1, 1.0, "the items to expire")
    queues.maintain()
    assert (many.count, many.stats.expired_items) == (0, 8)
    assert moving.count == 0 and drain(queues.lookup(b"moved")) == [b"m"]
    assert drain(fresh) == [b"f"]


def test_max_deliveries_moves_an_item_given_back_too_often_to_the_dead_letter_queue(collection):
    queues = collection(settings_with(
        jobs={"max_deliveries": 2},
        strict={"max_deliveries": 1, "dead_letter_to": "graveyard"},
        graveyard={"max_items": 1},
    ))
    jobs = queues.get_or_create(b"jobs")
    put_all(queues, jobs, b"poison", b"fine")
    for delivery in (1, 2):
        item = jobs.remove(open_read=True)
        assert (item.data, item.deliveries) == (b"poison", delivery)
        assert jobs.unremove(item.id)
    assert jobs.peek().data == b"fine"  # the read that would have been the third
    assert jobs.stats.dead_lettered == 1 and jobs.count == 1
    assert drain(queues.lookup(b"jobs_errors")) == [b"poison"]
    strict = queues.get_or_create(b"strict")
    queues.put(queues.get_or_create(b"graveyard"), b"full", 0, 0, 0)
    queues.put(strict, b"again", 0, 0, 0)
    assert strict.unremove(strict.remove(open_read=True).id)
    # The dead-letter queue is full: the item is delivered once more, not dropped.
    assert strict.remove().data == b"again" and strict.stats.dead_lettered == 0


def test_a_reads_own_bound_dead_letters_on_a_queue_without_the_setting(collection):
    """``get q/open/max_deliveries=N`` (what ``erqpy consume`` sends): the TAKE script gets
    the read's bound; a read without one is still served the item."""
    queues = collection(settings_with(capped={"max_deliveries": 1}))
    jobs = queues.get_or_create(b"jobs")
    put_all(queues, jobs, b"poison", b"fine")
    for _ in range(2):
        assert jobs.unremove(jobs.remove(open_read=True).id)
    assert jobs.peek().data == b"poison"  # no bound of its own: served
    assert jobs.remove(open_read=True, max_deliveries=2).data == b"fine"
    assert drain(queues.lookup(b"jobs_errors")) == [b"poison"]
    capped = queues.get_or_create(b"capped")
    queues.put(capped, b"once", 0, 0, 0)
    assert capped.unremove(capped.remove(open_read=True).id)
    # The queue's own limit of 1 is tighter than the read's 5.
    assert capped.remove(open_read=True, max_deliveries=5) is None
    assert drain(queues.lookup(b"capped_errors")) == [b"once"]
