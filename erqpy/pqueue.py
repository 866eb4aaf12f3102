"""PersistentQueue: one FIFO of items, its open reads, its waiters and its journal.

Every mutation writes its journal record *before* it changes memory, so a failed write
(``JournalWriteError``) leaves the queue as it was and nothing is acknowledged.  Replay
feeds the same records through ``apply`` (Kestrel's "live operations and replay share
private mutators").

Open reads are keyed by item id.  Which connection holds them is session state
(``session.Session``); the queue only knows that they are out.
"""

import logging
import time
from collections import deque

from erqpy import records
from erqpy.journal import ReplayReport

log = logging.getLogger("erqpy.queue")

_encode_add = records.encode_add
_encode_id_op = records.encode_id_op
OP_ADD = records.OP_ADD
OP_REMOVE = records.OP_REMOVE
OP_OPEN = records.OP_OPEN
OP_CONFIRM = records.OP_CONFIRM
OP_UNREMOVE = records.OP_UNREMOVE
OP_FLUSH = records.OP_FLUSH


def now_ms() -> int:
    return int(time.time() * 1000)


class Item:
    """One queued item.  ``id`` is unique within its queue and is the ``gets`` cas value."""

    __slots__ = ("id", "flags", "data", "added_ms", "expires_ms", "opened_ms")

    def __init__(self, item_id, flags, data, added_ms, expires_ms):
        self.id = item_id
        self.flags = flags
        self.data = data
        self.added_ms = added_ms
        self.expires_ms = expires_ms  # 0 = never
        self.opened_ms = 0


class QueueStats:
    """Per-queue counters (PROTOCOL.md "Stats fields"); levels are computed on demand."""

    __slots__ = (
        "total_items",
        "expired_items",
        "discarded",
        "transactions",
        "canceled_transactions",
        "total_flushes",
        "last_age_ms",
        "gets",
        "puts",
    )

    def __init__(self):
        for name in self.__slots__:
            setattr(self, name, 0)


