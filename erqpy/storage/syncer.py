"""Fsync policy and the syncer that applies it to journals.

Power loss is covered by fsync, by policy: ``always`` (the caller waits for
``Syncer.wait_durable`` before it replies; every writer waiting at the same moment shares
one fsync, which is group commit), ``interval`` (a background fsync every ``interval``
seconds of whatever was written), ``never`` (the OS decides).  fsync runs in gevent's
thread pool, so the hub keeps serving other connections while a disk flush is in flight;
that is what lets writes pile up into one group commit.

Records of one event-loop turn are written together (group write): while a batch is
served from the loop's callback (``server/loop_serving``), or a connection's greenlet
runs a command that cannot wait (``server/connection``), ``grouping`` names it and its
``Journal.append`` leaves each record of an ``interval`` or ``never`` journal in
``pending``; ``write_pending`` writes each journal's records with one ``write`` before
any reply that acknowledges them goes out (Redis writes its AOF buffer once per loop
iteration, before it sleeps).  A record that fails there cannot be refused on its own
any more, so grouping is on only while the disk has ``GROUP_WRITE_HEADROOM`` free: a
full disk still gets each command its own ``SERVER_ERROR``.  What fails anyway (EIO,
a disk filled by someone else within one check) counts in ``group_failures``; the
connections whose replies acknowledge such a turn are closed unanswered
(``LoopServing.replies_may_go``), as after a failed fsync.
"""

import logging
import os
import time

import gevent
from gevent.event import Event
from gevent.lock import Semaphore

from erqpy.descriptors import OpenFiles
from erqpy.errors import JournalWriteError

# The journal's logger name, kept from when this lived there: operators filter on it.
log = logging.getLogger("erqpy.journal")

FSYNC_ALWAYS = "always"
FSYNC_INTERVAL = "interval"
FSYNC_NEVER = "never"
FSYNC_POLICIES = (FSYNC_ALWAYS, FSYNC_INTERVAL, FSYNC_NEVER)

#: Records are grouped only while the data directory's file system has this much free
#: space (far more than one turn can write between two checks), and again once it has
#: twice as much (so that a disk hovering at the mark does not switch at every look).
GROUP_WRITE_HEADROOM = 32 * 1024 * 1024
#: Pending records past this many bytes are written at once, mid-turn: that bounds the
#: memory they hold (a copy of what the turn added) and what one write can take of the
#: headroom between two looks at the disk.
GROUP_WRITE_MAX_BYTES = 2 * 1024 * 1024
#: How often the free space is looked at (``statvfs``), at most ...
HEADROOM_CHECK_SECONDS = 0.05
#: ... and after this many bytes of group writes, whichever comes first.
HEADROOM_CHECK_BYTES = GROUP_WRITE_HEADROOM // 4


