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
``mem_bytes`` those in memory.  Read-behind, compaction and replay are the queue's
dealings with its files, in ``queuefiles.QueueFiles``.
"""

import logging
import time
from collections import deque
from itertools import islice

from erqpy.storage.records import OP_CONFIRM, OP_HEAD, OP_OPEN, OP_REMOVE, OP_UNREMOVE
from erqpy.errors import JournalWriteError
from erqpy.storage.items import Item, QueueStats, delivery_limit, now_ms
from erqpy.storage.queuefiles import QueueFiles

log = logging.getLogger("erqpy.queue")



#: ``max_deliveries`` without ``dead_letter_to``: where over-delivered items go (the
#: same queue ``erqpy consume`` moves failed jobs to).
DEAD_LETTER_SUFFIX = "_errors"


class PersistentQueue(QueueFiles):
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
        self.waiters = deque()  # waiters.Waiter, oldest first
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
        # Memory is refilled from disk once it falls below half the budget, in one read.
        self._refill_below = max(config.max_memory_size // 2, 1)

    @property
    def count(self) -> int:
        """Items waiting, in memory and on disk (open reads excluded)."""
        return len(self.items) + self.disk_count

    # -- live operations ------------------------------------------------------------

    def add(self, data: bytes, flags: int = 0, expires_ms: int = 0, now: int = 0) -> bool:
        """Append an item; False when refused (too large, or full and not discarding)."""
        config = self._config
        size = len(data)
        if size > config.max_item_size:
            return False
        # self.count spelled out: the property call is a measurable part of a set.
        full = len(self.items) + self.disk_count >= config.max_items or self.bytes + size > config.max_size
        if full and (not config.discard_old_when_full or size > config.max_size):
            return False
        now = now or now_ms()
        if self._max_age_ms and (not expires_ms or expires_ms > now + self._max_age_ms):
            expires_ms = now + self._max_age_ms
        item_id = self.next_id
        if self.journal is not None:
            if self.disk_count or self.mem_bytes + size > config.max_memory_size:
                self._add_behind(item_id, flags, now, expires_ms, data)
                if full:
                    self._make_room(item_id)
                return True
            self.journal.append(self.journal.format.encode_add(item_id, flags, now, expires_ms, data))
        self.next_id = item_id + 1
        item = Item(item_id, flags, data, now, expires_ms)
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

    def _pop_head(self, now: int):
        """Take the head from memory (journaling is the caller's); refill if low."""
        head = self.items.popleft()
        size = len(head.data)
        self.bytes -= size
        self.mem_bytes -= size
        if self.front_count:
            self.front_count -= 1
        if self.disk_count and self.mem_bytes < self._refill_below:
            self._refill()
        return head

    def remove(self, open_read: bool = False, now: int = 0, max_deliveries: int = 0):
        """Take the head item, or return None.  An open read stays in ``open``."""
        if not self.items:
            return None
        now = now or now_ms()
        head = self._deliverable_head(now, delivery_limit(self._max_deliveries, max_deliveries)
                                      if max_deliveries else self._max_deliveries)
        if head is None:
            return None
        if open_read:
            if self.journal is not None:
                self.journal.append(self.journal.format.encode_id_op(OP_OPEN, head.id))
            head.deliveries += 1
            head.opened_ms = now
            self._open_seq += 1
            head.open_token = self._open_seq
            self.open[head.id] = head
            self.open_bytes += len(head.data)
            # Only now: a refill in _pop_head may snapshot the journal, and the snapshot
            # must find this read in ``open`` (as HELD), or its OPEN record is lost.
            self._pop_head(now)
            self.stats.transactions += 1
            event = "opened"
        else:
            if self.journal is not None:
                self.journal.append(self.journal.format.encode_id_op(OP_REMOVE, head.id))
            self._pop_head(now)
            event = "dequeued"
        self.stats.last_age_ms = now - head.added_ms
        self.stats.gets += 1
        if self.events.active:
            self.events.emit(event, self.name, head)
        if self.journal is not None and self.journal.size > self._config.max_journal_size:
            self.compact_safely()
        return head

    def peek(self, now: int = 0, max_deliveries: int = 0):
        if not self.items:
            return None
        return self._deliverable_head(now or now_ms(), delivery_limit(self._max_deliveries, max_deliveries))

    def _deliverable_head(self, now: int, limit: int):
        """The head a read would get: expired items are dropped (or moved to
        ``expire_to``) and over-delivered ones moved to the dead-letter queue first."""
        items = self.items
        while items:
            head = items[0]
            if (head.expires_ms or self._max_age_ms) and self._is_expired(head, now):
                self._expire_head(now)
            elif limit and head.deliveries >= limit:
                if not self._dead_letter_head(now, limit):
                    return head  # the dead-letter queue refused it: delivered once more
            else:
                return head
        return None

    def confirm(self, item_id: int) -> bool:
        """Finish an open read for good.  False when it is no longer open."""
        item = self.open.get(item_id)
        if item is None:
            return False
        if self.journal is not None:
            self.journal.append(self.journal.format.encode_id_op(OP_CONFIRM, item_id))
        del self.open[item_id]
        self.open_bytes -= len(item.data)
        if self.events.active:
            self.events.emit("confirmed", self.name, item)
        if self.journal is not None and self.journal.size > self._config.max_journal_size:
            self.compact_safely()
        return True

    def unremove(self, item_id: int) -> bool:
        """Give an open read back: it goes to the head and the oldest waiter is woken."""
        item = self.open.get(item_id)
        if item is None or self.deleted:
            return False
        if self.journal is not None:
            self.journal.append(self.journal.format.encode_id_op(OP_UNREMOVE, item_id))
        del self.open[item_id]
        self.open_bytes -= len(item.data)
        self.items.appendleft(item)
        self.front_count += 1
        self.bytes += len(item.data)
        self.mem_bytes += len(item.data)
        self.stats.canceled_transactions += 1
        if self.events.active:
            self.events.emit("aborted", self.name, item)
        if self.waiters:
            self.waiters.popleft().notify()
        return True

    def flush(self) -> int:
        """Remove every waiting item; open reads are untouched."""
        count = self.count
        if count and self.journal is not None:
            encode = self.journal.format
            self.journal.append(encode.encode_flush() + encode.encode_id_op(OP_HEAD, self.next_id))
            self.store.drop_disk()
        self.items.clear()
        self.front_count = 0
        self.bytes = self.mem_bytes = 0
        self.disk_count = self.disk_bytes = 0
        self.stats.total_flushes += 1
        if self.journal is not None and (count or self.store.segments):
            self.compact_safely(force=bool(self.store.segments))
        return count

    def discard_expired(self, now: int = 0, limit: int = 1 << 62) -> int:
        """Drop (or move) expired items from the head; return how many."""
        if not self.items:
            return 0
        return self._expire_head(now or now_ms(), limit)

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

    def pass_on(self) -> None:
        """A notified waiter left without taking: give its turn to the next one."""
        if self.items and self.waiters:
            self.waiters.popleft().notify()

    def wake_takers(self) -> None:
        """Wake as many waiters as there are items to take (a resumed queue)."""
        for _ in range(min(len(self.items), len(self.waiters))):
            self.waiters.popleft().notify()

    def wake_all(self) -> None:
        """Wake every waiter without an item (delete, shutdown): they reply END."""
        while self.waiters:
            self.waiters.popleft().event.set()

    # -- internals ------------------------------------------------------------------

    def _is_expired(self, item, now: int) -> bool:
        if item.expires_ms and item.expires_ms <= now:
            return True
        return bool(self._max_age_ms) and item.added_ms + self._max_age_ms <= now

    def _expire_head(self, now: int, limit: int = 1 << 62) -> int:
        items = self.items
        count = 0
        target_name = self._config.expire_to
        while items and count < limit and self._is_expired(items[0], now):
            head = items[0]
            if self.journal is not None:
                self.journal.append(self.journal.format.encode_id_op(OP_REMOVE, head.id))
            self._pop_head(now)
            self.stats.expired_items += 1
            count += 1
            if self.events.active:
                self.events.emit("expired", self.name, head)
            if target_name and target_name != self.name and self.move_item is not None:
                self.move_item(target_name, head, "expire_to")
        return count

    def _dead_letter_head(self, now: int, limit: int) -> bool:
        """``max_deliveries`` (or a read's tighter ``limit``): head items handed out that
        often without a confirm (each
        delivery ended in an abort, a dropped connection or a restart) move to the
        dead-letter queue, so a job that kills its worker cannot cycle forever.

        The item is stored there before it is removed here: a crash in between leaves
        it in both queues, never in neither.  When it cannot be stored (the target is
        full, or the disk), it stays and is delivered once more: logged, not dropped."""
        items = self.items
        target_name = self._config.dead_letter_to or self.name + DEAD_LETTER_SUFFIX
        if target_name == self.name or self.move_item is None:
            return False  # a dead-letter queue inheriting [queues.default]'s: it keeps its items
        while items and items[0].deliveries >= limit:
            head = items[0]
            if not self.move_item(target_name, head, "dead_letter_to"):
                log.error("queue %s: item %d was delivered %d times; it stays because queue %r "
                          "cannot take it", self.name, head.id, head.deliveries, target_name)
                return False
            if self.journal is not None:
                self.journal.append(self.journal.format.encode_id_op(OP_REMOVE, head.id))
            self._pop_head(now)
            self.stats.dead_lettered += 1
            if self.events.active:
                self.events.emit("dead_lettered", self.name, head)
        return True

    def _make_room(self, added_id: int) -> None:
        """``discard_old_when_full``: drop head items until the queue is within its limits
        again, after the new item ``added_id`` is stored.  In this order a write that
        fails (a full disk) leaves the head in place and the set refused, never the head
        dropped for an item that was not stored; replay applies records by id, so the
        ADD before the REMOVEs gives the same queue.  The new item is never dropped."""
        config = self._config
        items = self.items
        while items and (self.count > config.max_items or self.bytes > config.max_size):
            head = items[0]
            if head.id == added_id:
                break
            if self.journal is not None:
                try:
                    self.journal.append(self.journal.format.encode_id_op(OP_REMOVE, head.id))
                except JournalWriteError as exc:
                    # The new item is stored (its ADD is journaled), so the set stands;
                    # the queue stays over its limit until a later write succeeds.
                    log.error("queue %s: could not discard the head to make room: %s", self.name, exc)
                    return
            self._pop_head(0)
            self.stats.discarded += 1

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    # -- read-only facts for the operations layer (erqpy.server.ops) -----------------

    def is_open(self, item_id: int) -> bool:
        """True while ``item_id`` is an open read (not yet confirmed or given back)."""
        return item_id in self.open

    def first_items(self, count: int) -> list:
        """The first ``count`` items waiting in memory, not removed (none expired here)."""
        return list(islice(self.items, count))

    @property
    def journal_size(self) -> int:
        """Bytes in the journal file; 0 for a queue without one."""
        return self.store.size if self.store is not None else 0