class PersistentQueue:
    def __init__(self, name: str, config, journal, collection, events):
        self.name = name
        self.journal = journal  # None for a memory-only queue (keep_journal = false)
        self.collection = collection  # for expire_to and fanout; a stable object
        self.events = events
        self.items = deque()
        self.bytes = 0
        self.open = {}  # item id -> Item; invariant: each was journaled as OPEN
        self.open_bytes = 0
        self.waiters = deque()  # waiters.Waiter, oldest first
        self.next_id = 1
        self.stats = QueueStats()
        self.deleted = False
        self.paused = False
        self.created = time.time()
        self.last_activity = time.monotonic()
        self._max_age_ms = 0
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

    # -- live operations ------------------------------------------------------------

    def add(self, data: bytes, flags: int = 0, expires_ms: int = 0, now: int = 0) -> bool:
        """Append an item; False when refused (too large, or full and not discarding)."""
        config = self._config
        size = len(data)
        if size > config.max_item_size:
            return False
        if len(self.items) >= config.max_items or self.bytes + size > config.max_size:
            if not config.discard_old_when_full or size > config.max_size:
                return False
            self._make_room(size)
        now = now or now_ms()
        if self._max_age_ms and (not expires_ms or expires_ms > now + self._max_age_ms):
            expires_ms = now + self._max_age_ms
        item_id = self.next_id
        if self.journal is not None:
            self.journal.append(_encode_add(item_id, flags, now, expires_ms, data))
        self.next_id = item_id + 1
        item = Item(item_id, flags, data, now, expires_ms)
        self.items.append(item)
        self.bytes += size
        self.stats.total_items += 1
        self.stats.puts += 1
        if self.events.active:
            self.events.emit("enqueued", self.name, item)
        if self.waiters:
            self.waiters.popleft().notify()
        return True

    def remove(self, open_read: bool = False, now: int = 0):
        """Take the head item, or return None.  An open read stays in ``open``."""
        items = self.items
        if not items:
            return None
        now = now or now_ms()
        head = items[0]
        if head.expires_ms or self._max_age_ms:
            self._expire_head(now)
            if not items:
                return None
            head = items[0]
        if open_read:
            if self.journal is not None:
                self.journal.append(_encode_id_op(OP_OPEN, head.id))
            items.popleft()
            head.opened_ms = now
            self.open[head.id] = head
            self.open_bytes += len(head.data)
            self.stats.transactions += 1
            event = "opened"
        else:
            if self.journal is not None:
                self.journal.append(_encode_id_op(OP_REMOVE, head.id))
            items.popleft()
            event = "dequeued"
        self.bytes -= len(head.data)
        self.stats.last_age_ms = now - head.added_ms
        self.stats.gets += 1
        if self.events.active:
            self.events.emit(event, self.name, head)
        if self.journal is not None and self.journal.size > self._config.max_journal_size:
            self.maybe_compact()
        return head

    def peek(self, now: int = 0):
        items = self.items
        if not items:
            return None
        head = items[0]
        if head.expires_ms or self._max_age_ms:
            self._expire_head(now or now_ms())
            return items[0] if items else None
        return head

    def confirm(self, item_id: int) -> bool:
        """Finish an open read for good.  False when it is no longer open."""
        item = self.open.get(item_id)
        if item is None:
            return False
        if self.journal is not None:
            self.journal.append(_encode_id_op(OP_CONFIRM, item_id))
        del self.open[item_id]
        self.open_bytes -= len(item.data)
        if self.events.active:
            self.events.emit("confirmed", self.name, item)
        if self.journal is not None and self.journal.size > self._config.max_journal_size:
            self.maybe_compact()
        return True

    def unremove(self, item_id: int) -> bool:
        """Give an open read back: it goes to the head and the oldest waiter is woken."""
        item = self.open.get(item_id)
        if item is None or self.deleted:
            return False
        if self.journal is not None:
            self.journal.append(_encode_id_op(OP_UNREMOVE, item_id))
        del self.open[item_id]
        self.open_bytes -= len(item.data)
        self.items.appendleft(item)
        self.bytes += len(item.data)
        self.stats.canceled_transactions += 1
        if self.events.active:
            self.events.emit("aborted", self.name, item)
        if self.waiters:
            self.waiters.popleft().notify()
        return True

    def flush(self) -> int:
        """Remove every waiting item; open reads are untouched."""
        count = len(self.items)
        if count and self.journal is not None:
            self.journal.append(records.encode_flush())
        self.items.clear()
        self.bytes = 0
        self.stats.total_flushes += 1
        if self.journal is not None:
            self.maybe_compact()
        return count

    def discard_expired(self, now: int = 0, limit: int = 1 << 62) -> int:
        """Drop (or move) expired items from the head; return how many."""
        if not self.items:
            return 0
        return self._expire_head(now or now_ms(), limit)

    def pass_on(self) -> None:
        """A notified waiter left without taking: give its turn to the next one."""
        if self.items and self.waiters:
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
                self.journal.append(_encode_id_op(OP_REMOVE, head.id))
            items.popleft()
            self.bytes -= len(head.data)
            self.stats.expired_items += 1
            count += 1
            if self.events.active:
                self.events.emit("expired", self.name, head)
            if target_name and target_name != self.name:
                self.collection.move_expired(target_name, head)
        return count

    def _make_room(self, size: int) -> None:
        config = self._config
        items = self.items
        while items and (len(items) >= config.max_items or self.bytes + size > config.max_size):
            head = items[0]
            if self.journal is not None:
                self.journal.append(_encode_id_op(OP_REMOVE, head.id))
            items.popleft()
            self.bytes -= len(head.data)
            self.stats.discarded += 1

    # -- compaction -----------------------------------------------------------------

    def maybe_compact(self) -> bool:
        """Rewrite the journal when it is mostly history.

        The rewrite holds live data only (open reads and waiting items), so it runs
        when the live part is small next to the file: always when the queue is empty,
        otherwise when live bytes are under a quarter of the file.
        XXX: the rewrite runs on the hub; a big live set blocks other queues meanwhile.
        """
        journal = self.journal
        if journal is None or journal.size <= self._config.max_journal_size:
            return False
        live = self.bytes + self.open_bytes
        if self.items and live * 4 > journal.size:
            return False
        self.compact()
        return True

    def compact(self) -> None:
        if self.journal is None:
            return
        self.journal.rewrite(self.next_id, self._live_records())

    def _live_records(self):
        for item in self.open.values():
            yield _encode_add(item.id, item.flags, item.added_ms, item.expires_ms, item.data)
            yield _encode_id_op(OP_OPEN, item.id)
        for item in self.items:
            yield _encode_add(item.id, item.flags, item.added_ms, item.expires_ms, item.data)

    # -- replay -------------------------------------------------------------------

    def replay(self) -> ReplayReport:
        """Rebuild memory from the journal, then give every open read back, in order."""
        report, header_next_id = self.journal.open(self._apply, self.next_id)
        self.next_id = max(self.next_id, header_next_id)
        if report.torn_tail_bytes:
            log.warning(
                "queue %s: journal ended inside a record; truncated %d bytes at offset %d",
                self.name, report.torn_tail_bytes, report.valid_end,
            )
        if report.damaged:
            copy = self.journal.keep_damaged_copy()
            for offset, dropped in report.corrupt:
                log.error(
                    "queue %s: DATA MAY HAVE BEEN LOST: corrupt journal record at offset %d, "
                    "%d bytes skipped (damaged file kept as %s)",
                    self.name, offset, dropped, copy,
                )
        # Reads that were open when the server stopped go back to the head, oldest
        # first, ahead of every other item (at-least-once delivery).
        for item_id in reversed(list(self.open)):
            self.unremove(item_id)
        self.stats.canceled_transactions = 0
        if report.damaged or (self.journal.size > self._config.max_journal_size):
            self.compact()
        return report

    def _apply(self, record) -> None:
        op = record.opcode
        if op == OP_ADD:
            item = Item(record.item_id, record.flags, record.data, record.added_ms, record.expires_ms)
            self.items.append(item)
            self.bytes += len(item.data)
            self.stats.total_items += 1
            if record.item_id >= self.next_id:
                self.next_id = record.item_id + 1
        elif op == OP_REMOVE or op == OP_OPEN:
            item = self._take_for_replay(record.item_id)
            if item is not None and op == OP_OPEN:
                self.open[item.id] = item
                self.open_bytes += len(item.data)
        elif op == OP_CONFIRM:
            item = self.open.pop(record.item_id, None)
            if item is not None:
                self.open_bytes -= len(item.data)
        elif op == OP_UNREMOVE:
            item = self.open.pop(record.item_id, None)
            if item is not None:
                self.open_bytes -= len(item.data)
                self.items.appendleft(item)
                self.bytes += len(item.data)
        elif op == OP_FLUSH:
            self.items.clear()
            self.bytes = 0

    def _take_for_replay(self, item_id: int):
        items = self.items
        if items and items[0].id == item_id:
            item = items.popleft()
            self.bytes -= len(item.data)
            return item
        # Only after damage: the item is not at the head.  Find it, or ignore the record.
        for index, item in enumerate(items):
            if item.id == item_id:
                del items[index]
                self.bytes -= len(item.data)
                return item
        return None

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
