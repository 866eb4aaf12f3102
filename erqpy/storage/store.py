"""QueueStore: the files of one queue, and how its state is rebuilt from them.

A queue that fits in memory lives in one journal (``<q>.journal``): ADD records for its
items and a record for every operation.  Past ``max_memory_size`` the queue reads behind:
new items go to segment files (``<q>.<first id>.seg``, ADD records only, closed by a SEAL
record) and only a window at the head is held in memory.  The journal keeps recording
operations, by item id.

Invariants that make this work:

* Item ids grow by one per item added to the queue, wherever its data is written.
* Every removal takes the head of the queue, so items whose data lives in segments leave
  in id order, and "segment items at or above ``head`` are live" holds.  ``head`` only
  moves up: REMOVE or OPEN of a segment item moves it past that id, FLUSH then HEAD moves
  it to the end.
* Items the journal holds (ADD, FRONT, HELD) are always in memory; items still on disk
  are segment items with the highest ids.

A snapshot rewrites the journal as HEAD, then the open reads (HELD), the items given back
to the head (FRONT) and the items only the journal holds (ADD).  Segments whose ids all
lie below HEAD are then deleted whole: item data in segments is never copied, so the
cost of compaction is the size of memory, not of the queue.  Restart reads the journal,
the last record of each sealed segment and at most two segments, so it takes time in
proportion to what is in memory, not to the queue's history or depth.
"""

import heapq
import logging
import os
from collections import deque

from erqpy.storage import records
from erqpy.storage.failpoints import failpoint
from erqpy.storage.datadir import (
    NAME_SUFFIX,
    file_stem,
    journal_path,
    list_segments,
    quarantine_file,
    record_long_name,
    segment_path,
)
from erqpy.storage.journal import DamagedHeader, Journal

log = logging.getLogger("erqpy.store")

#: Bytes read from a segment at a time during read-behind.
READ_CHUNK = 1 << 20


class Segment:
    """One segment file: ids ``first_id``..``last_id`` (with gaps for journal items)."""

    __slots__ = ("first_id", "path", "count", "bytes", "last_id", "size", "sealed", "format")

    def __init__(self, first_id, path):
        self.first_id = first_id
        self.path = path
        self.count = 0
        self.bytes = 0
        self.last_id = first_id - 1
        self.size = records.HEADER_SIZE
        self.sealed = False
        self.format = None  # records.V2Format of the file (its salt), from its header


class Recovered:
    """What replay found: memory contents, open reads, and what stays on disk."""

    def __init__(self):
        self.front = deque()  # items given back to the head, in order
        self.run = []  # the rest of the memory window, ascending ids
        self.held = {}  # id -> item: reads open when the server stopped
        self.disk_count = 0
        self.disk_bytes = 0
        self.next_id = 1
        self.report = None
        self.records = 0


class _ReplayState:
    """Applies journal records by item id; see the module docstring for the rules."""

    def __init__(self):
        self.front = deque()  # Item or int id (data still in a segment)
        self.journal_items = {}  # id -> Item, in id order (dicts keep insertion order)
        self.held = {}  # id -> Item or None (data still in a segment)
        self.head = 0
        self.max_id = 0

    def apply(self, record, make_item) -> None:
        op = record.opcode
        item_id = record.item_id
        if op == records.OP_ADD:
            self.journal_items[item_id] = make_item(record)
        elif op == records.OP_REMOVE or op == records.OP_OPEN:
            taken = self._take(item_id)
            if op == records.OP_OPEN:
                self.held[item_id] = taken
        elif op == records.OP_CONFIRM:
            self.held.pop(item_id, None)
        elif op == records.OP_UNREMOVE:
            if item_id in self.held:
                taken = self.held.pop(item_id)
                self.front.appendleft(taken if taken is not None else item_id)
        elif op == records.OP_FLUSH:
            self.front.clear()
            self.journal_items.clear()
        elif op == records.OP_HEAD:
            self.head = max(self.head, item_id)
            return  # a position, not an item: it must not raise max_id
        elif op == records.OP_FRONT:
            self.front.append(make_item(record))
        elif op == records.OP_HELD:
            self.held[item_id] = make_item(record)
        if item_id > self.max_id:
            self.max_id = item_id

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
        for index, entry in enumerate(front):  # only after damage
            if (entry if isinstance(entry, int) else entry.id) == item_id:
                del front[index]
                return entry if not isinstance(entry, int) else None
        # A segment item: every segment id below it has left the queue already.
        if item_id >= self.head:
            self.head = item_id + 1
        return None


