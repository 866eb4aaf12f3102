"""One append-only journal file per queue, its replay and its rewrite.

This module knows files, offsets and fsync; it knows nothing of sockets or of memcache.
The byte format is in ``records``.

Durability contract:

* ``append`` writes each record with one ``os.write`` on an unbuffered descriptor, so a
  record that ``append`` returned for is in the kernel and survives a process crash;
  except while the syncer groups the records of a loop turn (``Syncer.grouping``): then
  the record waits in ``Syncer.pending`` until ``write_pending``, which runs before any
  reply that acknowledges it is sent.  Whatever writes to the file next (an append that
  cannot wait, a rewrite, closing it) writes the pending records first, so the file
  keeps the order of the appends.
* Power loss is covered by fsync, by the journal's policy, which ``syncer.Syncer`` applies.
"""

import errno
import logging
import os

from gevent import getcurrent

from erqpy.storage import records, recordwalk
from erqpy.errors import JournalWriteError
from erqpy.storage.datadir import damaged_copy_path, file_mode, unlink_quietly, write_all
from erqpy.storage.journal_rewrite import (  # noqa: F401  (their home for the callers)
    BACKGROUND_REWRITE_BYTES, REWRITE_STEP_BYTES, JournalRewrite)
from erqpy.storage.syncer import FSYNC_ALWAYS, FSYNC_INTERVAL, Syncer

log = logging.getLogger("erqpy.journal")

