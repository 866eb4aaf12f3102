"""What an item and an empty queue cost (issue 12), and that the compact forms keep every
rule: a plain item becomes a full ``Item`` when it is opened, delayed, prioritised or
replayed with deliveries, and every item still comes out exactly once.  Real journaled
queues in tmp_path."""

import sys
import time
import tracemalloc

import pytest

from erqpy.events import EventBus
from erqpy.server.config import Settings
from erqpy.server.state import ServerStats
from erqpy.storage.collection import QueueCollection
from erqpy.storage.datadir import DataDir
from erqpy.storage.items import (DEFAULT_PRIORITY, PACKED_MAX, Item, PlainItem, SegmentPlainItem, TaggedItem,
                                 item_from_record, item_from_segment_record, mark_in_segment, new_item, now_ms,
                                 with_fields)
from erqpy.storage.journal import Syncer
from erqpy.storage.levels import NO_LEVELS
from erqpy.storage.records import Record, OP_ADD


def make_collection(path, **queue_settings):
    settings = Settings(data_dir=str(path), queues={"default": queue_settings})
    return QueueCollection(DataDir(str(path)), settings, Syncer(), EventBus(), ServerStats())


def test_a_plain_item_reads_the_rare_fields_as_defaults_and_refuses_to_set_them():
    item = PlainItem(7, b"x", 1000)
    assert (0, 0, 0, 0, 0, 0, DEFAULT_PRIORITY, False) == (
        item.flags, item.expires_ms, item.opened_ms, item.open_token, item.deliveries, item.due_ms,
        item.priority, item.in_segment)
    assert not hasattr(item, "__dict__")
    for name in ("flags", "expires_ms", "deliveries"):
        with pytest.raises(AttributeError):
            setattr(item, name, 1)


def test_a_plain_item_is_one_bytes_object_that_packs_its_id_and_time_before_its_payload():
    item = PlainItem(2**40 + 7, b"payload", 1_700_000_000_123)
    assert isinstance(item, bytes) and 16 + 7 == len(item)
    assert (2**40 + 7, b"payload", 1_700_000_000_123, 7) == (item.id, item.data, item.added_ms, item.payload_size)
    assert type(item.data) is bytes and "PlainItem(id=1099511627783" in str(item)
    assert sys.getsizeof(item) < sys.getsizeof(TaggedItem(2**40 + 7, 0, b"payload", 1_700_000_000_123, 0))


def test_the_segment_mark_of_a_plain_item_is_its_class_and_survives_with_fields():
    item = new_item(5, 0, b"x", 1000, 0)
    mark_in_segment(item, True)
    assert type(item) is SegmentPlainItem and item.in_segment and (5, b"x") == (item.id, item.data)
    full = with_fields(item)
    assert type(full) is Item and full.in_segment
    mark_in_segment(full, False)
    mark_in_segment(item, False)
    assert type(item) is PlainItem and not item.in_segment and not full.in_segment
    with pytest.raises(AttributeError):
        item.in_segment = True  # only mark_in_segment sets it on a plain item


def test_items_read_from_a_segment_come_marked_in_every_class():
    plain = item_from_segment_record(Record(OP_ADD, 3, 0, 1000, 0, b"x"))
    tagged = item_from_segment_record(Record(OP_ADD, 4, 9, 1000, 0, b"x"))
    large = item_from_segment_record(Record(OP_ADD, 5, 0, 1000, 0, b"x" * (PACKED_MAX + 1)))
    assert [SegmentPlainItem, TaggedItem, TaggedItem] == [type(item) for item in (plain, tagged, large)]
    assert all(item.in_segment for item in (plain, tagged, large))
    assert (3, b"x", 1000) == (plain.id, plain.data, plain.added_ms)


def test_a_payload_over_packed_max_is_referred_to_not_packed(tmp_path):
    """Reading a plain item's data copies it; a large one is held by reference, so a get
    naming it many times does not copy it each time (tests/protocol/test_connection_limits)."""
    large = b"y" * (PACKED_MAX + 1)
    assert PlainItem is type(new_item(1, 0, b"y" * PACKED_MAX, 1000, 0))
    assert TaggedItem is type(new_item(1, 0, large, 1000, 0))
    collection = make_collection(tmp_path)
    queue = collection.get_or_create(b"q")
    queue.add(large)
    queue.add(b"small")
    assert [TaggedItem, PlainItem] == [type(item) for item in queue.items]
    assert queue.items[0].data is large
    assert [large, b"small"] == [queue.remove().data, queue.remove().data]
    collection.close_all()


def test_new_item_picks_the_smallest_class_that_holds_the_fields():
    assert PlainItem is type(new_item(1, 0, b"x", 1000, 0))
    tagged = new_item(1, 3, b"x", 1000, 0)
    assert TaggedItem is type(tagged) and (3, 0) == (tagged.flags, tagged.expires_ms)
    assert TaggedItem is type(new_item(1, 0, b"x", 1000, 5000))
    assert sys.getsizeof(PlainItem(1, b"x", 1000)) < sys.getsizeof(tagged) < sys.getsizeof(Item(1, 0, b"", 0, 0))


