"""What a queue holds: items and the per-queue counters.  Plain data, no files, shared
by every storage implementation (``pqueue``, ``memory``)."""

import time

#: The priority level of an item stored without ``/pri=`` (``levels``; 0 is the most urgent).
DEFAULT_PRIORITY = 5


def now_ms() -> int:
    return int(time.time() * 1000)


def delivery_limit(queue_limit: int, read_limit: int) -> int:
    """The delivery limit one read applies: the queue's ``max_deliveries`` or the read's
    own ``/max_deliveries=`` bound, whichever is tighter (0 is no limit)."""
    if read_limit and (not queue_limit or read_limit < queue_limit):
        return read_limit
    return queue_limit


class Item:
    """One queued item.  ``id`` is unique within its queue and is the ``gets`` cas value."""

    __slots__ = ("id", "flags", "data", "added_ms", "expires_ms", "opened_ms", "open_token", "in_segment",
                 "deliveries", "due_ms", "priority")

    def __init__(self, item_id, flags, data, added_ms, expires_ms):
        self.id = item_id
        self.flags = flags
        self.data = data
        self.added_ms = added_ms
        self.expires_ms = expires_ms  # 0 = never
        self.opened_ms = 0
        self.open_token = 0  # which open read this is; see session.Session
        self.in_segment = False  # its data is in a segment file, not the journal
        # How often it was handed out as a reliable read (``max_deliveries``).  Kept
        # across restarts: replay counts OPEN records, a snapshot writes DELIVERIES.
        self.deliveries = 0
        # When a delayed item becomes visible (``schedule``); 0 once it is, or always.
        self.due_ms = 0
        self.priority = DEFAULT_PRIORITY  # its level (``levels``)

    def __lt__(self, other) -> bool:
        # The order of the delayed heap: due time, then id (the order they were stored).
        return (self.due_ms, self.id) < (other.due_ms, other.id)


def item_from_record(record) -> Item:
    return Item(record.item_id, record.flags, record.data, record.added_ms, record.expires_ms)


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
