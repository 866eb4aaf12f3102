"""Recovery: a queue's state rebuilt from its journal and segment files at start-up.

The journal's records are applied by item id (``_ReplayState``); segment files are
counted from their SEAL record when sealed, read whole otherwise.  Restart reads the
journal, the last record of each sealed segment and at most two segments, so it takes
time in proportion to what is in memory, not to the queue's history or depth.  The rules
that make this sound are in ``segments``' docstring.
"""

import heapq
import logging
import os
from collections import deque

from erqpy.storage import records, recordwalk
from erqpy.storage.datadir import list_segments, quarantine_file
from erqpy.storage.items import DEFAULT_PRIORITY, item_from_segment_record, with_fields
from erqpy.storage.journal import DamagedHeader, Journal, ReplayReport
from erqpy.storage.segments import Segment

# The store's logger name, kept from before the split: operators filter on it.
log = logging.getLogger("erqpy.store")


class Recovered:
    """What replay found: memory contents, open reads, and what stays on disk."""

    def __init__(self):
        self.front = deque()  # items given back to the head, in order
        self.run = []  # the rest of the memory window, ascending ids
        self.delayed = []  # items not due when last written (``schedule``), due_ms set
        self.held = {}  # id -> item: reads open when the server stopped
        self.disk_count = 0
        self.disk_bytes = 0
        self.next_id = 1
        self.report: ReplayReport = None  # type: ignore[assignment]  # set by recover()
        self.records = 0


class _ReplayState:
    """Applies journal records by item id; see the module docstring for the rules."""

    def __init__(self):
        self.front = deque()  # Item or int id (data still in a segment)
        self.journal_items = {}  # id -> Item, in id order (dicts keep insertion order)
        self.held = {}  # id -> Item or None (data still in a segment)
        self.deliveries = {}  # id -> times handed out as a reliable read (OPEN, DELIVERIES)
        self.attrs = {}  # id -> (due_ms, priority) of ATTRS, for the item record or UNREMOVE next
        self.delayed = {}  # id -> (due_ms, Item or None (data still in a segment))
        self.head = 0
        self.max_id = 0

    def apply(self, record, make_item) -> None:
        op = record.opcode
        item_id = record.item_id
        if op == records.OP_ADD:
            if self.attrs and item_id in self.attrs:
                due, priority = self.attrs.pop(item_id)
                item = with_fields(make_item(record))
                item.priority = priority
                if due:
                    self.delayed[item_id] = (due, item)
                else:
                    self.journal_items[item_id] = item
            else:
                self.journal_items[item_id] = make_item(record)
        elif op == records.OP_REMOVE or op == records.OP_OPEN:
            taken = self._take(item_id)
            if op == records.OP_OPEN:
                self.held[item_id] = taken
                self.deliveries[item_id] = self.deliveries.get(item_id, 0) + 1
            else:
                self.deliveries.pop(item_id, None)
        elif op == records.OP_CONFIRM:
            self.held.pop(item_id, None)
            self.deliveries.pop(item_id, None)
        elif op == records.OP_DELIVERIES:
            self.deliveries[item_id] = record.count
        elif op == records.OP_UNREMOVE:
            if item_id in self.held:
                taken = self.held.pop(item_id)
                # The held item has its priority already; a segment item's is the default.
                due = self.attrs.pop(item_id, (0, 0))[0] if self.attrs else 0
                if due:
                    self.delayed[item_id] = (due, taken)
                else:
                    self.front.appendleft(taken if taken is not None else item_id)
        elif op == records.OP_ATTRS:
            self.attrs[item_id] = (record.due_ms, record.priority)
        elif op == records.OP_FLUSH:
            self.front.clear()
            self.journal_items.clear()
            self.delayed.clear()
            self.deliveries = {i: n for i, n in self.deliveries.items() if i in self.held}
        elif op == records.OP_HEAD:
            self.head = max(self.head, item_id)
            return  # a position, not an item: it must not raise max_id
        elif op == records.OP_FRONT:
            self.front.append(self._with_attrs(make_item(record)))
        elif op == records.OP_HELD:
            self.held[item_id] = self._with_attrs(make_item(record))
        if item_id > self.max_id:
            self.max_id = item_id

    def _with_attrs(self, item):
        """A snapshot's FRONT or HELD item gets the priority of the ATTRS before it."""
        if self.attrs and item.id in self.attrs:
            item = with_fields(item)
            item.priority = self.attrs.pop(item.id)[1]
        return item

    def _take(self, item_id):
        front = self.front
        if front:
            first = front[0]
            if (first if isinstance(first, int) else first.id) == item_id:
                front.popleft()
                return first if not isinstance(first, int) else None
        item = self.journal_items.pop(item_id, None)
        if item is not None:
            return item
        delayed = self.delayed.pop(item_id, None)  # before a segment item moves head past it
        if delayed is not None:
            return delayed[1]
        for index, entry in enumerate(front):  # only after damage
            if (entry if isinstance(entry, int) else entry.id) == item_id:
                del front[index]
                return entry if not isinstance(entry, int) else None
        # A segment item: every segment id below it has left the queue already.
        if item_id >= self.head:
            self.head = item_id + 1
        return None


