"""Delayed items in the storage and the operations layer, on both implementations of the
seam (``backend``, from test_ops): hidden until due, then in due order; abort with a
delay; limits, flush, replay; and the heap itself (``storage.schedule``)."""

import gevent
import pytest

from erqpy.errors import ClientError, LimitReached
from erqpy.server import ops
from erqpy.storage import records, schedule
from erqpy.storage.items import Item, now_ms
from tests.unit.test_ops import drain, fill, wait_with_gevent
# The fixtures of test_ops, for both storages (pytest finds them by these names).
from tests.unit.test_ops import backend, journaled_backend, journaled_server, server, settings, syncer  # noqa: F401


def item(item_id: int, due_ms: int, data: bytes = b"x") -> Item:
    made = Item(item_id, 0, data, 0, 0)
    made.due_ms = due_ms
    return made


def test_the_heap_gives_due_items_by_due_time_then_id():
    promoted = []
    delayed = schedule.DelayedItems(promoted.append)
    for entry in (item(3, 200), item(1, 300), item(2, 200), item(4, 100, b"four")):
        delayed.push(entry)
    assert 4 == len(delayed) and 7 == delayed.bytes

    assert [4] == [entry.id for entry in delayed.pop_due(150)]
    assert [2, 3] == [entry.id for entry in delayed.pop_due(250)]
    assert [1] == [entry.id for entry in delayed.pop_due(10_000)]
    assert 0 == len(delayed) and 0 == delayed.bytes
    delayed.stop()


def test_the_timer_promotes_the_earliest_item_when_it_is_due():
    fired = []
    delayed = schedule.DelayedItems(lambda now: fired.extend(delayed.pop_due(now)))
    delayed.push(item(1, now_ms() + 50))
    gevent.sleep(0.01)
    assert [] == fired
    for _ in range(200):
        if fired:
            break
        gevent.sleep(0.01)
    assert [1] == [entry.id for entry in fired]
    assert 0 == fired[0].due_ms


def test_attrs_records_round_trip():
    fmt = records.V2Format(1234)
    encoded = fmt.encode_attrs(7, 1_700_000_000_123, 2)
    record, end = fmt.decode_at(encoded, 0)
    assert (records.OP_ATTRS, 7, 1_700_000_000_123, 2) == (record.opcode, record.item_id, record.due_ms,
                                                          record.priority)
    assert len(encoded) == end
    assert encoded == fmt.encode_record(record)


def test_a_delayed_put_is_hidden_until_due_then_after_the_waiting_items(server):
    queue = fill(server, b"q", b"a")
    assert ops.put(server, queue, b"late", delay_ms=100)
    assert ops.put(server, queue, b"sooner", delay_ms=50)
    fill(server, b"q", b"b")

    assert [b"a", b"b"] == drain(server, queue)
    assert 2 == len(queue.delayed)
    assert 0 == ops.depth(queue)
    gevent.sleep(0.15)
    assert [b"sooner", b"late"] == drain(server, queue)


def test_a_due_time_in_the_past_is_an_ordinary_put(server):
    queue = fill(server, b"q")
    assert ops.put(server, queue, b"x", due_ms=now_ms() - 1000)
    assert 0 == len(queue.delayed)
    assert [b"x"] == drain(server, queue)


def test_a_waiting_take_gets_the_item_when_it_falls_due(server):
    queue = fill(server, b"q")
    ops.put(server, queue, b"due", delay_ms=80)
    started = now_ms()
    _queue, got = ops.take_or_wait(server, queue, b"q", 5.0, wait_with_gevent)
    assert b"due" == got.data
    assert now_ms() >= started + 79


def test_peek_does_not_show_an_item_not_yet_due(server):
    queue = fill(server, b"q")
    ops.put(server, queue, b"x", delay_ms=10_000)
    assert ops.take_or_wait(server, queue, b"q", peek=True)[1] is None


def test_abort_with_a_delay_keeps_the_delivery_count(server):
    queue = fill(server, b"q", b"job")
    taken = ops.take(server, queue, open_read=True)
    assert ops.abort(queue, taken.id, delay_ms=60)
    assert ops.take(server, queue) is None
    gevent.sleep(0.1)
    again = ops.take(server, queue, open_read=True)
    assert (b"job", 2) == (again.data, again.deliveries)


@pytest.mark.parametrize("kwargs, reason", [
    ({"delay_ms": -1}, "must not be negative"),
    ({"delay_ms": schedule.MAX_DELAY_MS + 1}, "at most"),
    ({"delay_ms": 5, "due_ms": 5}, "cannot be combined"),
])
def test_delays_out_of_range_are_client_errors(server, kwargs, reason):
    queue = fill(server, b"q")
    with pytest.raises(ClientError, match=reason):
        ops.put(server, queue, b"x", **kwargs)
    assert 0 == len(queue.delayed) and 0 == ops.depth(queue)


def test_delayed_items_count_against_max_items(server):
    queue = fill(server, b"tiny")  # max_items = 1
    assert ops.put(server, queue, b"x", delay_ms=10_000)
    assert not ops.put(server, queue, b"y")
    assert not ops.put(server, queue, b"z", delay_ms=10)


def test_the_number_of_delayed_items_is_bounded(server, monkeypatch):
    monkeypatch.setattr("erqpy.storage.pqueue.MAX_DELAYED_ITEMS", 2)
    monkeypatch.setattr("erqpy.storage.memory.MAX_DELAYED_ITEMS", 2)
    monkeypatch.setattr(schedule, "MAX_DELAYED_ITEMS", 2)
    queue = fill(server, b"q")
    ops.put(server, queue, b"1", delay_ms=10_000)
    ops.put(server, queue, b"2", delay_ms=10_000)
    with pytest.raises(LimitReached, match="delayed items"):
        ops.put(server, queue, b"3", delay_ms=10_000)
    assert ops.put(server, queue, b"now")
    assert 2 == len(queue.delayed)


def test_flush_removes_delayed_items(server):
    queue = fill(server, b"q", b"a")
    ops.put(server, queue, b"x", delay_ms=50)
    assert 2 == ops.flush(server, queue)
    gevent.sleep(0.08)
    assert [] == drain(server, queue)
    assert 0 == queue.bytes


def test_delayed_items_are_replayed_still_delayed(journaled_server, journaled_backend):
    queue = fill(journaled_server, b"q", b"a")
    ops.put(journaled_server, queue, b"x", delay_ms=300)
    journaled_backend.close_all()
    journaled_backend.queues.clear()
    journaled_backend.by_key.clear()
    journaled_backend.load_all()
    queue = journaled_backend.queues["q"]
    assert 1 == len(queue.delayed)
    assert [b"a"] == drain(journaled_server, queue)
    gevent.sleep(0.35)
    assert [b"x"] == drain(journaled_server, queue)
