"""QueueStore: the files of one queue, its segments and read-behind, and its snapshot.

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
cost of compaction is the size of memory, not of the queue.  How the state is rebuilt
from these files at start-up is ``recovery``.
"""

import logging
import os

from erqpy.storage import filewrite, readahead, records, recordwalk, snapshot
from erqpy.storage.failpoints import failpoint
from erqpy.storage.datadir import (NAME_SUFFIX, file_stem, journal_path, list_segments, quarantine_file,
                                   record_long_name, segment_path)
from erqpy.storage.items import item_from_segment_record
from erqpy.storage.journal import Journal

log = logging.getLogger("erqpy.store")

#: Bytes read from a segment at a time during read-behind: a refill step
#: (queuefiles.REFILL_STEP_BYTES), so that a step reads what it decodes.
READ_CHUNK = 64 * 1024


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
        # records.V2Format of the file (its salt), from its header; set when it is opened.
        self.format: records.V2Format = None  # type: ignore[assignment]


class QueueStore:
    """The journal and segment files of one queue."""

    def __init__(self, data_dir: str, queue_name: str, policy: str, syncer, segment_size: int):
        self.data_dir = data_dir
        self.queue_name = queue_name
        self.syncer = syncer
        self.segment_size = segment_size
        record_long_name(data_dir, queue_name)
        self.journal = Journal(journal_path(data_dir, queue_name), queue_name, policy, syncer, groups=True)
        self.segments = []  # Segment, oldest first
        # The snapshot being written, told of deliveries made meanwhile (``snapshot``).
        self.taking: snapshot.TakenNow | None = None
        self.tail: Journal | None = None  # Journal of the last segment while it takes appends
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
        self.ahead = readahead.Frontier()  # its pages read ahead by a thread
        self.used = False  # the cursor's descriptor is in the LRU of open files
        # Set by a caller that has listed the directory already (segments_by_stem).
        self.found_segments = None
        # A compaction asked for on the event loop waits in a greenlet (queuefiles).
        self.compact_deferred = False

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
        assert self.tail is not None  # called only while a segment takes appends
        segment = self.segments[-1]
        self.tail.append(self.tail.format.encode_seal(segment.count, segment.bytes, segment.last_id))
        segment.size = self.tail.size
        segment.sealed = True
        self.tail.close()
        self.tail = None
        self.rotations += 1
        failpoint("segment-after-seal")

    # -- read-behind --------------------------------------------------------------------

    def read_behind(self, max_bytes: int, may_wait: bool = True) -> list:
        """Load segment items at the cursor, up to ``max_bytes`` (at least one item), each
        marked ``in_segment`` (``items.item_from_segment_record``).

        ``may_wait`` False: only what the page cache holds (``readahead.read_cached``),
        perhaps nothing; past the first page not cached the cursor waits for a call that
        may wait.  A damaged record costs only itself: one whose head checks out is
        skipped by its length; after a damaged head the rest of the segment is searched
        for the next valid record (sound because of the file's salt; see ``records``).
        """
        loaded = []
        size = 0
        read = os.pread if may_wait else readahead.read_cached
        while (not loaded or size < max_bytes) and self._cursor_index < len(self.segments):
            segment = self.segments[self._cursor_index]
            decode_at = segment.format.decode_at
            fd = self._cursor_fd_for(segment)
            offset = self._cursor_offset
            self.ahead.keep_ahead(self.segments, self._cursor_index, offset)
            chunk = read(fd, READ_CHUNK, offset)
            # Short without waiting: not cached, or the end; only a read that may wait
            # tells them apart (and so moves on past an unsealed segment's end).
            cut_short = not may_wait and len(chunk) < READ_CHUNK
            pos = 0
            moved_on = False
            while pos < len(chunk) and (not loaded or size < max_bytes):
                record, end = decode_at(chunk, pos)
                if record is records.INCOMPLETE:
                    if pos == 0 and not cut_short:  # one record larger than the chunk: read it whole
                        needed = segment.format.frame_length(chunk, 0) or 0
                        if needed > len(chunk):
                            bigger = read(fd, needed, offset)
                            if len(bigger) == needed:
                                chunk = bigger
                                continue
                            cut_short = not may_wait
                    break
                if record is records.DAMAGED:
                    if chunk[pos + 4] == records.OP_ADD:  # the head, and so the opcode, is valid
                        self._skipped_items += 1
                        self._skipped_bytes += end - pos - records.ADD_RECORD_OVERHEAD
                    log.error("queue %s: DATA MAY HAVE BEEN LOST: damaged record in %s at offset %d; "
                              "%d bytes skipped", self.queue_name, segment.path, offset + pos, end - pos)
                    pos = end
                    break  # read on from the record after it
                if record is records.UNFRAMED:
                    if not may_wait:  # searching the rest of the file would wait
                        cut_short = True
                        break
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
                loaded.append(item_from_segment_record(record))
                size += len(record.data)
            if moved_on:
                continue
            self._cursor_offset = offset + pos
            if cut_short:
                break
            if pos == 0:
                if segment is self.segments[-1] and not segment.sealed:
                    break  # the end of the tail segment: nothing more on disk
                self._next_cursor_segment()  # an unsealed older segment: move on
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
        self.ahead.moved_on()

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
        self.ahead = readahead.Frontier()

    # -- snapshot -----------------------------------------------------------------------

    def snapshot(self, next_id: int, run, front, rest, held, background: bool = False) -> None:
        """Rewrite the journal with what only it holds; delete segments below its head.

        ``run``: the default level's items after the front, copied as the snapshot goes
        (``snapshot.RunCopy``; its ``in_segment`` items at or above its head are not
        copied); ``front``: items at the head out of id order, then the other priority
        levels' items in their order; ``rest``: the other levels' remaining items and the
        delayed ones (copied always); ``held``: open reads.  A delayed or prioritised
        item's record follows its ATTRS.
        """
        if self.taking is not None:
            return  # another snapshot is being written; this one is not needed
        taken = self.taking = snapshot.TakenNow(held, front, rest)  # before the first yield
        try:
            # Without segments there is nothing for HEAD to point into.
            chunks = snapshot.records_of(self.journal.format, bool(self.segments), held, front, run, rest, taken)
            if not self.journal.rewrite(next_id, chunks, background):
                return  # another rewrite is being written, or the journal was closed
            snapshot.data_now_in_journal(held, front, run, rest, taken)
        finally:
            self.taking = None
        if self.journal.closed:
            return  # deleted while data_now_in_journal gave way: its files are gone
        failpoint("snapshot-before-segment-delete")
        doomed = self._delete_segments_below(run.head, unlink=False)
        if doomed:
            # Unlinking a 16 MiB segment frees its blocks (15 ms here): off the hub.  The
            # queue no longer knows these files; a crash first leaves them below HEAD,
            # where recovery deletes them.
            filewrite.off_the_hub(filewrite.unlink_all, doomed)

    def _delete_segments_below(self, head: int, unlink: bool = True) -> list[str]:
        """Forget every segment whose ids all lie below ``head``, and delete its file
        unless ``unlink`` is False; the paths of those files."""
        doomed = []
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
            doomed.append(segment.path)
        if unlink:
            filewrite.unlink_all(doomed)
        self.segments = keep
        if cursor_segment is not None and cursor_segment in keep:
            self._cursor_index = keep.index(cursor_segment)
        else:
            self._cursor_index = len(keep) if cursor_segment is None else 0
            self._cursor_offset = records.HEADER_SIZE
        return doomed

    def first_disk_id(self) -> int:
        """The id of the next item the read-behind cursor would load (1 << 62: none);
        from a validated record, never raw bytes (``recordwalk.first_add_id``)."""
        return recordwalk.first_add_id(self.segments, self._cursor_index, self._cursor_offset)

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


__all__ = ["QueueStore", "Segment"]