def recover(store, make_item, memory_budget: int, header_next_id: int = 1) -> Recovered:
    """Rebuild ``store``'s queue from its files, and leave its read-behind cursor on the
    first segment item not loaded into memory (up to ``memory_budget`` bytes)."""
    state = _ReplayState()
    result = Recovered()
    report, next_id = store.journal.open(lambda r: state.apply(r, make_item), header_next_id)
    result.report = report
    result.records = report.records
    _load_segments(store)
    next_id = max(next_id, state.max_id + 1, state.head)
    if store.segments:
        next_id = max(next_id, store.segments[-1].last_id + 1)
    result.next_id = next_id
    # Items whose data is still in a segment (an open read or a given-back read of a
    # segment item): fetch them now.
    for item_id in [i for i, item in state.held.items() if item is None]:
        state.held[item_id] = _fetch(store, item_id)
    for item_id, (due, item) in state.delayed.items():
        item = item if item is not None else _fetch(store, item_id)
        if item is not None:
            item = with_fields(item)
            item.due_ms = due
            result.delayed.append(item)
    front = deque()
    for entry in state.front:
        front.append(_fetch(store, entry) if isinstance(entry, int) else entry)
    result.front = deque(item for item in front if item is not None)
    result.held = {i: item for i, item in state.held.items() if item is not None}
    # Only given-back and open items can have been delivered (records.py's docstring).
    # Given back with a delay, then due: such an item is in the journal's ADD items.
    deliveries = state.deliveries
    if deliveries:
        def delivered(item):
            if item.id not in deliveries:
                return item
            item = with_fields(item)
            item.deliveries = deliveries[item.id]
            return item

        result.front = deque(map(delivered, result.front))
        result.held = {i: delivered(item) for i, item in result.held.items()}
        result.delayed = [delivered(item) for item in result.delayed]
        for item_id in deliveries.keys() & state.journal_items.keys():
            state.journal_items[item_id] = delivered(state.journal_items[item_id])
    lost = (len(front) - len(result.front)) + (len(state.held) - len(result.held))
    lost += len(state.delayed) - len(result.delayed)
    if lost:
        log.error("queue %s: DATA MAY HAVE BEEN LOST: %d open or given-back items had no data",
                  store.queue_name, lost)
    keep_from = state.head
    for item in (*result.front, *result.held.values(), *result.delayed):
        if item.in_segment:
            keep_from = min(keep_from, item.id)
    store._delete_segments_below(keep_from)
    _position_cursor(store, state.head)
    # Memory: journal items and segment items merged by id.  Every journal item is
    # loaded (they were in memory before the restart); segment items up to the
    # memory budget, and at least up to the last journal item so the order holds.
    # Items of other priority levels are never read behind: they take no part in the
    # order of the default level's journal and segment items, and go after them.
    journal_items = [item for item in state.journal_items.values() if item.priority == DEFAULT_PRIORITY]
    level_items = [item for item in state.journal_items.values() if item.priority != DEFAULT_PRIORITY]
    last_journal_id = journal_items[-1].id if journal_items else 0
    size = sum(item.payload_size for item in journal_items)
    disk_count, disk_bytes = _live_on_disk(store, state.head)
    loaded = []
    while disk_count > len(loaded):
        need_order = loaded[-1].id < last_journal_id if loaded else last_journal_id > 0
        if size >= memory_budget and not need_order:
            break
        batch = store.read_behind(max(memory_budget - size, 1))
        skipped_items, skipped_bytes = store.take_skipped()
        disk_count -= skipped_items
        disk_bytes -= skipped_bytes
        if not batch:
            log.error("queue %s: segments hold %d fewer items than counted",
                      store.queue_name, disk_count - len(loaded))
            disk_count = len(loaded)
            break
        loaded.extend(batch)
        size += sum(item.payload_size for item in batch)
    result.run = list(heapq.merge(journal_items, loaded, key=lambda item: item.id)) + level_items
    result.disk_count = disk_count - len(loaded)
    result.disk_bytes = disk_bytes - sum(item.payload_size for item in loaded)
    return result


