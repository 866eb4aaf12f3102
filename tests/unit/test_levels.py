"""Priority levels in the storage and the operations layer, on both implementations of
the seam (``backend``, from test_ops): serving order, FIFO within a level, give-back to
the head of a level, expiry and dead-lettering per level, limits, flush and replay."""

import gevent
import pytest

from erqpy.errors import ClientError
from erqpy.server import ops
from erqpy.storage.items import Item, now_ms
from erqpy.storage.levels import Levels
from tests.unit.test_ops import drain, fill, wait_with_gevent
# The fixtures of test_ops, for both storages (pytest finds them by these names).
from tests.unit.test_ops import backend, journaled_backend, journaled_server, server, settings, syncer  # noqa: F401


def put_at(server, queue, priority: int, *payloads, **kwargs):
    for payload in payloads:
        assert ops.put(server, queue, payload, priority=priority, **kwargs)


def test_levels_serve_the_urgent_ones_then_the_default_then_the_lazy_ones():
    levels = Levels()
    for priority, item_id in ((9, 1), (0, 2), (3, 3), (0, 4)):
        item = Item(item_id, 0, b"x", 0, 0)
        item.priority = priority
        levels.push(item)
    default = object()
    order = levels.in_order(default)
    assert [[2, 4], [3]] == [[item.id for item in level] for level in order[:2]]
    assert order[2] is default
    assert [[1]] == [[item.id for item in level] for level in order[3:]]
    assert {0: 2, 3: 1, 9: 1} == levels.counts()
    assert (4, 4) == (levels.count, levels.bytes)


def test_reads_take_the_most_urgent_level_first(server):
    queue = fill(server, b"q", b"d1")
    put_at(server, queue, 9, b"l1")
    put_at(server, queue, 1, b"u1", b"u2")
    fill(server, b"q", b"d2")

    assert 5 == ops.depth(queue)
    assert [b"u1", b"u2"] == [item.data for item in ops.head_items(queue, 2)]
    assert [b"u1", b"u2", b"d1", b"d2", b"l1"] == drain(server, queue)


def test_an_abort_goes_back_to_the_head_of_its_level(server):
    queue = fill(server, b"q")
    put_at(server, queue, 2, b"a", b"b")
    taken = ops.take(server, queue, open_read=True)
    put_at(server, queue, 1, b"one")
    assert ops.abort(queue, taken.id)
    assert [b"one", b"a", b"b"] == drain(server, queue)


def test_expired_heads_of_a_level_are_dropped_and_the_next_level_served(server):
    queue = fill(server, b"q")
    put_at(server, queue, 0, b"stale", expires_ms=now_ms() - 1)
    put_at(server, queue, 7, b"lazy")
    assert [b"lazy"] == drain(server, queue)
    assert 1 == queue.stats.expired_items


def test_flush_expired_reaches_every_level(server):
    queue = fill(server, b"q")
    put_at(server, queue, 0, b"stale", expires_ms=now_ms() - 1)
    put_at(server, queue, 8, b"stale", expires_ms=now_ms() - 1)
    fill(server, b"q", b"kept")
    assert 2 == ops.flush_expired(server, queue)
    assert [b"kept"] == drain(server, queue)


def test_items_of_every_level_count_against_max_items(server):
    queue = fill(server, b"tiny")  # max_items = 1
    put_at(server, queue, 0, b"x")
    assert not ops.put(server, queue, b"y")
    assert not ops.put(server, queue, b"z", priority=9)


def test_flush_empties_every_level(server):
    queue = fill(server, b"q", b"a")
    put_at(server, queue, 0, b"b")
    put_at(server, queue, 9, b"c")
    assert 3 == ops.flush(server, queue)
    assert [] == drain(server, queue)
    assert 0 == queue.bytes and 0 == ops.depth(queue)


def test_a_prioritised_delayed_item_joins_its_level_when_due(server):
    queue = fill(server, b"q", b"plain")
    put_at(server, queue, 0, b"urgent", delay_ms=50)
    gevent.sleep(0.08)
    assert [b"urgent", b"plain"] == drain(server, queue)


def test_a_waiting_take_is_woken_by_a_prioritised_put(server):
    queue = fill(server, b"q")
    waiting = gevent.spawn(ops.take_or_wait, server, queue, b"q", 5.0, wait_with_gevent)
    gevent.idle()
    put_at(server, queue, 3, b"three")
    _queue, item = waiting.get(timeout=5)
    assert b"three" == item.data


@pytest.mark.parametrize("priority", [-1, 10])
def test_priorities_out_of_range_are_client_errors(server, priority):
    queue = fill(server, b"q")
    with pytest.raises(ClientError, match="priority must be 0 to 9"):
        ops.put(server, queue, b"x", priority=priority)
    assert 0 == ops.depth(queue)


def test_the_delivery_limit_applies_at_the_head_of_a_level(server, backend):
    queue = fill(server, b"q")
    put_at(server, queue, 1, b"poison")
    for _ in range(2):
        item = queue.remove(True, 0, 2)
        assert b"poison" == item.data
        ops.abort(queue, item.id)
    assert queue.remove(True, 0, 2) is None
    assert [b"poison"] == drain(server, backend.lookup(b"q_errors"))


def test_levels_are_replayed(journaled_server, journaled_backend):
    queue = fill(journaled_server, b"q", b"d")
    put_at(journaled_server, queue, 9, b"lazy")
    put_at(journaled_server, queue, 0, b"u1", b"u2")
    opened = ops.take(journaled_server, queue, open_read=True)  # u1, open at the "crash"
    assert b"u1" == opened.data
    journaled_backend.close_all()
    journaled_backend.queues.clear()
    journaled_backend.by_key.clear()
    journaled_backend.load_all()
    queue = journaled_backend.queues["q"]
    assert [b"u1", b"u2", b"d", b"lazy"] == drain(journaled_server, queue)


def test_a_compaction_keeps_a_levels_order_given_back_out_of_id_order(journaled_server, journaled_backend):
    server = journaled_server
    queue = fill(server, b"q")
    put_at(server, queue, 2, b"a", b"b", b"c")
    first = ops.take(server, queue, open_read=True)
    second = ops.take(server, queue, open_read=True)
    ops.abort(queue, first.id)
    ops.abort(queue, second.id)  # the level is now b, a, c
    ops.compact(queue)
    journaled_backend.close_all()
    journaled_backend.queues.clear()
    journaled_backend.by_key.clear()
    journaled_backend.load_all()
    assert [b"b", b"a", b"c"] == drain(server, journaled_backend.queues["q"])
