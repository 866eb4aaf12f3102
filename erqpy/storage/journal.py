"""One append-only journal file per queue, its replay and its rewrite.

This module knows files, offsets and fsync; it knows nothing of sockets or of memcache.
The byte format is in ``records``.

Durability contract:

* ``append`` writes each record with one ``os.write`` on an unbuffered descriptor, so a
  record that ``append`` returned for is in the kernel and survives a process crash.
* Power loss is covered by fsync, by the journal's policy, which ``syncer.Syncer`` applies.
"""

import errno
import logging
import os

from erqpy.storage import filewrite, records, recordwalk
from erqpy.errors import JournalWriteError
from erqpy.storage.datadir import damaged_copy_path, file_mode, temporary_path, unlink_quietly, write_all
from erqpy.storage.failpoints import failpoint
from erqpy.storage.syncer import FSYNC_ALWAYS, FSYNC_INTERVAL, Syncer, fsync_dir

log = logging.getLogger("erqpy.journal")

#: Rewrites at least this large are written by a worker thread while the queue keeps
#: serving; smaller ones are written in place, which costs less than the handoff.
BACKGROUND_REWRITE_BYTES = 256 * 1024
#: A large rewrite encodes this much on the hub between two writes by the worker thread
#: (about 2 ms of encoding for 1 KiB records on a loaded 2-core machine; issue 12).
REWRITE_STEP_BYTES = 256 * 1024
#: Records appended while a large rewrite was written are copied to the new file off
#: the hub while they are at least this large, at most CAPTURE_ROUNDS_OFF_HUB times;
#: what is left is copied on the hub, where the switch to the new file happens.
CAPTURE_ON_HUB_BYTES = 64 * 1024
CAPTURE_ROUNDS_OFF_HUB = 4

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