def _load_segments(store) -> None:
    found = store.found_segments
    if found is None:
        found = list_segments(store.data_dir, store.queue_name)
    store.found_segments = None
    store.segments = []
    for index, (first_id, path) in enumerate(found):
        segment = Segment(first_id, path)
        last = index == len(found) - 1
        try:
            if not last and read_seal(segment):
                store.segments.append(segment)
                continue
            _open_whole(store, segment, last)
        except DamagedHeader as exc:
            _quarantine_segment(store, path, exc.reason)
            continue
        store.segments.append(segment)


def _open_whole(store, segment: Segment, last: bool) -> None:
    """Read a segment whole: the last one, or one without a valid seal (or in an
    older format, which this rewrites in the current one)."""
    path = segment.path
    journal = Journal(path, store.queue_name, store.journal.policy, store.syncer)

    def count(record, segment=segment):
        if record.opcode == records.OP_ADD:
            segment.count += 1
            segment.bytes += len(record.data)
            segment.last_id = record.item_id
        elif record.opcode == records.OP_SEAL:
            segment.sealed = True

    seg_report, _ = journal.open(count, segment.first_id)
    if seg_report.torn_tail_bytes:
        log.warning("queue %s: segment %s ended inside a record; truncated %d bytes",
                    store.queue_name, path, seg_report.torn_tail_bytes)
    if seg_report.damaged:
        log.error("queue %s: DATA MAY HAVE BEEN LOST: corrupt records in segment %s: %s%s",
                  store.queue_name, path, seg_report.corrupt,
                  f" (damaged file kept as {seg_report.damaged_copy})" if seg_report.damaged_copy else "")
    segment.size = journal.size
    segment.format = journal.format
    if last and not segment.sealed:
        store.tail = journal
    else:
        journal.close()


def _quarantine_segment(store, path: str, reason: str) -> None:
    target = quarantine_file(path)
    log.error("queue %s: DATA MAY HAVE BEEN LOST: segment %s is unreadable (%s); moved aside "
              "as %s, the rest of the queue is served", store.queue_name, path, reason, target)


def read_seal(segment: Segment) -> bool:
    """Take a sealed segment's counts from its header and last record.  False when
    it must be read whole; ``DamagedHeader`` when its header is unreadable."""
    try:
        with open(segment.path, "rb") as f:
            header = f.read(records.HEADER_SIZE)
            try:
                file_format, _next_id = records.decode_header(header)
            except records.BadHeader as exc:
                if not header.strip(b"\0"):
                    return False  # created, never written: reading it whole recreates it
                raise DamagedHeader(segment.path, str(exc)) from None
            if file_format.version not in records.SALTED_VERSIONS:
                return False  # version 1: reading it whole rewrites it in the current format
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size < file_format.header_size + file_format.seal_record_size:
                return False
            f.seek(size - file_format.seal_record_size)
            tail = f.read(file_format.seal_record_size)
    except OSError:
        return False
    record, _end = file_format.decode_at(tail, 0)
    if not isinstance(record, records.Record) or record.opcode != records.OP_SEAL:
        return False
    segment.count, segment.bytes, segment.last_id = records.decode_seal(record)
    segment.size = size
    segment.sealed = True
    segment.format = file_format
    return True


def scan(segment: Segment):
    """Every valid ADD record of a segment, in order (recovery only)."""
    with open(segment.path, "rb") as f:
        buf = f.read()
    fmt = segment.format
    for event, pos, _next, record in recordwalk.walk(fmt, buf, fmt.header_size):
        if event is recordwalk.RECORD and record.opcode == records.OP_ADD:
            yield record, pos


def _fetch(store, item_id: int):
    for segment in store.segments:
        if segment.first_id <= item_id <= segment.last_id:
            for record, _pos in scan(segment):
                if record.item_id == item_id:
                    return item_from_segment_record(record)
    return None


def _position_cursor(store, head: int) -> None:
    """Put the read-behind cursor on the first segment record at or above ``head``."""
    store._close_cursor()
    for index, segment in enumerate(store.segments):
        if segment.last_id < head:
            continue
        store._cursor_index = index
        store._cursor_offset = records.HEADER_SIZE
        if segment.first_id < head:
            for record, pos in scan(segment):
                if record.item_id >= head:
                    store._cursor_offset = pos
                    break
        return
    store._cursor_index = len(store.segments)
    store._cursor_offset = records.HEADER_SIZE


def _live_on_disk(store, head: int) -> tuple[int, int]:
    count = total = 0
    for segment in store.segments[store._cursor_index:]:
        if segment.first_id >= head:
            count += segment.count
            total += segment.bytes
        else:
            for record, _pos in scan(segment):
                if record.item_id >= head:
                    count += 1
                    total += len(record.data)
    return count, total
