"""PersistentQueue: one FIFO of items, its open reads, its waiters and its journal.

Every mutation writes its journal record *before* it changes memory, so a failed write
(``JournalWriteError``) leaves the queue as it was and nothing is acknowledged.  Live
operations and replay are two implementations of the same rules: the methods below
change memory directly, while replay (``recovery.recover``) applies the records
by item id and hands back what memory held; tests/unit/test_replay_state_machine.py
checks that the two agree.

Open reads are keyed by item id.  Which connection holds them is session state
(``session.Session``); the queue only knows that they are out.

Memory holds ``items``: first the *front* (``front_count`` items given back to the head,
out of id order), then a run in id order.  A queue larger than ``max_memory_size`` reads
behind: ``disk_count`` more items (the newest) wait in segment files and are loaded as
the head advances (``segments.QueueStore``).  ``bytes`` counts every waiting item,
``mem_bytes`` those in memory.  Delayed items (``delayed``, ``schedule``) are in memory
and in both counts, out of ``items`` until due.  Read-behind, compaction and replay are
the queue's dealings with its files, in ``queuefiles.QueueFiles``.
"""

import logging
import time
from collections import deque
from itertools import islice

from erqpy.storage.records import OP_CONFIRM, OP_HEAD, OP_OPEN, OP_REMOVE, OP_UNREMOVE
from erqpy.errors import LimitReached
from erqpy.storage.headrules import DEAD_LETTER_SUFFIX, HeadRules
from erqpy.storage.items import PACKED_MAX, Item, QueueStats, TaggedItem, delivery_limit, now_ms, plain_item, with_fields
from erqpy.storage.levels import DEFAULT_PRIORITY, Levels
from erqpy.storage.queuefiles import QueueFiles
from erqpy.storage.schedule import MAX_DELAYED_ITEMS, DelayedItems, check_memory_room, delayed_refusal
from erqpy.storage.waitline import WaiterLine, WaitLine

__all__ = ["DEAD_LETTER_SUFFIX", "PersistentQueue"]

log = logging.getLogger("erqpy.queue")