class Journal:
    """An open journal file for one queue.

    Its descriptor may be closed while the journal is idle (``evict``, to stay under
    ``max_open_files``) and is reopened by the next append.  ``close`` is final: an
    append after it fails with EBADF instead of writing to whatever file or socket got
    that descriptor number meanwhile.
    """

    __slots__ = ("path", "queue_name", "fd", "size", "policy", "syncer", "rewrites", "_capture",
                 "_rewriting", "closed", "used", "format")

    def __init__(self, path: str, queue_name: str, policy: str, syncer: "Syncer"):
        self.path = path
        self.queue_name = queue_name
        self.policy = policy
        self.syncer = syncer
        self.fd = -1
        self.size = 0
        self.rewrites = 0
        self._capture: list | None = None  # records appended while a background rewrite runs
        self._rewriting = False  # a rewrite is under way (it may be waiting for a thread)
        self.closed = False
        self.used = False  # for the LRU of open files (descriptors.OpenFiles)
        # Encodes every record appended or rewritten: the current version, with this
        # file's salt (records.V2Format).
        self.format: records.V2Format = None  # type: ignore[assignment]  # set by open() before any use

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
        return self.fd >= 0 and self._capture is None and not self.syncer.fsyncing(self.fd)

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
        """Write one record; raise ``JournalWriteError`` if it did not all land."""
        try:
            try:
                written = os.write(self.fd, record)
            except OSError as exc:
                # fd -1: evicted while idle (reopen: the only cost of the LRU on this path)
                # or closed for good (EBADF is the answer).
                if exc.errno != errno.EBADF or self.fd >= 0 or self.closed:
                    raise
                self._reopen()
                written = os.write(self.fd, record)
            while written < len(record):  # only on a signal or a nearly full disk
                written += os.write(self.fd, record[written:])
        except OSError as exc:
            self._undo_partial_write()
            raise JournalWriteError(self.queue_name, exc) from exc
        self.used = True
        self.size += written
        if self._capture is not None:
            self._capture.append(record)
        if self.policy == FSYNC_INTERVAL:
            self.syncer.dirty.add(self)
        elif self.policy == FSYNC_ALWAYS:
            self.syncer.dirty.add(self)
            self.syncer.write_seq += 1

    def _undo_partial_write(self) -> None:
        # A half-written record would sit in front of later ones; cut it off so the
        # file stays a clean sequence (replay would drop it anyway, but loudly).
        if self.fd < 0:
            return
        try:
            os.ftruncate(self.fd, self.size)
        except OSError:
            log.exception("%s: could not truncate a partial write", self.path)

    def rewrite(self, next_id: int, chunks, background: bool = False) -> bool:
        """Replace the file by a header and ``chunks`` (encoded records), atomically.

        The new file is written beside the old one under a temporary name, fsynced, and
        renamed over it; a crash at any point leaves either the old or the new file.

        A large rewrite goes on while the hub keeps serving: ``chunks`` is encoded on
        the hub a step (``REWRITE_STEP_BYTES``) at a time and each step is written by a
        worker thread, which touches nothing but the new file; the records appended to
        the old file meanwhile are captured and added to the new one before the rename.
        That is correct because replay applies records by item id: records that follow
        a snapshot apply on top of it.  ``chunks`` must therefore read only what does
        not change under it (the caller takes what does at the start, see
        ``segments.QueueStore.snapshot``).  Returns False when the rewrite did not
        happen (another one was running, or the journal was closed).
        ``background`` sends even a small rewrite to the worker thread (the sweep's idle
        compactions: many small fsyncs that must not hold up the hub).
        """
        if self._capture is not None or self._rewriting:
            return False
        header = self.format.encode_header(next_id)
        chunks = iter(chunks)
        first, total, more = filewrite.take_step(chunks, [header], len(header), BACKGROUND_REWRITE_BYTES)
        # A large old file goes off the hub too: its fsynced replacement may be small, but
        # closing the old one frees its blocks (a 16 MiB journal of REMOVE records: 15 ms).
        background = background or more or self.size >= BACKGROUND_REWRITE_BYTES
        tmp = temporary_path(self.path)
        self._rewriting = True
        try:
            # Any failure before the rename (a full disk, no descriptor left) leaves the
            # old file in place and no temporary file behind; the caller decides.
            try:
                if background:
                    total = self._write_in_steps(tmp, first, total, more, chunks)
                    if total < 0:  # erased while the thread wrote
                        unlink_quietly(tmp)
                        return False
                else:
                    filewrite.write_file(tmp, first, file_mode(), self.syncer.files.open)
                # Opened before the rename, so that once the new file is in place there
                # is nothing left that can fail and leave appends going to the old one.
                new_fd = self.syncer.files.open(tmp, os.O_WRONLY | os.O_APPEND)
            except BaseException:
                unlink_quietly(tmp)
                raise
            try:
                failpoint("rewrite-before-rename")
                os.rename(tmp, self.path)
            except BaseException:
                os.close(new_fd)
                unlink_quietly(tmp)
                raise
            old, self.fd = self.fd, new_fd
            # The old file's last descriptor: closing it frees the replaced file's blocks,
            # tens of ms for 100 MiB, so a large rewrite closes it off the hub.
            close_later = background and old >= 0 and not self.syncer.fsyncing(old)
            if old >= 0 and not close_later:
                self.syncer.close_fd(old)
            self.syncer.files.opened(self)
            self.syncer.dirty.discard(self)
            self.size = total
            self.rewrites += 1
            try:
                # The switch is made: appends go to the new file while a large rewrite's
                # directory fsync runs off the hub.
                if background:
                    filewrite.off_the_hub(filewrite.close_and_fsync_dir, old if close_later else -1,
                                          os.path.dirname(self.path))
                else:
                    fsync_dir(os.path.dirname(self.path))
            except OSError as exc:
                # The new file is in place and complete; only the rename may not survive a
                # power loss (then the old file comes back, missing the latest records).
                log.error("%s: fsync of the directory after a rewrite failed: %s", self.path, exc)
        finally:
            self._rewriting = False
        failpoint("rewrite-after-rename")
        return True

    def _write_in_steps(self, tmp: str, first: list, total: int, more: bool, chunks) -> int:
        """Write ``first`` and the rest of ``chunks`` (``more``: there is a rest) to ``tmp``
        from a worker thread, a step at a time, then what was appended to the old file meanwhile; fsynced.  The
        file's size, or -1 when the journal was closed meanwhile."""
        self._capture = []
        fd = -1
        try:
            fd = self.syncer.files.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, file_mode())
            step = first
            while True:
                filewrite.off_the_hub(write_all, fd, b"".join(step))  # the hub serves meanwhile
                if not more:
                    break
                step, size, more = filewrite.take_step(chunks, [], 0, REWRITE_STEP_BYTES)
                total += size
            filewrite.off_the_hub(os.fsync, fd)
            # What was appended meanwhile: the bulk of it off the hub too, then the rest
            # on the hub, where nothing yields, so that no append slips between the
            # captured records and the switch to the new file.
            for _ in range(CAPTURE_ROUNDS_OFF_HUB):
                if sum(map(len, self._capture)) < CAPTURE_ON_HUB_BYTES:
                    break
                captured, self._capture = self._capture, []
                total += filewrite.off_the_hub(filewrite.append_synced, fd, b"".join(captured))
            captured, self._capture = self._capture, None
            if self.closed:
                return -1
            if captured:
                total += filewrite.append_synced(fd, b"".join(captured))
        finally:
            self._capture = None
            if fd >= 0:
                os.close(fd)
        return total

    def close(self) -> None:
        """Close for good (queue closed or deleted, segment sealed)."""
        self.closed = True
        self.syncer.dirty.discard(self)
        self._release_fd()

    def erase(self) -> None:
        """Close and delete the file (the queue was deleted)."""
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