def fsync_dir(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_fds(fds) -> OSError | None:
    """Runs in a worker thread.  Returns the first error instead of raising it."""
    error = None
    for fd in fds:
        try:
            os.fsync(fd)
        except OSError as exc:
            # Syncer.close_fd keeps every descriptor here open until this returns, so
            # EBADF cannot come from a journal closed meanwhile; it is an error too.
            if error is None:
                error = exc
    return error


class Syncer:
    """Flushes journals to disk according to their policy.

    ``dirty`` holds journals with writes not yet fsynced.  ``write_seq`` counts writes
    under the ``always`` policy; ``synced_seq`` is the highest count known durable.  A
    writer under ``always`` notes ``write_seq`` after its write and calls
    ``wait_durable(seq)``: the commit loop fsyncs everything dirty in one pass, so all
    writers waiting at that moment share one fsync.
    """

    def __init__(self, interval: float = 0.1, files: OpenFiles | None = None):
        self.interval = interval
        self.files = files if files is not None else OpenFiles()
        self.dirty = set()
        self.write_seq = 0
        self.synced_seq = 0
        self.fsync_count = 0
        self.fsync_seconds = 0.0  # total time spent in fsync, for metrics
        self._wake = Event()
        self._round_done = Event()
        self._last_error: OSError | None = None
        self._greenlets = []
        # One flush round at a time: a round that finds ``dirty`` empty because another
        # round took it must not report those writes durable before that fsync ends.
        self._round_lock = Semaphore()
        # Descriptors a worker thread is fsyncing right now, and those whose owner
        # closed them meanwhile: they are closed when the fsync returns, so that their
        # number cannot be reused (by a socket, another journal) under the fsync.
        self._in_flight = frozenset()
        self._deferred_close = []
        # The group write (see the module's docstring).
        # Whose appends are grouped right now: the hub while loop_serving runs a batch,
        # a connection's greenlet while it runs a command that cannot wait; else None.
        # An owner, not a flag: a greenlet that yields (a long compaction's thread
        # handoff) must not have other greenlets' records grouped, whose replies would
        # not wait for their write.
        self.grouping = None
        self.hub = gevent.get_hub()  # the loop's: grouping is only ever its own there
        self.group_allowed = False  # the disk has the headroom (check_headroom)
        self.pending: dict = {}  # Journal -> its records not yet written, in order
        self.group_writes = 0  # writes of pending records
        self.grouped_records = 0  # records that went through pending
        self.group_failures = 0  # group writes that failed (EIO, ENOSPC)
        self.headroom_path = ""  # the data directory, once watch_headroom is called
        self._unchecked_bytes = 0
        self._pending_bytes = 0  # of pending, at most (a journal written on its own drops its part)

    def fsyncing(self, fd: int) -> bool:
        return fd in self._in_flight

    def close_fd(self, fd: int) -> None:
        """Close a journal descriptor, or, while a flush round fsyncs it, as soon as the
        round ends.  Never yields: rewrite relies on that."""
        if fd in self._in_flight:
            self._deferred_close.append(fd)
        else:
            os.close(fd)

    def start(self) -> None:
        self._greenlets = [gevent.spawn(self._commit_loop), gevent.spawn(self._interval_loop)]
        if self.headroom_path:
            self.check_headroom()
            self._greenlets.append(gevent.spawn(self._headroom_loop))

    # -- the group write -------------------------------------------------------------

    def watch_headroom(self, path: str) -> None:
        """Allow group writes while the file system of ``path`` has the headroom (from
        ``start`` on: the data directory may not exist yet)."""
        self.headroom_path = path

    def check_headroom(self) -> None:
        self._unchecked_bytes = 0
        try:
            fs = os.statvfs(self.headroom_path)
        except OSError as exc:
            if self.group_allowed:
                log.warning("statvfs %s failed (%s): journal records are written one by one", self.headroom_path, exc)
            self.group_allowed = False
            return
        free = fs.f_bavail * fs.f_frsize
        allowed = free >= GROUP_WRITE_HEADROOM * (1 if self.group_allowed else 2)
        if allowed != self.group_allowed:
            log.info("%s: %s MiB free, journal records are %s", self.headroom_path,
                     free >> 20, "written per loop turn" if allowed else "written one by one")
        self.group_allowed = allowed

    def note_pending(self, journal, record: bytes) -> None:
        """Leave ``record`` for ``write_pending`` (``Journal.append`` while grouping)."""
        parts = self.pending.get(journal)
        if parts is None:
            if not self.pending:
                # Written at the latest at the end of this loop turn, replies or not
                # (a ``noreply`` set has none to carry it out).
                gevent.get_hub().loop.run_callback(self.write_pending)
            self.pending[journal] = [record]
        else:
            parts.append(record)
        self.grouped_records += 1
        self._pending_bytes += len(record)
        if self._pending_bytes >= GROUP_WRITE_MAX_BYTES:
            self.write_pending()

    def write_pending(self) -> None:
        """Write every journal's pending records, one ``write`` each, in the order the
        journals were first written to in this turn.  Never raises: a failure counts in
        ``group_failures`` (the journal logs it)."""
        self._pending_bytes = 0
        pending = self.pending
        if not pending:
            return
        written = 0
        while pending:
            journal = next(iter(pending))
            written += journal.write_pending()
            self.group_writes += 1
        self._unchecked_bytes += written
        if self._unchecked_bytes >= HEADROOM_CHECK_BYTES and self.headroom_path:
            self.check_headroom()

    def lost_pending(self) -> None:
        """Records left for a group write could not be written (``Journal``)."""
        self.group_failures += 1
        self.group_allowed = False  # until the next look at the disk

    def _headroom_loop(self) -> None:
        while True:
            gevent.sleep(HEADROOM_CHECK_SECONDS)
            self.check_headroom()

    def stop(self) -> None:
        gevent.killall(self._greenlets)
        self._greenlets = []
        self.sync_now()

    def wait_durable(self, seq: int) -> None:
        """Block this greenlet until every ``always`` write up to ``seq`` is on disk."""
        while self.synced_seq < seq:
            done = self._round_done
            self._wake.set()
            done.wait()
            if self._last_error is not None and self.synced_seq < seq:
                error, self._last_error = self._last_error, None
                raise JournalWriteError("(fsync)", error)

    def sync_now(self) -> None:
        """Fsync every dirty journal in this thread (shutdown)."""
        self.write_pending()
        journals = list(self.dirty)
        self.dirty.clear()
        error = _fsync_fds([j.fd for j in journals if j.fd >= 0])
        if error is not None:
            log.error("fsync failed: %s", error)
        self.synced_seq = self.write_seq

    def _flush_round(self) -> OSError | None:
        with self._round_lock:
            journals = list(self.dirty)
            self.dirty.clear()
            fds = [j.fd for j in journals if j.fd >= 0]
            if not fds:
                return None
            started = time.perf_counter()
            self._in_flight = frozenset(fds)
            # Killed while waiting (Syncer.stop), the thread may still be fsyncing: the
            # deferred descriptors then stay open, the process is stopping anyway.
            error = gevent.get_hub().threadpool.apply(_fsync_fds, (fds,))
            self._in_flight = frozenset()
            deferred, self._deferred_close = self._deferred_close, []
            for fd in deferred:
                os.close(fd)
            self.fsync_seconds += time.perf_counter() - started
            self.fsync_count += 1
            return error

    def _commit_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            target = self.write_seq
            if self.synced_seq >= target:
                continue
            error = self._flush_round()
            if error is None:
                self.synced_seq = target
            else:
                log.error("fsync failed: %s", error)
                self._last_error = error
            done, self._round_done = self._round_done, Event()
            done.set()

    def _interval_loop(self) -> None:
        while True:
            gevent.sleep(self.interval)
            if self.dirty:
                target = self.write_seq
                error = self._flush_round()
                if error is not None:
                    log.error("fsync failed: %s", error)
                elif target > self.synced_seq:
                    self.synced_seq = target