class DamagedHeader(records.BadHeader):
    """A file's header is damaged, so none of its records can be validated (the
    header holds the salt their checksums start from)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ReplayReport:
    """What replay found besides records: a torn tail and damaged stretches."""

    __slots__ = ("records", "valid_end", "torn_tail_bytes", "corrupt", "damaged_copy", "upgraded_from")

    def __init__(self):
        self.records = 0
        self.valid_end = records.HEADER_SIZE
        self.torn_tail_bytes = 0  # bytes after the last valid record, truncated
        self.corrupt = []  # (offset, dropped_bytes) of each damaged stretch
        self.damaged_copy = ""  # where open copied the file before it dropped damage
        self.upgraded_from = 0  # the file's format version, when it was older

    @property
    def damaged(self) -> bool:
        return bool(self.corrupt)


class Journal(JournalRewrite):
    """An open journal file for one queue.

    Its descriptor may be closed while the journal is idle (``evict``, to stay under
    ``max_open_files``) and is reopened by the next append.  ``close`` is final: an
    append after it fails with EBADF instead of writing to whatever file or socket got
    that descriptor number meanwhile.
    """

    __slots__ = ("path", "queue_name", "policy", "syncer", "closed", "used", "format", "groups",
                 "unwritten")  # and JournalRewrite's

    def __init__(self, path: str, queue_name: str, policy: str, syncer: "Syncer", groups: bool = False):
        self.path = path
        # Its records may wait for the turn's group write (a queue's own journal; not a
        # read-behind segment, which the refill reads back from the file).
        self.groups = groups
        self.unwritten = 0  # bytes of records in syncer.pending, counted in size already
        self.queue_name = queue_name
        self.policy = policy
        self.syncer = syncer
        self.fd = -1
        self.size = 0
        self.rewrites = 0
        self._capture = None
        self._rewriting = False
        self._tail_unsynced = False
        self.closed = False
        self.used = False  # for the LRU of open files (descriptors.OpenFiles)
        # Encodes every record appended or rewritten: the current version, with this
        # file's salt (records.V2Format).
        self.format = None  # type: ignore[assignment]  # set by open() before any use

    # -- opening and replay ---------------------------------------------------------

    def open(self, apply, next_id: int = 1):
        """Open the file, creating it with a header when missing.

        Calls ``apply(record)`` for every valid record in order and returns a
        ``ReplayReport`` and the header's ``next_id``.  A torn tail is truncated here;
        damage is skipped and reported (the caller rewrites the file; a copy is kept
        first when this drops damaged bytes itself).  A file in an older format is
        rewritten in the current one.
        Raises ``DamagedHeader`` when the header is unreadable.
        """
        report = ReplayReport()
        if not os.path.exists(self.path):
            self._create(next_id)
            return report, next_id
        with open(self.path, "rb") as f:
            buf = f.read()
        try:
            file_format, header_next_id = records.decode_header(buf)
        except records.BadHeader as exc:
            if len(buf) < records.HEADER_SIZE and not buf.strip(b"\0"):
                # A crash while the file was being created: nothing was acknowledged.
                log.warning("%s: empty journal header, starting empty", self.path)
                self._create(next_id)
                return report, next_id
            if len(buf) < records.V1_HEADER_SIZE:
                raise DamagedHeader(self.path, f"{len(buf)} bytes, shorter than a header") from None
            raise DamagedHeader(self.path, str(exc)) from None
        legacy = file_format.version != records.JOURNAL_VERSION
        self.format = records.V2Format() if legacy else file_format
        upgraded = [] if legacy else None
        end = len(buf)
        report.valid_end = end
        for event, pos, next_pos, record in recordwalk.walk(file_format, buf, file_format.header_size):
            if event is recordwalk.RECORD:
                report.records += 1
                apply(record)
                if upgraded is not None:
                    upgraded.append(self.format.encode_record(record))
            elif event is recordwalk.SKIPPED:
                report.corrupt.append((pos, next_pos - pos))
            elif event is recordwalk.TORN:
                report.torn_tail_bytes = end - pos
                report.valid_end = pos
            else:  # GIVEN_UP: damage with no boundary to resume at; the copy keeps it
                report.corrupt.append((pos, end - pos))
                report.valid_end = pos
        if report.damaged and (report.valid_end < end or legacy):
            # Open itself is about to drop damaged bytes: keep them first.  Otherwise
            # the file is untouched and the caller copies it if it rewrites it.
            report.damaged_copy = self.keep_damaged_copy()
        self._set_fd(self.syncer.files.open(self.path, os.O_WRONLY | os.O_APPEND))
        if report.valid_end < end:
            os.ftruncate(self.fd, report.valid_end)
        self.size = report.valid_end
        if legacy:
            report.upgraded_from = file_format.version
            self.rewrite(header_next_id, upgraded)
            log.info("%s: rewritten from format version %d to %d", self.path, file_format.version,
                     records.JOURNAL_VERSION)
        return report, header_next_id

    def _create(self, next_id: int) -> None:
        """A new file holding a header; on failure (a full disk) nothing is left behind,
        neither the file nor its descriptor."""
        fd = self.syncer.files.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, file_mode())
        self.format = records.V2Format()
        header = self.format.encode_header(next_id)
        try:
            write_all(fd, header)
        except OSError as exc:
            os.close(fd)
            unlink_quietly(self.path)
            raise JournalWriteError(self.queue_name, exc) from exc
        self._set_fd(fd)
        self.size = len(header)

    # -- the descriptor -------------------------------------------------------------

    def _set_fd(self, fd: int) -> None:
        self.fd = fd
        self.syncer.files.opened(self)

    def evictable(self) -> bool:
        # A background rewrite switches descriptors when it ends: not under it.  A
        # descriptor a flush round is fsyncing would only be closed when the round ends
        # (Syncer.close_fd), which frees nothing now.
        return (self.fd >= 0 and self._capture is None and not self.unwritten
                and not self.syncer.fsyncing(self.fd))

    def evict(self) -> bool:
        """Close the descriptor of an idle journal; the next append reopens it.

        Writes not yet fsynced are fsynced first (here, on the hub: this happens only
        under descriptor pressure), because the syncer can only fsync an open file.
        False when that fsync fails: the journal stays open and dirty, and the syncer's
        next round reports the error to the writers waiting on it.
        """
        if self.fd >= 0 and self in self.syncer.dirty:
            try:
                os.fsync(self.fd)
            except OSError as exc:
                log.error("%s: fsync before closing an idle journal failed: %s", self.path, exc)
                return False
            self.syncer.dirty.discard(self)
        self._release_fd()
        return True

    def _release_fd(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            self.syncer.close_fd(fd)
        self.syncer.files.closed(self)

    def _reopen(self) -> None:
        self._set_fd(self.syncer.files.open(self.path, os.O_WRONLY | os.O_APPEND))

    # -- writing ------------------------------------------------------------------

    def append(self, record: bytes) -> None:
        """Write one record, or leave it for the turn's group write (``Syncer.grouping``);
        raise ``JournalWriteError`` if it did not all land."""
        syncer = self.syncer
        grouping = syncer.grouping
        # While the loop's callback groups, nothing else runs (it never yields).
        if (grouping is not None and (grouping is syncer.hub or grouping is getcurrent()) and self.groups
                and self.policy != FSYNC_ALWAYS and not self._rewriting):
            size = len(record)
            self.unwritten += size  # first: note_pending may write it at once
            self.size += size
            syncer.note_pending(self, record)
            return
        if self.unwritten:  # the turn's records go first, in the same write
            parts = syncer.pending.pop(self)
            parts.append(record)
            record = b"".join(parts)
            try:
                self._write(record)
            except OSError as exc:
                self._lose_pending(exc)
                raise JournalWriteError(self.queue_name, exc) from exc
        else:
            try:
                self._write(record)
            except OSError as exc:
                raise JournalWriteError(self.queue_name, exc) from exc
        self._written(record)

    def write_pending(self) -> int:
        """Write the records left in ``Syncer.pending`` (``Syncer.write_pending``): how
        many bytes; 0, logged and counted, when the write failed."""
        parts = self.syncer.pending.pop(self, None)
        if not parts:
            return 0
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        try:
            self._write(data)
        except OSError as exc:
            self._lose_pending(exc)
            return 0
        self._written(data)
        return len(data)

    def _write(self, data: bytes) -> None:
        """All of ``data`` at the end of the file, or OSError with nothing of it left."""
        try:
            try:
                written = os.write(self.fd, data)
            except OSError as exc:
                # fd -1: evicted while idle (reopen: the only cost of the LRU on this path)
                # or closed for good (EBADF is the answer).
                if exc.errno != errno.EBADF or self.fd >= 0 or self.closed:
                    raise
                self._reopen()
                written = os.write(self.fd, data)
            while written < len(data):  # only on a signal or a nearly full disk
                written += os.write(self.fd, data[written:])
        except OSError:
            self._undo_partial_write()
            raise

    def _written(self, data: bytes) -> None:
        self.used = True
        self.size += len(data) - self.unwritten  # the pending part was counted already
        self.unwritten = 0
        if self._capture is not None:
            self._capture.append(data)
        if self.policy == FSYNC_INTERVAL:
            self.syncer.dirty.add(self)
        elif self.policy == FSYNC_ALWAYS:
            self.syncer.dirty.add(self)
            self.syncer.write_seq += 1

    def _lose_pending(self, exc: OSError) -> None:
        """The turn's records for this file could not be written.  The commands they
        belong to have changed the queue in memory already and cannot be refused one by
        one; their replies are withheld (``Syncer.group_failures``)."""
        log.critical("%s: DATA MAY NOT BE ON DISK: a group write of %d bytes failed (%s); the "
                     "connections waiting for it are closed unanswered", self.path, self.unwritten, exc)
        self.size -= self.unwritten
        self.unwritten = 0
        self.syncer.lost_pending()

    def write_pending_now(self) -> None:
        """Write this journal's pending records at once (before a rewrite or a close,
        and before the other half of a move between two queues)."""
        if self.unwritten:
            self.write_pending()

    def _undo_partial_write(self) -> None:
        # A half-written record would sit in front of later ones; cut it off so the
        # file stays a clean sequence (replay would drop it anyway, but loudly).
        if self.fd < 0:
            return
        try:
            os.ftruncate(self.fd, self.size - self.unwritten)
        except OSError:
            log.exception("%s: could not truncate a partial write", self.path)

    def close(self) -> None:
        """Close for good (queue closed or deleted, segment sealed)."""
        self.write_pending_now()
        self.closed = True
        self.syncer.dirty.discard(self)
        self._release_fd()

    def erase(self) -> None:
        """Close and delete the file (the queue was deleted)."""
        if self.syncer.pending.pop(self, None):
            self.size -= self.unwritten
            self.unwritten = 0
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def keep_damaged_copy(self) -> str:
        """Copy the current file aside before a rewrite replaces damaged data."""
        target = damaged_copy_path(self.path)
        with open(self.path, "rb") as src:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, file_mode())
            with open(fd, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        return target
