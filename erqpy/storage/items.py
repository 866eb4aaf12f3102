"""What a queue holds: items and the per-queue counters.  Plain data, no files, shared
by every storage implementation (``pqueue``, ``memory``)."""

import struct
import time
from operator import itemgetter

#: The priority level of an item stored without ``/pri=`` (``levels``; 0 is the most urgent).
DEFAULT_PRIORITY = 5

# A PlainItem's bytes: its id and added_ms, then its payload.
_PLAIN_HEAD = struct.Struct("<Qq")
_PLAIN_HEAD_SIZE = _PLAIN_HEAD.size
_pack_plain_head = _PLAIN_HEAD.pack
_unpack_id = struct.Struct("<Q").unpack_from
_unpack_added = struct.Struct("<q").unpack_from
_new_bytes = bytes.__new__

#: The largest payload a PlainItem packs.  Reading a PlainItem's ``data`` copies it, so
#: a large item read often (a ``get`` naming it with ``/peek`` a thousand times) would
#: be copied as often; and 64 B saved on an item of a KiB is not worth the copies.
#: Larger payloads go in a ``TaggedItem``, which refers to them.
PACKED_MAX = 512


_last_ms = 0


def now_ms() -> int:
    """The time in ms; the same int object all through one millisecond, so the items
    stored in it share their ``added_ms`` (a new int is 32 bytes of every item)."""
    global _last_ms
    now = time.time_ns() // 1_000_000  # int(time.time() * 1000) costs half as much again
    if now == _last_ms:
        return _last_ms
    _last_ms = now
    return now


def delivery_limit(queue_limit: int, read_limit: int) -> int:
    """The delivery limit one read applies: the queue's ``max_deliveries`` or the read's
    own ``/max_deliveries=`` bound, whichever is tighter (0 is no limit)."""
    if read_limit and (not queue_limit or read_limit < queue_limit):
        return read_limit
    return queue_limit


class ItemDefaults:
    """The fields most items never set, at their defaults, and the delayed heap's order:
    shared by the three item classes, which hold the fields they use."""

    __slots__ = ()

    flags = 0
    expires_ms = 0  # 0 = never
    opened_ms = 0
    open_token = 0  # which open read this is; see session.Session
    # How often it was handed out as a reliable read (``max_deliveries``).  Kept
    # across restarts: replay counts OPEN records, a snapshot writes DELIVERIES.
    deliveries = 0
    # When a delayed item becomes visible (``schedule``); 0 once it is, or always.
    due_ms = 0
    priority = DEFAULT_PRIORITY  # its level (``levels``)
    in_segment = False  # its data is in a segment file, not the journal

    def __lt__(self, other) -> bool:
        # The order of the delayed heap: due time, then id (the order they were stored).
        return (self.due_ms, self.id) < (other.due_ms, other.id)  # type: ignore[attr-defined]


class PlainItem(ItemDefaults, bytes):
    """One queued item as most items are: no flags, no expiry, never opened, delayed or
    given a priority, and a payload of at most ``PACKED_MAX`` bytes.  ``id`` is unique
    within its queue and is the ``gets`` cas value.

    Memory is the point (issue 12): a queue holds millions of these.  An object with
    slots for the id, the data and the time costs 64 B, its id int 32 B more and the
    payload's own bytes object 48 B over the payload; this is one bytes object instead,
    the id and added_ms packed in front of the payload (16 B), 64 B over the payload
    less in all.  Reading ``id``, ``data`` or ``added_ms`` unpacks or slices (a copy:
    read each once where it is used often); ``payload_size`` is the payload's length.

    Being bytes, two items compare and hash by content; the packed id makes that the
    same as identity within a queue.  ``in_segment`` is the class (``SegmentPlainItem``:
    see ``mark_in_segment``).  Every other field is ``ItemDefaults``' and cannot be set:
    an item becomes an ``Item`` (``with_fields``) when it is opened, delayed or
    prioritised, or replayed with a delivery count, and ``TaggedItem`` holds flags, an
    expiry or a larger payload.  A missed conversion raises AttributeError.
    """

    __slots__ = ()

    def __new__(cls, item_id: int, data: bytes, added_ms: int):
        return _new_bytes(cls, _pack_plain_head(item_id, added_ms) + data)

    @property
    def id(self) -> int:
        return _unpack_id(self)[0]

    # The payload, a copy.  A getter in C (itemgetter of a slice) costs 52 ns here
    # against 85 for a Python one: a get reads it once.
    data = property(itemgetter(slice(_PLAIN_HEAD_SIZE, None)), doc="The payload (a copy).")

    @property
    def added_ms(self) -> int:
        return _unpack_added(self, 8)[0]

    @property
    def payload_size(self) -> int:
        return len(self) - _PLAIN_HEAD_SIZE

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id}, data={self.data[:32]!r}, added_ms={self.added_ms})"

    __str__ = __repr__  # bytes' own str is its repr: the packed head would show