def test_with_fields_copies_every_field_and_keeps_a_full_item():
    tagged = TaggedItem(7, 3, b"x", 1000, 2000)
    tagged.in_segment = True
    full = with_fields(tagged)
    assert type(full) is Item
    assert (7, 3, b"x", 1000, 2000, True) == (
        full.id, full.flags, full.data, full.added_ms, full.expires_ms, full.in_segment)
    full.deliveries = 2
    assert with_fields(full) is full
    plain = with_fields(PlainItem(8, b"y", 1000))
    assert type(plain) is Item and (8, 0, b"y", 0) == (plain.id, plain.flags, plain.data, plain.expires_ms)


def test_open_reads_give_back_and_replay_keep_exactly_once(tmp_path):
    collection = make_collection(tmp_path)
    queue = collection.get_or_create(b"q")
    for data in (b"a", b"b", b"c"):
        queue.add(data)
    queue.add(b"d", flags=9, expires_ms=now_ms() + 3_600_000)
    assert [PlainItem, PlainItem, PlainItem, TaggedItem] == [type(item) for item in queue.items]
    expires = queue.items[3].expires_ms

    opened = queue.remove(open_read=True)
    assert type(opened) is Item and queue.open[opened.id] is opened and opened.deliveries == 1
    assert queue.unremove(opened.id)
    assert queue.items[0] is opened  # the full item, back at the head
    again = queue.remove(open_read=True)
    assert again is opened and again.deliveries == 2
    assert queue.confirm(again.id)
    held = queue.remove(open_read=True)  # b: open when the server stops
    taken = [again.data, queue.remove().data]  # c
    collection.close_all()

    replayed = make_collection(tmp_path)
    replayed.load_all()
    queue = replayed.queues["q"]
    head = queue.items[0]
    assert (held.data, 1) == (head.data, head.deliveries) and type(head) is Item
    assert type(queue.items[1]) is TaggedItem and (9, expires) == (queue.items[1].flags, queue.items[1].expires_ms)
    while (item := queue.remove()) is not None:
        taken.append(item.data)
    assert [b"a", b"c", b"b", b"d"] == taken
    replayed.close_all()


def test_delayed_and_prioritised_items_are_full_items_and_plain_ones_are_not(tmp_path):
    collection = make_collection(tmp_path)
    queue = collection.get_or_create(b"q")
    now = now_ms()
    queue.add(b"later", now=now, due_ms=now + 60_000)
    queue.add(b"urgent", priority=0)
    queue.add(b"plain")
    assert type(queue.delayed[0]) is Item and queue.delayed[0].due_ms == now + 60_000
    assert [b"urgent", b"plain"] == [item.data for item in queue.first_items(5)]
    assert [Item, PlainItem] == [type(item) for item in queue.first_items(5)]
    collection.close_all()


def test_items_stored_in_one_millisecond_share_their_added_ms():
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        first, second = now_ms(), now_ms()
        if first == second:
            break
    assert first is second
    # A TaggedItem holds its added_ms as an int (a PlainItem packs it in its bytes).
    records = [Record(OP_ADD, n, 3, int("1700000000123"), 0, b"x") for n in (1, 2)]
    one, two = (item_from_record(record) for record in records)
    assert TaggedItem is type(one) and one.added_ms is two.added_ms


def test_an_empty_queue_holds_no_dict_no_deque_of_waiters_and_no_levels(tmp_path):
    collection = make_collection(tmp_path)
    queue = collection.get_or_create(b"q")
    assert not hasattr(queue, "__dict__")
    assert queue.levels.deques is NO_LEVELS
    assert sys.getsizeof(queue.waiters) < 100
    queue.add(b"x", priority=1)
    assert queue.levels.deques is not NO_LEVELS and 0 == len(NO_LEVELS)
    assert b"x" == queue.remove().data
    collection.close_all()


def test_a_queued_item_costs_the_queue_at_most_88_bytes_over_its_payload(tmp_path):
    """One bytes object (33 B header, the packed id and added_ms, the payload; and its GC
    head) and its deque slot: the payload is in the figure, since the item copies it.
    Before the packing it was 104.9 B with the payload's bytes object not counted, 152
    B over the payload in all; 192 B before issue 12."""
    count = 20_000
    collection = make_collection(tmp_path, max_journal_size=1 << 30)
    queue = collection.get_or_create(b"q")
    payloads = [b"%064d" % n for n in range(count)]
    now = now_ms()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for payload in payloads:
            queue.add(payload, now=now)
        per_item = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
    assert count == len(queue.items)
    assert per_item - 64 <= 88, per_item
    collection.close_all()
