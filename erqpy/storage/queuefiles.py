"""The part of a PersistentQueue that deals with its files: read-behind (items spilled
to segment files and loaded back), compaction (the journal rewritten as a snapshot,
retried after a failure) and replay (memory rebuilt from the files at start).

``pqueue.PersistentQueue`` is this class plus the queue's operations in memory; the two
share the queue's attributes (``items``, ``front_count``, ``disk_count``, ``store``, ...),
which are described there.
"""

import errno
import logging
import time
from collections import deque
from itertools import islice
from typing import TYPE_CHECKING, Any

import gevent

from erqpy.errors import JournalWriteError
from erqpy.fairness import on_the_loop
from erqpy.storage.items import DEFAULT_PRIORITY, Item, QueueStats, item_from_record
from erqpy.storage.journal import BACKGROUND_REWRITE_BYTES, ReplayReport
from erqpy.storage.records import ADD_RECORD_OVERHEAD
from erqpy.storage.recovery import recover
from erqpy.storage.snapshot import RunCopy

# The queue's logger name: these lines were the queue's before the split.
log = logging.getLogger("erqpy.queue")

#: A compaction that keeps failing (a full disk) is logged at most this often per queue.
COMPACT_ERROR_LOG_INTERVAL = 30.0
#: After a failed compaction the queue does not try again for this long: on a full disk
#: every removal would otherwise write (and throw away) a whole snapshot.
COMPACT_RETRY_SECONDS = 5.0
#: Bytes of item data one refill loads from the segments at most.  Reading the whole
#: budget at once (up to half of max_memory_size: 8 MiB of 1 KiB items is 8,000 items
#: decoded) held the hub for 300 ms; each removal below the refill line loads this much
#: more instead, so the memory window fills back a step per removal (issue 12).  256 KiB
#: (2-2.5 ms of decoding on the loaded 2-core machine) still added up with a collection
#: and a compaction step in one turn of a pipelined drain: 64 KiB is about 0.6 ms.
REFILL_STEP_BYTES = 64 * 1024


def _in_order_from(level) -> int:
    """The index from which ``level``'s items are in ascending id order to its end."""
    start = len(level)
    while start > 1 and level[start - 2].id < level[start - 1].id:
        start -= 1
    return max(start - 1, 0)


