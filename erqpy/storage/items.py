"""What a queue holds: items and the per-queue counters.  Plain data, no files, shared
by every storage implementation (``pqueue``, ``memory``)."""

import time

#: The priority level of an item stored without ``/pri=`` (``levels``; 0 is the most urgent).
DEFAULT_PRIORITY = 5


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


class PlainItem:
    """One queued item as most items are: no flags, no expiry, never opened, delayed or
    given a priority.  ``id`` is unique within its queue and is the ``gets`` cas value.

    Memory is the point (issue 12): a queue holds millions of these, and every slot is 8
    bytes of each one (4 slots: 64 B with the object's header).  The other fields are
    class attributes here, at their defaults, and only the subclasses hold other values:
    ``TaggedItem`` flags and an expiry, ``Item`` every field.  ``new_item`` picks the
    smallest that fits; an item becomes an ``Item`` (``with_fields``) when it is opened,
    delayed or prioritised, or replayed with a delivery count.  Reading a field works on
    all three; setting one a class does not hold raises AttributeError, so a missed
    conversion is loud.
    """

    __slots__ = ("id", "data", "added_ms", "in_segment")

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

    def __init__(self, item_id, data, added_ms):
        self.id = item_id
        self.data = data
        self.added_ms = added_ms
        self.in_segment = False  # its data is in a segment file, not the journal

    def __lt__(self, other) -> bool:
        # The order of the delayed heap: due time, then id (the order they were stored).
        return (self.due_ms, self.id) < (other.due_ms, other.id)


class TaggedItem(PlainItem):
    """An item with flags or an expiry (or both), otherwise plain."""

    __slots__ = ("flags", "expires_ms")

    def __init__(self, item_id, flags, data, added_ms, expires_ms):
        super().__init__(item_id, data, added_ms)
        self.flags = flags
        self.expires_ms = expires_ms


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


def new_item(item_id, flags, data, added_ms, expires_ms) -> PlainItem:
    """The smallest item that holds these fields (pqueue.add spells this out)."""
    if flags or expires_ms:
        return TaggedItem(item_id, flags, data, added_ms, expires_ms)
    return PlainItem(item_id, data, added_ms)


def with_fields(item: PlainItem) -> Item:
    """``item`` itself when it is an ``Item``, else an ``Item`` copy of it to use in its
    place (the caller puts the copy wherever the other one was)."""
    if isinstance(item, Item):
        return item
    full = Item(item.id, item.flags, item.data, item.added_ms, item.expires_ms)
    full.in_segment = item.in_segment
    return full


_last_added = 0


def item_from_record(record) -> PlainItem:
    # Replay and read-behind decode each record's times as new ints; consecutive items
    # mostly share their added_ms, and so they share one int again (see now_ms).
    global _last_added
    added_ms = record.added_ms
    if added_ms == _last_added:
        added_ms = _last_added
    else:
        _last_added = added_ms
    return new_item(record.item_id, record.flags, record.data, added_ms, record.expires_ms)


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