class PersistentQueue(QueueFiles, HeadRules, WaitLine):
    schedules = True  # takes delayed items and priorities (seam)

    # Slots, not a __dict__: a server holds 10,000 queues and more, and the instance
    # dict of these thirty-odd fields was 1.5 KiB of each (issue 12).
    __slots__ = ("name", "store", "journal", "move_item", "events", "items", "front_count", "bytes",
                 "mem_bytes", "disk_count", "disk_bytes", "open", "open_bytes", "waiters", "delayed",
                 "levels", "next_id", "_open_seq", "stats", "deleted", "paused", "created", "last_activity",
                 "seen_activity", "_max_age_ms", "compact_pending", "_compact_retry_at", "_compact_failures",
                 "_compact_logged_at", "_config", "_max_deliveries", "_refill_below", "_copying")

    def __init__(self, name: str, config, store, move_item, events):
        self.name = name
        self.store = store  # segments.QueueStore, or None for a memory-only queue
        # The operations journal, written on every command (None when memory-only).
        self.journal = store.journal if store is not None else None
        # ``move_item(target_name, item, setting) -> bool`` stores a copy of an item in
        # another queue for ``expire_to`` and ``dead_letter_to``: the collection's, which
        # finds or creates that queue (None: expired items are dropped, none dead-lettered).
        self.move_item = move_item
        self.events = events
        self.items = deque()
        self.front_count = 0  # items at the start of ``items`` given back out of id order
        self.bytes = 0  # every waiting item, in memory or on disk
        self.mem_bytes = 0
        self.disk_count = 0  # read-behind: items waiting in segment files
        self.disk_bytes = 0
        self.open = {}  # item id -> Item; invariant: each was journaled as OPEN
        self.open_bytes = 0
        self.waiters = WaiterLine()  # waiters.Waiter, oldest first
        self.delayed = DelayedItems(self.promote_due)  # in memory; counted in mem_bytes
        self.levels = Levels()  # priorities other than the default, in memory (``levels``)
        self.next_id = 1
        self._open_seq = 0
        self.stats = QueueStats()
        self.deleted = False
        self.paused = False
        self.created = time.time()
        self.last_activity = time.monotonic()  # updated by the collection's sweep
        self.seen_activity = 0
        self._max_age_ms = 0
        # A compaction failed (disk full, no descriptor): the maintenance sweep retries.
        self.compact_pending = False
        self._compact_retry_at = 0.0
        self._compact_failures = 0  # since the last one logged
        self._compact_logged_at = 0.0
        # A snapshot copying ``items`` (snapshot.RunCopy), told of every change at its ends.
        self._copying = None
        self.config = config

    # -- configuration ------------------------------------------------------------

    @property
    def config(self):
        return self._config

    @config.setter
    def config(self, config) -> None:
        # Reload assigns a new config to the live queue (Kestrel QueueCollection.reload);
        # derived values are recomputed here, never rebuilt from scratch.
        self._config = config
        self._max_age_ms = int(config.max_age * 1000)
        self._max_deliveries = config.max_deliveries
        # Memory is refilled from disk once it falls below half the budget, a step at a
        # time (queuefiles.REFILL_STEP_BYTES).
        self._refill_below = max(config.max_memory_size // 2, 1)

    @property
    def count(self) -> int:
        """Items waiting, in memory and on disk (open reads and delayed items excluded)."""
        return len(self.items) + self.disk_count + self.levels.count

    # -- live operations ------------------------------------------------------------

    def add(self, data: bytes, flags: int = 0, expires_ms: int = 0, now: int = 0, due_ms: int = 0,
            priority: int = DEFAULT_PRIORITY) -> bool:
        """Append an item; False when refused (too large, or full and not discarding).
        ``due_ms`` after ``now``: a delayed item, out of reach until then (``schedule``);
        ``priority``: its level (``levels``)."""
        config = self._config
        size = len(data)
        if size > config.max_item_size:
            return False
        # self.count spelled out: the property call is a measurable part of a set.
        full = (len(self.items) + self.disk_count + self.levels.count + len(self.delayed) >= config.max_items
                or self.bytes + size > config.max_size)
        if full and (not config.discard_old_when_full or size > config.max_size):
            return False
        now = now or now_ms()
        if self._max_age_ms and (not expires_ms or expires_ms > now + self._max_age_ms):
            expires_ms = now + self._max_age_ms
        item_id = self.next_id
        if due_ms > now or priority != DEFAULT_PRIORITY:
            full_item = Item(item_id, flags, data, now, expires_ms)
            full_item.priority = priority
            return self._add_with_attrs(full_item, due_ms if due_ms > now else 0, full)
        if self.journal is not None:
            if self.disk_count or self.mem_bytes + size > config.max_memory_size:
                self._add_behind(item_id, flags, now, expires_ms, data)
                if full:
                    self._make_room(item_id)
                return True
            self.journal.append(self.journal.format.encode_add(item_id, flags, now, expires_ms, data))
        self.next_id = item_id + 1
        # items.new_item, spelled out: a set is the hot path.
        item = TaggedItem(item_id, flags, data, now, expires_ms) if flags or expires_ms or size > PACKED_MAX \
            else plain_item(item_id, data, now)
        self.items.append(item)
        self.bytes += size
        self.mem_bytes += size
        self.stats.total_items += 1
        self.stats.puts += 1
        if full:
            self._make_room(item_id)
        if self.events.active:
            self.events.emit("enqueued", self.name, item)
        if self.waiters:
            self.waiters.popleft().notify()
        return True

    def _add_with_attrs(self, item, due_ms: int, full: bool) -> bool:
        """A delayed or prioritised item: journaled (ATTRS, then ADD) at once, in memory,
        held until it is due or put in its level."""
        if due_ms and len(self.delayed) >= MAX_DELAYED_ITEMS:
            raise LimitReached(delayed_refusal(self.name))
        size = item.payload_size
        check_memory_room(self.name, self.delayed.bytes + self.levels.bytes, size, self._config.max_memory_size)
        if self.journal is not None:
            encode = self.journal.format
            self.journal.append(encode.encode_attrs(item.id, due_ms, item.priority) + encode.encode_add(
                item.id, item.flags, item.added_ms, item.expires_ms, item.data))
        self.next_id = item.id + 1
        item.due_ms = due_ms
        if due_ms:
            self.delayed.push(item)
        else:
            self.levels.push(item)
        self.bytes += size
        self.mem_bytes += size
        self.stats.total_items += 1
        self.stats.puts += 1
        if full:
            self._make_room(item.id)
        if self.events.active:
            self.events.emit("enqueued", self.name, item)
        if self.waiters and not due_ms:
            self.waiters.popleft().notify()
        return True

    def _pop_head(self, now: int, items=None):
        """Take the head from memory (journaling is the caller's); refill if low.
        ``items``: the level it is taken from, when not the default one."""
        if items is not None and items is not self.items:
            head = items.popleft()
            self.levels.taken(head)
            size = head.payload_size
            self.bytes -= size
            self.mem_bytes -= size
            return head
        head = self.items.popleft()
        if self._copying is not None:
            self._copying.popped_head(head)
        size = head.payload_size
        self.bytes -= size
        self.mem_bytes -= size
        if self.front_count:
            self.front_count -= 1
        if self.disk_count and self.mem_bytes < self._refill_below:
            self._refill(not self.items)  # waits for the disk only when memory ran dry
        return head

    def remove(self, open_read: bool = False, now: int = 0, max_deliveries: int = 0):
        """Take the head item, or return None.  An open read stays in ``open``."""
        if self.delayed:
            self.promote_due(now)
        if not self.items and not self.levels.count:
            return None
        now = now or now_ms()
        limit = delivery_limit(self._max_deliveries, max_deliveries) if max_deliveries else self._max_deliveries
        if self.levels.count:
            items, head = self._serving_head(now, limit)
        else:
            items = self.items
            head = items[0]  # not empty: no level holds any
            # _deliverable_head's rules only where they can apply (a call on every get).
            if head.expires_ms or self._max_age_ms or (limit and head.deliveries >= limit):
                head = self._deliverable_head(now, limit, items)
        if head is None:
            return None
        if open_read:
            if self.journal is not None:
                self.journal.append(self.journal.format.encode_id_op(OP_OPEN, head.id))
            if self.store is not None and self.store.taking is not None:
                self.store.taking.delivering(head)
            # _pop_head below takes the plain item out of its deque by position.
            head = with_fields(head)
            head.deliveries += 1
            head.opened_ms = now
            self._open_seq += 1
            head.open_token = self._open_seq
            self.open[head.id] = head
            self.open_bytes += head.payload_size
            # Only now: a refill in _pop_head may snapshot the journal, and the snapshot
            # must find this read in ``open`` (as HELD), or its OPEN record is lost.
            self._pop_head(now, items)
            self.stats.transactions += 1
            event = "opened"
        else:
            if self.journal is not None:
                self.journal.append(self.journal.format.encode_id_op(OP_REMOVE, head.id))
            self._pop_head(now, items)
            event = "dequeued"
        self.stats.last_age_ms = now - head.added_ms
        self.stats.gets += 1
        if self.events.active:
            self.events.emit(event, self.name, head)
        if self.journal is not None and self.journal.size > self._config.max_journal_size:
            self.compact_safely()
        return head

    def peek(self, now: int = 0, max_deliveries: int = 0):
        if self.delayed:
            self.promote_due(now)
        now = now or now_ms()
        limit = delivery_limit(self._max_deliveries, max_deliveries)
        if self.levels.count:
            return self._serving_head(now, limit)[1]
        return self._deliverable_head(now, limit, self.items) if self.items else None

    def confirm(self, item_id: int) -> bool:
        """Finish an open read for good.  False when it is no longer open."""
        item = self.open.get(item_id)
        if item is None:
            return False
        if self.journal is not None:
            self.journal.append(self.journal.format.encode_id_op(OP_CONFIRM, item_id))
        del self.open[item_id]
        self.open_bytes -= item.payload_size
        if self.events.active:
            self.events.emit("confirmed", self.name, item)
        if self.journal is not None and self.journal.size > self._config.max_journal_size:
            self.compact_safely()
        return True

    def unremove(self, item_id: int, due_ms: int = 0) -> bool:
        """Give an open read back: it goes to the head of its level and the oldest waiter
        is woken; with ``due_ms``, it is delayed until then (and keeps its delivery count)."""
        item = self.open.get(item_id)
        if item is None or self.deleted:
            return False
        if due_ms and len(self.delayed) >= MAX_DELAYED_ITEMS:
            raise LimitReached(delayed_refusal(self.name))
        if self.journal is not None:
            record = self.journal.format.encode_id_op(OP_UNREMOVE, item_id)
            if due_ms:
                record = self.journal.format.encode_attrs(item_id, due_ms, item.priority) + record
            self.journal.append(record)
        del self.open[item_id]
        self.open_bytes -= item.payload_size
        if due_ms:
            item.due_ms = due_ms
            self.delayed.push(item)
        elif item.priority != DEFAULT_PRIORITY:
            self.levels.push(item, front=True)
        else:
            self.items.appendleft(item)
            self.front_count += 1
            if self._copying is not None:
                self._copying.pushed_head()
        size = item.payload_size
        self.bytes += size
        self.mem_bytes += size
        self.stats.canceled_transactions += 1
        if self.events.active:
            self.events.emit("aborted", self.name, item)
        if self.waiters and not due_ms:
            self.waiters.popleft().notify()
        return True

    def flush(self) -> int:
        """Remove every waiting item, delayed ones too; open reads are untouched."""
        count = self.count + len(self.delayed)
        if count and self.journal is not None:
            encode = self.journal.format
            self.journal.append(encode.encode_flush() + encode.encode_id_op(OP_HEAD, self.next_id))
            self.store.drop_disk()
        self.delayed.clear()
        self.levels.clear()
        self.items.clear()
        if self._copying is not None:
            self._copying.cleared()
        self.front_count = 0
        self.bytes = self.mem_bytes = 0
        self.disk_count = self.disk_bytes = 0
        self.stats.total_flushes += 1
        if self.journal is not None and (count or self.store.segments):
            self.compact_safely(force=bool(self.store.segments))
        return count

    def give_back_stale(self, now: int) -> int:
        """Give back open reads older than ``open_read_timeout`` (Kestrel 2.4.7)."""
        limit = self._config.open_read_timeout
        if not limit or not self.open:
            return 0
        cutoff = now - int(limit * 1000)
        stale = [item_id for item_id, item in self.open.items() if item.opened_ms <= cutoff]
        for item_id in reversed(stale):
            self.unremove(item_id)
        if stale:
            log.info("queue %s: gave back %d reads open longer than %ss", self.name, len(stale), limit)
        return len(stale)

    # -- read-only facts for the operations layer (erqpy.server.ops) -----------------

    def is_open(self, item_id: int) -> bool:
        """True while ``item_id`` is an open read (not yet confirmed or given back)."""
        return item_id in self.open

    def first_items(self, count: int) -> list:
        """The first ``count`` items waiting in memory, not removed (none expired here),
        in the order reads would take them."""
        if self.levels.count:
            return list(islice((item for level in self.levels.in_order(self.items) for item in level), count))
        return list(islice(self.items, count))

