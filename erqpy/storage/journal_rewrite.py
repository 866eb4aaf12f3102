"""A journal's rewrite: the file replaced by a snapshot of its queue, atomically, while
the queue keeps serving (``JournalRewrite.rewrite``, a part of ``journal.Journal``)."""

import logging
import os
from typing import TYPE_CHECKING

from erqpy.storage import filewrite, records
from erqpy.storage.datadir import file_mode, temporary_path, unlink_quietly, write_all
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


class JournalRewrite:
    """``Journal``'s rewrite: the state it changes is declared here."""

    __slots__ = ("fd", "size", "rewrites", "_capture", "_rewriting", "_tail_unsynced")
    fd: int  # the journal's descriptor, -1 while evicted or closed
    size: int  # its bytes, those left for a group write too (Journal.unwritten)
    rewrites: int
    _capture: list | None  # records appended while a background rewrite runs
    _rewriting: bool  # a rewrite is under way (it may be waiting for a thread)
    _tail_unsynced: bool  # the new file's last captured records await the syncer's fsync
    # The journal's (journal.Journal).
    path: str
    policy: str
    closed: bool
    syncer: Syncer
    format: records.V2Format

    if TYPE_CHECKING:
        def write_pending_now(self) -> None: ...

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
        # The snapshot in ``chunks`` includes what the pending records did; written
        # after the switch they would apply twice.
        self.write_pending_now()
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
            if self._tail_unsynced and self.policy == FSYNC_INTERVAL:
                self.syncer.dirty.add(self)
            else:
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
            self._tail_unsynced = False
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
            # captured records and the switch to the new file.  That rest is fsynced
            # there only under ``always``, whose records were acknowledged after an
            # fsync; under ``interval`` the syncer's next round fsyncs it (an fsync on
            # the hub waits for the device, hundreds of ms with gigabytes under
            # writeback), which is the policy's promise for any record; ``never`` leaves
            # it to the OS.
            for _ in range(CAPTURE_ROUNDS_OFF_HUB):
                if sum(map(len, self._capture)) < CAPTURE_ON_HUB_BYTES:
                    break
                captured, self._capture = self._capture, []
                total += filewrite.off_the_hub(filewrite.append_synced, fd, b"".join(captured))
            captured, self._capture = self._capture, None
            if self.closed:
                return -1
            if captured and self.policy == FSYNC_ALWAYS:
                total += filewrite.append_synced(fd, b"".join(captured))
            elif captured:
                total += write_all(fd, b"".join(captured))
                self._tail_unsynced = True
        finally:
            self._capture = None
            if fd >= 0:
                os.close(fd)
        return total