class SegmentPlainItem(PlainItem):
    """A PlainItem whose data is in a segment file (its class is its mark)."""

    __slots__ = ()
    in_segment = True


def plain_item(item_id: int, data: bytes, added_ms: int) -> PlainItem:
    """``PlainItem(item_id, data, added_ms)`` without the Python-level ``__new__`` call
    (a set is the hot path)."""
    return _new_bytes(PlainItem, _pack_plain_head(item_id, added_ms) + data)


def mark_in_segment(item, in_segment: bool) -> None:
    """Record whether ``item``'s data is (only) in a segment file.  A PlainItem has no
    slot for it: it changes class, which two bytes subclasses without slots allow."""
    if isinstance(item, PlainItem):
        item.__class__ = SegmentPlainItem if in_segment else PlainItem
    else:
        item.in_segment = in_segment


class TaggedItem(ItemDefaults):
    """An item with flags or an expiry (or both), or a payload over ``PACKED_MAX``;
    otherwise plain."""

    __slots__ = ("id", "data", "added_ms", "in_segment", "flags", "expires_ms")

    def __init__(self, item_id, flags, data, added_ms, expires_ms):
        self.id = item_id
        self.data = data
        self.added_ms = added_ms
        self.in_segment = False
        self.flags = flags
        self.expires_ms = expires_ms

    @property
    def payload_size(self) -> int:
        return len(self.data)


class Item(TaggedItem):
    """An item that can hold every field: opened, delayed, prioritised or delivered."""

    __slots__ = ("opened_ms", "open_token", "deliveries", "due_ms", "priority")

    def __init__(self, item_id, flags, data, added_ms, expires_ms):
        super().__init__(item_id, flags, data, added_ms, expires_ms)
        self.opened_ms = 0
        self.open_token = 0
        self.deliveries = 0
        self.due_ms = 0
        self.priority = DEFAULT_PRIORITY


def new_item(item_id, flags, data, added_ms, expires_ms) -> ItemDefaults:
    """The smallest item that holds these fields (pqueue.add spells this out)."""
    if flags or expires_ms or len(data) > PACKED_MAX:
        return TaggedItem(item_id, flags, data, added_ms, expires_ms)
    return _new_bytes(PlainItem, _pack_plain_head(item_id, added_ms) + data)


def with_fields(item: ItemDefaults) -> Item:
    """``item`` itself when it is an ``Item``, else an ``Item`` copy of it to use in its
    place (the caller puts the copy wherever the other one was)."""
    if isinstance(item, Item):
        return item
    full = Item(item.id, item.flags, item.data, item.added_ms, item.expires_ms)  # type: ignore[attr-defined]
    full.in_segment = item.in_segment
    return full


_last_added = 0


def item_from_record(record) -> ItemDefaults:
    # Replay decodes each record's times as new ints; consecutive items mostly share
    # their added_ms, and so the items that hold it as an int (TaggedItem, Item; a
    # PlainItem packs it) share one int again (see now_ms).
    global _last_added
    added_ms = record.added_ms
    if added_ms == _last_added:
        added_ms = _last_added
    else:
        _last_added = added_ms
    return new_item(record.item_id, record.flags, record.data, added_ms, record.expires_ms)


def item_from_segment_record(record) -> ItemDefaults:
    """``item_from_record`` for a record read from a segment: marked ``in_segment``."""
    if record.flags or record.expires_ms or len(record.data) > PACKED_MAX:
        item = item_from_record(record)
        item.in_segment = True  # type: ignore[misc]
        return item
    return _new_bytes(SegmentPlainItem, _pack_plain_head(record.item_id, record.added_ms) + record.data)


class QueueStats:
    """Per-queue counters (PROTOCOL.md "Stats fields"); levels are computed on demand."""

    __slots__ = (
        "total_items",
        "expired_items",
        "discarded",
        "dead_lettered",
        "transactions",
        "canceled_transactions",
        "total_flushes",
        "last_age_ms",
        "gets",
        "puts",
    )
    # Declared for the type checker; __init__ sets each to 0.
    total_items: int
    expired_items: int
    discarded: int
    dead_lettered: int
    transactions: int
    canceled_transactions: int
    total_flushes: int
    last_age_ms: int
    gets: int
    puts: int

    def __init__(self):
        for name in self.__slots__:
            setattr(self, name, 0)
