"""Queues that live in memory only: the second implementation of the storage seam.

Nothing here touches a file, so unit tests of the operations layer run without a data
directory, and a new backend has a small example to follow.  The rules of the seam
(``seam``) hold as in the journaled queue, minus what only files need: nothing is
journaled, so nothing can fail to be written, ``compact`` does nothing and nothing
survives the process.  The collection's own rules (names, fanout, blocked readers of
missing queues, pause, the sweep) are ``collection.QueueCollection``'s, reused whole.
"""

import time
from collections import deque
from itertools import islice
from types import SimpleNamespace

from erqpy.errors import LimitReached
from erqpy.events import EventBus
from erqpy.storage.collection import QueueCollection
from erqpy.storage.items import DEFAULT_PRIORITY, Item, ItemDefaults, QueueStats, delivery_limit, new_item, now_ms, with_fields
from erqpy.storage.levels import Levels
from erqpy.storage.pqueue import DEAD_LETTER_SUFFIX
from erqpy.storage.schedule import MAX_DELAYED_ITEMS, DelayedItems, check_memory_room, delayed_refusal
from erqpy.storage.waitline import WaiterLine, WaitLine


class MemoryQueue(WaitLine):
    """A FIFO of ``items.Item`` in a deque, and a dict of the items out on open reads."""

    store = None  # no files: what the collection's sweep would compact
    disk_count = 0  # every item is in memory
    compact_pending = False
    schedules = True

    def __init__(self, name: str, config, move_item=None, events=None):
        # The seam's fields first, in its order.
        self.name = name
        self.config = config
        self.paused = False
        self.deleted = False
        self.stats = QueueStats()
        self.waiters = WaiterLine()
        self.bytes = 0
        self.items = deque()
        self.open = {}  # item id -> Item
        self.delayed = DelayedItems(self.promote_due)  # counted in ``bytes``
        self.levels = Levels()  # the priorities other than the default (``levels``)
        self.next_id = 1
        self._open_seq = 0
        self.move_item = move_item  # (target name, item, setting), for expire_to
        self.events = events if events is not None else EventBus()
        self.created = time.time()
        self.last_activity = time.monotonic()  # kept by the collection's sweep
        self.seen_activity = 0

    @property
    def count(self) -> int:
        return len(self.items) + self.levels.count

    @property
    def mem_bytes(self) -> int:
        return self.bytes  # every item is in memory

    def add(self, data: bytes, flags: int = 0, expires_ms: int = 0, now: int = 0, due_ms: int = 0,
            priority: int = DEFAULT_PRIORITY) -> bool:
        config = self.config
        if len(data) > config.max_item_size:
            return False
        over = self._held() >= config.max_items or self.bytes + len(data) > config.max_size
        if over and not (config.discard_old_when_full and len(data) <= config.max_size):
            return False
        now = now or now_ms()
        cap = int(config.max_age * 1000)
        if cap and (not expires_ms or expires_ms > now + cap):
            expires_ms = now + cap
        delayed = due_ms > now
        item: ItemDefaults
        if delayed or priority != DEFAULT_PRIORITY:
            if delayed and len(self.delayed) >= MAX_DELAYED_ITEMS:
                raise LimitReached(delayed_refusal(self.name))
            check_memory_room(self.name, self.delayed.bytes + self.levels.bytes, len(data), config.max_memory_size)
            full = Item(self.next_id, flags, data, now, expires_ms)
            full.priority = priority
            full.due_ms = due_ms if delayed else 0
            item = full
        else:
            item = new_item(self.next_id, flags, data, now, expires_ms)
        self.next_id += 1
        if delayed:
            self.delayed.push(item)
        elif priority != DEFAULT_PRIORITY:
            self.levels.push(item)
        else:
            self.items.append(item)
        self.bytes += len(data)
        self.stats.total_items += 1
        self.stats.puts += 1
        while over and self.items and self.items[0] is not item and (
            self._held() > config.max_items or self.bytes > config.max_size
        ):
            self._take_head()
            self.stats.discarded += 1
        self._emit("enqueued", item)
        if not delayed:
            self._notify_one()
        return True

    def remove(self, open_read: bool = False, now: int = 0, max_deliveries: int = 0):
        if self.delayed:
            self.promote_due(now)
        if not self.items and not self.levels.count:
            return None
        now = now or now_ms()
        items = self._serving_level(now, max_deliveries)
        if not items:
            return None
        item = self._take_head(items)
        if open_read:
            item = with_fields(item)
            item.deliveries += 1
            item.opened_ms = now
            self._open_seq += 1
            item.open_token = self._open_seq
            self.open[item.id] = item
            self.stats.transactions += 1
        self.stats.last_age_ms = now - item.added_ms
        self.stats.gets += 1
        self._emit("opened" if open_read else "dequeued", item)
        return item

    def peek(self, now: int = 0, max_deliveries: int = 0):
        if self.delayed:
            self.promote_due(now)
        items = self._serving_level(now or now_ms(), max_deliveries)
        return items[0] if items else None

    def confirm(self, item_id: int) -> bool:
        item = self.open.pop(item_id, None)
        if item is not None:
            self._emit("confirmed", item)
        return item is not None

    def unremove(self, item_id: int, due_ms: int = 0) -> bool:
        if self.deleted or item_id not in self.open:
            return False
        if due_ms and len(self.delayed) >= MAX_DELAYED_ITEMS:
            raise LimitReached(delayed_refusal(self.name))
        item = self.open.pop(item_id)
        if due_ms:
            item.due_ms = due_ms
            self.delayed.push(item)
        elif item.priority != DEFAULT_PRIORITY:
            self.levels.push(item, front=True)
        else:
            self.items.appendleft(item)
        self.bytes += item.payload_size
        self.stats.canceled_transactions += 1
        self._emit("aborted", item)
        if not due_ms:
            self._notify_one()
        return True

    def flush(self) -> int:
        flushed = self.count + len(self.delayed)
        self.delayed.clear()
        self.levels.clear()
        self.items.clear()
        self.bytes = 0
        self.stats.total_flushes += 1
        return flushed

    def discard_expired(self, now: int = 0) -> int:
        return sum(self._expire(now or now_ms(), items) for items in self.levels.in_order(self.items) if items)

    def give_back_stale(self, now: int) -> int:
        """Give back open reads older than ``open_read_timeout``, oldest first at the head."""
        timeout_ms = int(self.config.open_read_timeout * 1000)
        if not timeout_ms:
            return 0
        stale = [i for i, item in self.open.items() if item.opened_ms <= now - timeout_ms]
        for item_id in reversed(stale):
            self.unremove(item_id)
        return len(stale)

    def compact(self) -> None:
        pass  # nothing on disk

    def compact_safely(self, force: bool = False, background: bool = False) -> bool:
        return False

    def close(self) -> None:
        self.delayed.stop()

    # -- internals --------------------------------------------------------------------

    def _held(self) -> int:
        """Items that count against ``max_items``: waiting, at every level, and delayed."""
        return len(self.items) + self.levels.count + len(self.delayed)

    def _take_head(self, items=None):
        if items is None or items is self.items:
            item = self.items.popleft()
        else:
            item = items.popleft()
            self.levels.taken(item)
        self.bytes -= item.payload_size
        return item

    def _expired(self, item, now: int) -> bool:
        cap = int(self.config.max_age * 1000)
        return bool(item.expires_ms and item.expires_ms <= now) or bool(cap and item.added_ms + cap <= now)

    def _expire(self, now: int, items) -> int:
        expired = 0
        target = self.config.expire_to
        while items and self._expired(items[0], now):
            item = self._take_head(items)
            expired += 1
            self.stats.expired_items += 1
            self._emit("expired", item)
            if target and target != self.name and self.move_item is not None:
                self.move_item(target, item, "expire_to")
        return expired

    def _serving_level(self, now: int, read_limit: int):
        """The most urgent level with a deliverable head (``levels``), else the default."""
        if not self.levels.count:
            self._make_deliverable(now, read_limit, self.items)
            return self.items
        for items in self.levels.in_order(self.items):
            self._make_deliverable(now, read_limit, items)
            if items:
                return items
        return self.items

    def _make_deliverable(self, now: int, read_limit: int, items) -> None:
        """Expired items go, then items delivered ``max_deliveries`` times (or the read's
        tighter bound) move to the dead-letter queue, as in the journaled queue (one that
        refuses keeps it here)."""
        self._expire(now, items)
        limit = delivery_limit(self.config.max_deliveries, read_limit)
        target = self.config.dead_letter_to or self.name + DEAD_LETTER_SUFFIX
        if not limit or target == self.name or self.move_item is None:
            return
        while items and items[0].deliveries >= limit:
            if not self.move_item(target, items[0], "dead_letter_to"):
                return
            item = self._take_head(items)
            self.stats.dead_lettered += 1
            self._emit("dead_lettered", item)
            self._expire(now, items)

    # -- read-only facts for the operations layer, as in the journaled queue ------------

    def is_open(self, item_id: int) -> bool:
        return item_id in self.open

    def first_items(self, count: int) -> list:
        return list(islice((item for items in self.levels.in_order(self.items) for item in items), count))

    journal_size = 0  # no journal

    def _notify_one(self) -> None:
        if self.waiters:
            self.waiters.popleft().notify()

    def _emit(self, event: str, item) -> None:
        if self.events.active:
            self.events.emit(event, self.name, item)


class MemoryCollection(QueueCollection):
    """``QueueCollection`` with ``MemoryQueue`` queues: paused names are kept in memory,
    a deleted queue has no files to erase, and there is nothing to load at start."""

    def __init__(self, settings, events=None, server_stats=None):
        if server_stats is None:
            server_stats = SimpleNamespace(queue_creates=0, queue_deletes=0, queue_expires=0)
        super().__init__(None, settings, None, events if events is not None else EventBus(), server_stats)

    def _open_queue(self, name: str, config, replay: bool, segments):
        return MemoryQueue(name, config, self.move_item, self.events)

    def _write_paused(self, names) -> None:
        pass  # kept in ``paused_names`` only: a pause lasts as long as the process

    def _erase(self, queue) -> None:
        pass

    def load_all(self) -> int:
        return 0