class QueueFiles:
    """Read-behind, compaction and replay of a ``PersistentQueue``."""
    # No __dict__: PersistentQueue has the slots.  Not a literal, or mypy would check
    # these methods' assignments against this mixin's own (empty) __slots__.
    __slots__: tuple[str, ...] = tuple()

    # The queue's state these methods share, set by PersistentQueue.__init__ (declared
    # here for the type checker).
    name: str
    store: Any  # segments.QueueStore, or None for a memory-only queue
    journal: Any
    events: Any
    _config: Any
    stats: QueueStats
    items: deque
    _copying: Any  # snapshot.RunCopy while a snapshot copies ``items``, else None
    front_count: int
    open: dict
    open_bytes: int
    waiters: Any  # waitline.WaiterLine
    next_id: int
    bytes: int
    mem_bytes: int
    disk_count: int
    disk_bytes: int
    delayed: Any  # schedule.DelayedItems
    levels: Any  # levels.Levels
    compact_pending: bool
    _compact_retry_at: float
    _compact_failures: int
    _compact_logged_at: float

    if TYPE_CHECKING:
        @property
        def count(self) -> int: ...

        def unremove(self, item_id: int, due_ms: int = 0) -> bool: ...

        def promote_due(self, now: int = 0) -> int: ...

    def _add_behind(self, item_id, flags, now, expires_ms, data) -> bool:
        """Read-behind: the item goes to a segment file and stays out of memory."""
        self.store.spill(item_id, flags, now, expires_ms, data)
        self.next_id = item_id + 1
        self.disk_count += 1
        self.disk_bytes += len(data)
        self.bytes += len(data)
        self.stats.total_items += 1
        self.stats.puts += 1
        if not self.items:
            self._refill()
        if self.events.active:
            self.events.emit("enqueued", self.name, Item(item_id, flags, data, now, expires_ms))
        if self.waiters and self.items:
            self.waiters.popleft().notify()
        return True

    def _refill(self, may_wait: bool = True) -> None:
        """Load items from disk into memory, up to the memory budget, a step at a time.

        ``may_wait`` False (memory still holds items): only what the page cache holds,
        so that a removal never waits for the disk while there is something to serve;
        a later removal tries again (``readahead.read_cached``).
        """
        budget = min(self._config.max_memory_size - self.mem_bytes, REFILL_STEP_BYTES)
        try:
            loaded = self.store.read_behind(max(budget, 1), may_wait)
        except OSError as exc:
            # The command that got here has done its part (journaled, popped); the items
            # stay on disk and the next removal tries again.
            log.error("queue %s: read-behind failed, retried on the next read: %s", self.name, exc)
            return
        skipped_items, skipped_bytes = self.store.take_skipped()
        if skipped_items:  # damaged records: they will never be read
            self.disk_count -= skipped_items
            self.disk_bytes -= skipped_bytes
            self.bytes -= skipped_bytes
        if not loaded:
            if not may_wait:
                return  # not cached yet: nothing is known to be missing
            if self.disk_count:
                log.error("queue %s: %d items counted on disk could not be read", self.name, self.disk_count)
            self.bytes -= self.disk_bytes
            self.disk_count = self.disk_bytes = 0
            return
        size = sum(item.payload_size for item in loaded)
        self.items.extend(loaded)
        self.mem_bytes += size
        self.disk_count -= len(loaded)
        self.disk_bytes -= size
        if self.front_count == 0 and self._frees_segments():
            self.compact_safely(force=True)  # the oldest segments hold nothing that waits

    def _frees_segments(self) -> bool:
        """True when the oldest segment holds no waiting item, so a snapshot deletes it.

        Not "the cursor has read past it": the items it loaded may still be in memory,
        and then a snapshot frees nothing (the queue used to rewrite its journal on
        every remove until they were gone).  The first item of the run has the lowest
        id still waiting; the front and open reads go into the snapshot whole.
        """
        segments = self.store.segments
        if not segments:
            return False
        if len(self.items) > self.front_count:
            return segments[0].last_id < self.items[self.front_count].id
        return not self.disk_count

    def close(self) -> None:
        self.delayed.stop()
        if self.store is not None:
            self.store.close()

    @property
    def journal_size(self) -> int:
        """Bytes in the journal file; 0 for a queue without one."""
        return self.store.size if self.store is not None else 0

    # -- compaction -----------------------------------------------------------------

    def compaction_due(self, force: bool = False) -> bool:
        """Whether the journal should be snapshot now: it is mostly history, or segments
        can be freed.  Cheap, so commands ask it before anything else (deciding *where* a
        compaction runs is what costs: on the loop it means a greenlet).

        The snapshot holds what only the journal has (open reads, the front, items
        added while the queue fitted in memory), so it runs when that is small next to
        the file: always when the queue is empty, otherwise when memory holds under a
        quarter of the journal's size.
        """
        store = self.store
        if store is None:
            return False
        if force or self._frees_segments():
            return True
        size = store.journal.size
        if size <= self._config.max_journal_size:
            return False
        # What a snapshot would copy, records and all: with items of a few bytes the
        # records are most of it, and counting their data alone, a journal of live
        # items looked mostly history and was rewritten at every removal.
        in_memory = len(self.items) + self.levels.count + len(self.delayed) + len(self.open)
        return not (self.items and (self.mem_bytes + self.open_bytes + in_memory * ADD_RECORD_OVERHEAD) * 4 > size)

    def compact_safely(self, force: bool = False, background: bool = False) -> bool:
        """Snapshot the journal when ``compaction_due``, after a command's own change is
        journaled and made.  A large snapshot is copied, encoded and written a step at a
        time while the queue keeps serving (``snapshot``, ``journal_rewrite``).

        A compaction that cannot run (ENOSPC, EMFILE, ...) must not fail that command:
        it has succeeded, and an error reply would make the client retry (a dequeued
        item answered as an error is an item lost).  A failed rewrite leaves the old
        journal, which is still complete, so only disk space is at stake; the
        maintenance sweep tries again (``compact_pending``).
        """
        if self.compact_pending and time.monotonic() < self._compact_retry_at:
            return False
        if not self.compaction_due(force):
            # Asked first: a queue whose journal is past max_journal_size while memory
            # holds more than a quarter of it is asked at every removal, and deferring
            # each of those to a greenlet only to find nothing due cost a dequeue of
            # 1 KiB items a third of its CPU (issue 12).
            self.compact_pending = False  # a failed one that is no longer due is done with
            return False
        if on_the_loop() and self._compaction_is_long():
            # A command served from the event loop's own callback (server/loop_serving)
            # cannot give way, so a long compaction would hold every connection: it runs
            # in a greenlet of its own right after, as the sweep's would.  A short one
            # runs here (on the loop the file work is done inline: filewrite.off_the_hub).
            if not self.store.compact_deferred:
                self.store.compact_deferred = True
                gevent.spawn(self._deferred_compact, force, background)
            return False
        try:
            self.compact(background)
        except (OSError, JournalWriteError) as exc:
            self.compact_pending = True
            self._compact_retry_at = time.monotonic() + COMPACT_RETRY_SECONDS
            self._log_compact_failure(exc)
            return False
        except Exception:
            # Not a file error: a bug (a wait from the event loop's callback once was one;
            # the removal it followed had been journaled, and the error reply lost that
            # item).  The command still succeeds; the journal stays as it was.
            log.exception("queue %s: compaction failed; the journal stays as it is", self.name)
            self.compact_pending = True
            self._compact_retry_at = time.monotonic() + COMPACT_RETRY_SECONDS
            return False
        self.compact_pending = False
        return True

    def _compaction_is_long(self) -> bool:
        """A rewrite that the worker thread would do (of a large journal, or a snapshot
        of what memory holds at most), or segment files to delete (each as large as a
        journal may grow)."""
        store = self.store
        if store is None:
            return False
        copied = self.mem_bytes + self.open_bytes
        return max(copied, store.journal.size) >= BACKGROUND_REWRITE_BYTES or (
            bool(store.segments) and store.segment_size >= BACKGROUND_REWRITE_BYTES)

    def _deferred_compact(self, force: bool, background: bool) -> None:
        self.store.compact_deferred = False
        if self.store is not None and not self.store.journal.closed:
            self.compact_safely(force, background)

    def _log_compact_failure(self, exc) -> None:
        self._compact_failures += 1
        clock = time.monotonic()
        if clock - self._compact_logged_at < COMPACT_ERROR_LOG_INTERVAL:
            return
        cause = exc.cause if isinstance(exc, JournalWriteError) else exc
        code = errno.errorcode.get(cause.errno, str(cause.errno)) if cause.errno else "?"
        log.error(
            "queue %s: compaction failed (%s: %s), %d time(s) since the last report; the "
            "journal stays as it is and compaction is retried",
            self.name, code, cause.strerror or cause, self._compact_failures,
        )
        self._compact_failures = 0
        self._compact_logged_at = clock

    def compact(self, background: bool = False) -> None:
        """Rewrite the journal as a snapshot and delete segments already consumed."""
        store = self.store
        if store is None or store.taking is not None:
            # Another snapshot is being written, so this one is not needed; and its
            # RunCopy must keep ``_copying``, which a second copy would replace.
            return
        front = list(islice(self.items, 0, self.front_count))
        # Where the items loaded from segments (marked in_segment) begin is found as the
        # run is copied (snapshot.RunCopy); with no segment there is none.
        head_if_none = store.first_disk_id() if self.disk_count else self.next_id
        run = RunCopy(self.items, self.front_count, head_if_none, bool(store.segments))
        # Another level: its given-back head as FRONT records, the rest (in id order, so
        # replay takes each by id at once) as ADD records after the run.
        rest: list = []
        for level in self.levels.deques.values():
            split = _in_order_from(level)
            front.extend(islice(level, 0, split))
            rest.extend(islice(level, split, None))
        rest.extend(self.delayed)
        self._copying = run
        RunCopy.alive += 1
        try:
            try:
                store.snapshot(self.next_id, run, front, rest, list(self.open.values()), background)
            finally:
                self._copying = None
            run.release()
        finally:
            RunCopy.alive -= 1

    # -- replay -------------------------------------------------------------------

    def replay(self) -> ReplayReport:
        """Rebuild memory from the files, then give every open read back, in order."""
        store = self.store
        recovered = recover(store, item_from_record, self._config.max_memory_size, self.next_id)
        report = recovered.report
        self.next_id = max(self.next_id, recovered.next_id)
        # Items of other priorities go to their levels: given back first, then by id.
        self.levels.clear()
        self.items = deque()
        for index, item in enumerate((*recovered.front, *recovered.run)):
            if index == len(recovered.front):
                self.front_count = len(self.items)
            if item.priority == DEFAULT_PRIORITY:
                self.items.append(item)
            else:
                self.levels.push(item)
        if not recovered.run:
            self.front_count = len(self.items)
        self.delayed.load(recovered.delayed)
        self.mem_bytes = sum(item.payload_size for item in self.items) + self.delayed.bytes + self.levels.bytes
        self.disk_count = recovered.disk_count
        self.disk_bytes = recovered.disk_bytes
        self.bytes = self.mem_bytes + self.disk_bytes
        self.open = dict(recovered.held)
        self.open_bytes = sum(item.payload_size for item in self.open.values())
        self.stats.total_items = self.count + len(self.open) + len(self.delayed)
        if report.torn_tail_bytes:
            log.warning(
                "queue %s: journal ended inside a record; truncated %d bytes at offset %d",
                self.name, report.torn_tail_bytes, report.valid_end,
            )
        if report.damaged:
            copy = report.damaged_copy or store.keep_damaged_copy()
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
        self.promote_due()  # what fell due while the server was down joins the tail
        if report.damaged or store.journal.size > self._config.max_journal_size or self._frees_segments():
            # Start-up on a full disk still serves: the journal as found is complete.
            self.compact_safely(force=True)
        return report