class QueueStore:
    """The journal and segment files of one queue."""

    def __init__(self, data_dir: str, queue_name: str, policy: str, syncer, segment_size: int):
        self.data_dir = data_dir
        self.queue_name = queue_name
        self.syncer = syncer
        self.segment_size = segment_size
        record_long_name(data_dir, queue_name)
        self.journal = Journal(journal_path(data_dir, queue_name), queue_name, policy, syncer)
        self.segments = []  # Segment, oldest first
        self.tail = None  # Journal of the last segment while it takes appends
        self.rotations = 0
        # Items whose ADD record read-behind skipped as damaged, not yet taken off the
        # queue's disk counts (``take_skipped``).
        self._skipped_items = 0
        self._skipped_bytes = 0
        # Read-behind cursor: next segment record to load into memory.
        self._cursor_index = 0
        self._cursor_offset = 0
        self._cursor_fd = -1
        self._cursor_path = ""
        self.used = False  # the cursor's descriptor is in the LRU of open files
        # Set by a caller that has listed the directory already (segments_by_stem).
        self.found_segments = None

    @property
    def policy(self) -> str:
        return self.journal.policy

    @policy.setter
    def policy(self, policy: str) -> None:
        self.journal.policy = policy
        if self.tail is not None:
            self.tail.policy = policy

    @property
    def size(self) -> int:
        """Bytes on disk: the journal and every segment."""
        return self.journal.size + sum(s.size for s in self.segments)

    # -- writing ----------------------------------------------------------------------

    def spill(self, item_id, flags, added_ms, expires_ms, data) -> None:
        """Write an item to the tail segment (read-behind); rotate when it is full."""
        tail = self.tail
        if tail is None or self.segments[-1].size >= self.segment_size:
            tail = self._new_segment(item_id)
        record = tail.format.encode_add(item_id, flags, added_ms, expires_ms, data)
        tail.append(record)
        segment = self.segments[-1]
        segment.count += 1
        segment.bytes += len(data)
        segment.last_id = item_id
        segment.size = tail.size

    def _new_segment(self, first_id: int) -> Journal:
        if self.tail is not None:
            self._seal_tail()
        segment = Segment(first_id, segment_path(self.data_dir, self.queue_name, first_id))
        tail = Journal(segment.path, self.queue_name, self.journal.policy, self.syncer)
        tail.open(lambda record: None, first_id)
        segment.size = tail.size
        segment.format = tail.format
        self.segments.append(segment)
        self.tail = tail
        return tail

    def _seal_tail(self) -> None:
        segment = self.segments[-1]
        self.tail.append(self.tail.format.encode_seal(segment.count, segment.bytes, segment.last_id))
        segment.size = self.tail.size
        segment.sealed = True
        self.tail.close()
        self.tail = None
        self.rotations += 1
        failpoint("segment-after-seal")

    # -- read-behind --------------------------------------------------------------------

    def read_behind(self, max_bytes: int, make_item) -> list:
        """Load segment items at the cursor, up to ``max_bytes`` (at least one item).

        A damaged record costs only itself: one whose head checks out is skipped by its
        length; after a damaged head the rest of the segment is searched for the next
        valid record (sound because of the file's salt; see ``records``).
        """
        loaded = []
        size = 0
        while (not loaded or size < max_bytes) and self._cursor_index < len(self.segments):
            segment = self.segments[self._cursor_index]
            decode_at = segment.format.decode_at
            fd = self._cursor_fd_for(segment)
            offset = self._cursor_offset
            chunk = os.pread(fd, READ_CHUNK, offset)
            pos = 0
            moved_on = False
            while pos < len(chunk) and (not loaded or size < max_bytes):
                record, end = decode_at(chunk, pos)
                if record is records.INCOMPLETE:
                    if pos == 0:  # one record larger than the chunk: read it whole
                        needed = segment.format.frame_length(chunk, 0) or 0
                        if needed > len(chunk):
                            bigger = os.pread(fd, needed, offset)
                            if len(bigger) == needed:
                                chunk = bigger
                                continue
                    break
                if record is records.DAMAGED:
                    if chunk[pos + 4] == records.OP_ADD:  # the head, and so the opcode, is valid
                        self._skipped_items += 1
                        self._skipped_bytes += end - pos - records.RECORD_HEAD_SIZE - records.ADD_FIELDS_SIZE
                    log.error("queue %s: DATA MAY HAVE BEEN LOST: damaged record in %s at offset %d; "
                              "%d bytes skipped", self.queue_name, segment.path, offset + pos, end - pos)
                    pos = end
                    break  # read on from the record after it
                if record is records.UNFRAMED:
                    resume = self._resync_segment(fd, segment, offset + pos)
                    if resume is None:
                        log.error("queue %s: DATA MAY HAVE BEEN LOST: damaged record head in %s at "
                                  "offset %d and no valid record after it", self.queue_name,
                                  segment.path, offset + pos)
                        if segment is self.segments[-1] and not segment.sealed:
                            pos = os.fstat(fd).st_size - offset  # later appends are whole
                            break
                        self._next_cursor_segment()
                        moved_on = True
                        break
                    log.error("queue %s: DATA MAY HAVE BEEN LOST: damaged record head in %s at "
                              "offset %d; %d bytes skipped", self.queue_name, segment.path,
                              offset + pos, resume - offset - pos)
                    pos = resume - offset
                    break
                if record.opcode == records.OP_SEAL:
                    self._next_cursor_segment()
                    moved_on = True
                    break
                pos = end
                loaded.append(make_item(record))
                size += len(record.data)
            if moved_on:
                continue
            self._cursor_offset = offset + pos
            if pos == 0:
                if segment is self.segments[-1] and not segment.sealed:
                    break  # the end of the tail segment: nothing more on disk
                self._next_cursor_segment()  # an unsealed older segment: move on
        for item in loaded:
            item.in_segment = True
        return loaded

    def take_skipped(self) -> tuple[int, int]:
        """``(items, bytes)`` read-behind skipped as damaged since the last call."""
        skipped = self._skipped_items, self._skipped_bytes
        self._skipped_items = self._skipped_bytes = 0
        return skipped

    @staticmethod
    def _resync_segment(fd: int, segment: Segment, at: int):
        """The offset of the first valid record after the damaged head at ``at``."""
        rest = os.pread(fd, max(os.fstat(fd).st_size - at, 0), at)
        found = segment.format.resync(rest, 0) if rest else None
        return None if found is None else at + found

    def _cursor_fd_for(self, segment) -> int:
        if self._cursor_fd < 0 or self._cursor_path != segment.path:
            self._close_cursor()
            files = self.syncer.files
            self._cursor_fd = files.open(segment.path, os.O_RDONLY)
            self._cursor_path = segment.path
            self._cursor_offset = max(self._cursor_offset, segment.format.header_size)
            files.opened(self)
        self.used = True
        return self._cursor_fd

    # The read-behind cursor as a holder in descriptors.OpenFiles: closing it between
    # refills loses nothing, the offset is kept and the file reopened at the next one.

    def evictable(self) -> bool:
        return self._cursor_fd >= 0

    def evict(self) -> bool:
        self._close_cursor()
        return True

    def _next_cursor_segment(self) -> None:
        self._close_cursor()
        self._cursor_index += 1
        self._cursor_offset = records.HEADER_SIZE

    def _close_cursor(self) -> None:
        if self._cursor_fd >= 0:
            os.close(self._cursor_fd)  # read-only, never in the syncer's hands
            self._cursor_fd = -1
            self._cursor_path = ""
            self.syncer.files.closed(self)

    def drop_disk(self) -> None:
        """Forget the items on disk (flush): the cursor moves past every segment."""
        self._close_cursor()
        self._cursor_index = len(self.segments)
        self._cursor_offset = records.HEADER_SIZE

    # -- snapshot -----------------------------------------------------------------------

    def snapshot(self, next_id: int, head: int, front, run, held, background: bool = False) -> None:
        """Rewrite the journal with what only it holds; delete segments below ``head``.

        ``front``: items at the head out of id order; ``run``: the rest of memory
        (``in_segment`` items at or above ``head`` are not copied); ``held``: open reads.
        """

        def chunks():
            encode = self.journal.format
            if self.segments:  # without segments there is nothing for HEAD to point into
                yield encode.encode_id_op(records.OP_HEAD, head)
            for item in held:
                yield encode.encode_item(records.OP_HELD, item.id, item.flags, item.added_ms,
                                         item.expires_ms, item.data)
            for item in front:
                yield encode.encode_item(records.OP_FRONT, item.id, item.flags, item.added_ms,
                                         item.expires_ms, item.data)
            for item in run:
                if not (item.in_segment and item.id >= head):
                    yield encode.encode_add(item.id, item.flags, item.added_ms, item.expires_ms, item.data)

        if not self.journal.rewrite(next_id, chunks(), background):
            return  # another snapshot is being written; this one is not needed
        for item in held:
            item.in_segment = False
        for item in front:
            item.in_segment = False
        for item in run:
            if item.in_segment and item.id < head:
                item.in_segment = False
        failpoint("snapshot-before-segment-delete")
        self._delete_segments_below(head)

    def _delete_segments_below(self, head: int) -> None:
        """Delete every segment whose ids all lie below ``head``."""
        keep = []
        cursor_segment = (
            self.segments[self._cursor_index] if self._cursor_index < len(self.segments) else None
        )
        for index, segment in enumerate(self.segments):
            if segment.last_id >= head:
                keep.append(segment)
                continue
            if self.tail is not None and index == len(self.segments) - 1:
                self.tail.close()
                self.tail = None
            if self._cursor_path == segment.path:
                self._close_cursor()
            try:
                os.unlink(segment.path)
            except FileNotFoundError:
                pass
        self.segments = keep
        if cursor_segment is not None and cursor_segment in keep:
            self._cursor_index = keep.index(cursor_segment)
        else:
            self._cursor_index = len(keep) if cursor_segment is None else 0
            self._cursor_offset = records.HEADER_SIZE

    def first_disk_id(self) -> int:
        """The id of the next item the read-behind cursor would load.

        Read from a validated record, never from raw bytes: this id becomes the
        snapshot's HEAD, and segments below HEAD are deleted.  A damaged record at the
        cursor is passed over as read-behind will pass over it.
        """
        index, offset = self._cursor_index, self._cursor_offset
        while index < len(self.segments):
            segment = self.segments[index]
            fmt = segment.format
            pos = max(offset, fmt.header_size)
            with open(segment.path, "rb") as f:
                f.seek(pos)
                head = f.read(fmt.head_size)
                size = fmt.frame_length(head, 0)
                record = None
                if size is not None:
                    record, _end = fmt.decode_at(head + f.read(size - len(head)), 0)
                if not isinstance(record, records.Record):  # damage at the cursor
                    f.seek(pos)
                    record = next((r for event, _p, _n, r in records.walk(fmt, f.read(), 0)
                                   if event is records.RECORD), None)
            if record is not None and record.opcode == records.OP_ADD:
                return record.item_id
            index += 1  # a SEAL, or nothing valid: the next segment
            offset = records.HEADER_SIZE
        return 1 << 62

    # -- recovery -------------------------------------------------------------------------

    def recover(self, make_item, memory_budget: int, header_next_id: int = 1) -> Recovered:
        state = _ReplayState()
        result = Recovered()
        report, next_id = self.journal.open(lambda r: state.apply(r, make_item), header_next_id)
        result.report = report
        result.records = report.records
        self._load_segments()
        next_id = max(next_id, state.max_id + 1, state.head)
        if self.segments:
            next_id = max(next_id, self.segments[-1].last_id + 1)
        result.next_id = next_id
        # Items whose data is still in a segment (an open read or a given-back read of a
        # segment item): fetch them now.
        for item_id in [i for i, item in state.held.items() if item is None]:
            state.held[item_id] = self._fetch(item_id, make_item)
        front = deque()
        for entry in state.front:
            front.append(self._fetch(entry, make_item) if isinstance(entry, int) else entry)
        result.front = deque(item for item in front if item is not None)
        result.held = {i: item for i, item in state.held.items() if item is not None}
        lost = (len(front) - len(result.front)) + (len(state.held) - len(result.held))
        if lost:
            log.error("queue %s: DATA MAY HAVE BEEN LOST: %d open or given-back items had no data",
                      self.queue_name, lost)
        keep_from = state.head
        for item in list(result.front) + list(result.held.values()):
            if item.in_segment:
                keep_from = min(keep_from, item.id)
        self._delete_segments_below(keep_from)
        self._position_cursor(state.head)
        # Memory: journal items and segment items merged by id.  Every journal item is
        # loaded (they were in memory before the restart); segment items up to the
        # memory budget, and at least up to the last journal item so the order holds.
        journal_items = list(state.journal_items.values())
        last_journal_id = journal_items[-1].id if journal_items else 0
        size = sum(len(item.data) for item in journal_items)
        disk_count, disk_bytes = self._live_on_disk(state.head)
        loaded = []
        while disk_count > len(loaded):
            need_order = loaded[-1].id < last_journal_id if loaded else last_journal_id > 0
            if size >= memory_budget and not need_order:
                break
            batch = self.read_behind(max(memory_budget - size, 1), make_item)
            skipped_items, skipped_bytes = self.take_skipped()
            disk_count -= skipped_items
            disk_bytes -= skipped_bytes
            if not batch:
                log.error("queue %s: segments hold %d fewer items than counted",
                          self.queue_name, disk_count - len(loaded))
                disk_count = len(loaded)
                break
            loaded.extend(batch)
            size += sum(len(item.data) for item in batch)
        result.run = list(heapq.merge(journal_items, loaded, key=lambda item: item.id))
        result.disk_count = disk_count - len(loaded)
        result.disk_bytes = disk_bytes - sum(len(item.data) for item in loaded)
        return result

    def _load_segments(self) -> None:
        found = self.found_segments
        if found is None:
            found = list_segments(self.data_dir, self.queue_name)
        self.found_segments = None
        self.segments = []
        for index, (first_id, path) in enumerate(found):
            segment = Segment(first_id, path)
            last = index == len(found) - 1
            try:
                if not last and self._read_seal(segment):
                    self.segments.append(segment)
                    continue
                self._open_whole(segment, last)
            except DamagedHeader as exc:
                self._quarantine_segment(path, exc.reason)
                continue
            self.segments.append(segment)

    def _open_whole(self, segment: Segment, last: bool) -> None:
        """Read a segment whole: the last one, or one without a valid seal (or in an
        older format, which this rewrites in the current one)."""
        path = segment.path
        journal = Journal(path, self.queue_name, self.journal.policy, self.syncer)

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
                        self.queue_name, path, seg_report.torn_tail_bytes)
        if seg_report.damaged:
            log.error("queue %s: DATA MAY HAVE BEEN LOST: corrupt records in segment %s: %s%s",
                      self.queue_name, path, seg_report.corrupt,
                      f" (damaged file kept as {seg_report.damaged_copy})" if seg_report.damaged_copy else "")
        segment.size = journal.size
        segment.format = journal.format
        if last and not segment.sealed:
            self.tail = journal
        else:
            journal.close()

    def _quarantine_segment(self, path: str, reason: str) -> None:
        target = quarantine_file(path)
        log.error("queue %s: DATA MAY HAVE BEEN LOST: segment %s is unreadable (%s); moved aside "
                  "as %s, the rest of the queue is served", self.queue_name, path, reason, target)

    @staticmethod
    def _read_seal(segment: Segment) -> bool:
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
                if file_format.version != records.JOURNAL_VERSION:
                    return False  # reading it whole rewrites it in the current format
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

    def _scan(self, segment: Segment):
        """Every valid ADD record of a segment, in order (recovery only)."""
        with open(segment.path, "rb") as f:
            buf = f.read()
        fmt = segment.format
        for event, pos, _next, record in records.walk(fmt, buf, fmt.header_size):
            if event is records.RECORD and record.opcode == records.OP_ADD:
                yield record, pos

    def _fetch(self, item_id: int, make_item):
        for segment in self.segments:
            if segment.first_id <= item_id <= segment.last_id:
                for record, _pos in self._scan(segment):
                    if record.item_id == item_id:
                        item = make_item(record)
                        item.in_segment = True
                        return item
        return None

    def _position_cursor(self, head: int) -> None:
        """Put the read-behind cursor on the first segment record at or above ``head``."""
        self._close_cursor()
        for index, segment in enumerate(self.segments):
            if segment.last_id < head:
                continue
            self._cursor_index = index
            self._cursor_offset = records.HEADER_SIZE
            if segment.first_id < head:
                for record, pos in self._scan(segment):
                    if record.item_id >= head:
                        self._cursor_offset = pos
                        break
            return
        self._cursor_index = len(self.segments)
        self._cursor_offset = records.HEADER_SIZE

    def _live_on_disk(self, head: int) -> tuple[int, int]:
        count = total = 0
        for segment in self.segments[self._cursor_index:]:
            if segment.first_id >= head:
                count += segment.count
                total += segment.bytes
            else:
                for record, _pos in self._scan(segment):
                    if record.item_id >= head:
                        count += 1
                        total += len(record.data)
        return count, total

    # -- lifetime -------------------------------------------------------------------------

    def keep_damaged_copy(self) -> str:
        return self.journal.keep_damaged_copy()

    def quarantine(self) -> list[tuple[str, str]]:
        """Move the journal and every segment of this queue aside, under names the data
        directory scan never loads or deletes; ``[(path, moved_to)]``."""
        self.close()
        moved = []
        paths = [self.journal.path] + [path for _first, path in list_segments(self.data_dir, self.queue_name)]
        for path in paths:
            if os.path.exists(path):
                moved.append((path, quarantine_file(path)))
        return moved

    def close(self) -> None:
        self._close_cursor()
        self.journal.close()
        if self.tail is not None:
            self.tail.close()
            self.tail = None

    def erase(self) -> None:
        self.close()
        self.journal.erase()
        for segment in self.segments:
            try:
                os.unlink(segment.path)
            except FileNotFoundError:
                pass
        self.segments = []
        try:
            os.unlink(os.path.join(self.data_dir, file_stem(self.queue_name) + NAME_SUFFIX))
        except FileNotFoundError:
            pass


__all__ = ["QueueStore", "Recovered"]
