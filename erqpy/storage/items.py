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
    now = int(time.time() * 1000)
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
    """One queued item as most items are: never opened, delayed or given a priority.
    ``id`` is unique within its queue and is the ``gets`` cas value.

    Memory is the point (issue 12): a queue holds millions of these, and each slot is 8
    bytes of every one.  The fields few items ever use are class attributes here, at
    their defaults, and only ``Item`` (the subclass) can hold other values: an item
    becomes an ``Item`` (``with_fields``) when it is opened, delayed or prioritised, or
    replayed with a delivery count.  Reading any field works on both; setting a rare
    field on a ``PlainItem`` raises AttributeError, so a missed conversion is loud.
    """

    __slots__ = ("id", "flags", "data", "added_ms", "expires_ms", "in_segment")

    opened_ms = 0
    open_token = 0  # which open read this is; see session.Session
    # How often it was handed out as a reliable read (``max_deliveries``).  Kept
    # across restarts: replay counts OPEN records, a snapshot writes DELIVERIES.
    deliveries = 0
    # When a delayed item becomes visible (``schedule``); 0 once it is, or always.
    due_ms = 0
    priority = DEFAULT_PRIORITY  # its level (``levels``)

    def __init__(self, item_id, flags, data, added_ms, expires_ms):
        self.id = item_id
        self.flags = flags
        self.data = data
        self.added_ms = added_ms
        self.expires_ms = expires_ms  # 0 = never
        self.in_segment = False  # its data is in a segment file, not the journal

    def __lt__(self, other) -> bool:
        # The order of the delayed heap: due time, then id (the order they were stored).
        return (self.due_ms, self.id) < (other.due_ms, other.id)


class Item(PlainItem):
    """An item that can hold every field: opened, delayed, prioritised or delivered."""

    __slots__ = ("opened_ms", "open_token", "deliveries", "due_ms", "priority")

    def __init__(self, item_id, flags, data, added_ms, expires_ms):
        super().__init__(item_id, flags, data, added_ms, expires_ms)
        self.opened_ms = 0
        self.open_token = 0
        self.deliveries = 0
        self.due_ms = 0
        self.priority = DEFAULT_PRIORITY


def with_fields(item: PlainItem) -> Item:
    """``item`` itself when it is an ``Item``, else an ``Item`` copy of it to use in its
    place (the caller puts the copy wherever the plain one was)."""
    if type(item) is not PlainItem:
        return item  # type: ignore[return-value]
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
    return PlainItem(record.item_id, record.flags, record.data, added_ms, record.expires_ms)


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
