"""Segment pages read ahead of the read-behind cursor, by a thread of its own.

A refill reads its step with ``pread`` on the hub.  While the gigabytes written before
are still under writeback, a page it asks for may be locked for that I/O or gone from the
page cache, and then the whole server waits in the kernel for the device (issue 12: the
main thread was sampled in ``folio_wait_bit_common`` under ``filemap_get_pages`` while
10 M items were drained).  This thread reads the stretch past the cursor first, into a
scratch buffer it throws away; by the time the refill gets there, its pages are cached
and unlocked.

A refill that is not the queue's last hope (memory still holds items) reads with
``read_cached``, which takes only what the page cache holds and never waits for the
device: when the thread has not got there yet, the refill waits for a later removal.

The hub never waits for the thread: a request finds the thread through a lock-free queue and is
dropped when too many are waiting, and a read that fails (the segment deleted meanwhile,
no descriptor left) loses only the head start.  The thread opens the file by its path,
so it never holds a descriptor the hub may close and reuse.
"""

import errno
import logging
import os

from gevent.monkey import get_original

log = logging.getLogger("erqpy.store")

#: How far past the cursor the pages are read ahead: at 100 MB/s of draining, 20 ms.
AHEAD_BYTES = 2 * 1024 * 1024
#: Bytes asked for by one request (read 64 KiB at a time into one scratch buffer).
WINDOW_BYTES = 1024 * 1024
#: Requests waiting for the thread at most; past it a request is dropped (counted).
MAX_WAITING = 32
_READ_SIZE = 64 * 1024

# The real ones: under gevent's monkey-patching these would be gevent's, which a
# thread of its own cannot block on.
_SimpleQueue = get_original("queue", "SimpleQueue")
_start_thread = get_original("_thread", "start_new_thread")


class ReadAhead:
    """The read-ahead thread and its counters (``erqctl --json status``)."""

    def __init__(self):
        self._waiting = _SimpleQueue()
        self._started = False
        self.requested = 0  # requests taken
        self.dropped = 0  # requests refused: too many waiting
        self.read_bytes = 0  # bytes the thread read (its own count: ints are atomic)
        self.failed = 0  # reads that failed (file gone, descriptors exhausted)
        self.not_cached = 0  # refills put off: their first page was not in the page cache

    def request(self, path: str, offset: int, length: int) -> None:
        """Read ``length`` bytes of ``path`` from ``offset`` soon, off the hub (called
        only from the hub's thread)."""
        if self._waiting.qsize() >= MAX_WAITING:
            self.dropped += 1
            return
        if not self._started:
            _start_thread(self._run, ())
            self._started = True
        self.requested += 1
        self._waiting.put((path, offset, length))

    def status(self) -> dict:
        return {"read_ahead_requests": self.requested, "read_ahead_dropped": self.dropped,
                "read_ahead_bytes": self.read_bytes, "read_ahead_failures": self.failed,
                "read_behind_not_cached": self.not_cached, "read_behind_never_waits": bool(_nowait)}

    def _run(self) -> None:
        scratch = bytearray(_READ_SIZE)
        while True:
            path, offset, length = self._waiting.get()
            try:
                self.read_bytes += _read_into(scratch, path, offset, length)
            except OSError:
                self.failed += 1
            except Exception:  # never let the thread die: the hub would only lose speed
                self.failed += 1
                log.exception("read-ahead of %s failed", path)


def _read_into(scratch: bytearray, path: str, offset: int, length: int) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        done = 0
        while done < length:
            got = os.preadv(fd, [scratch], offset + done)
            if got <= 0:
                break
            done += got
        return done
    finally:
        os.close(fd)


#: preadv2's flag for a read that takes only what the page cache holds (Linux 4.14; 0 off
#: Linux, or once a file system refused it).
_nowait = getattr(os, "RWF_NOWAIT", 0)


def read_cached(fd: int, length: int, offset: int) -> bytes:
    """Up to ``length`` bytes at ``offset`` of ``fd``, as many as the page cache holds
    from there on: b"" when the first page is not cached (counted), fewer bytes when a
    later one is not, never a wait for the device.  Where the kernel or the file system
    does not offer such reads, a plain ``pread``."""
    global _nowait
    if _nowait:
        buf = bytearray(length)
        try:
            got = os.preadv(fd, [buf], offset, _nowait)
        except BlockingIOError:
            READ_AHEAD.not_cached += 1
            return b""
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            _nowait = 0  # one data directory, one file system: ask once
            log.info("reads that never wait are not supported here (%s): refills may wait", exc)
        else:
            return bytes(memoryview(buf)[:got])
    return os.pread(fd, length, offset)


class Frontier:
    """How far one queue's segments were asked for, ahead of its read-behind cursor."""

    __slots__ = ("until", "next_asked")

    def __init__(self):
        self.until = 0  # offset in the cursor's segment up to which reads were asked for
        self.next_asked = False  # the start of the segment after it was asked for too

    def keep_ahead(self, segments: list, index: int, offset: int) -> None:
        """Ask for what lies less than AHEAD_BYTES past ``offset`` in ``segments[index]``
        (sizes are known: a segment is read only up to its last append) and, near the end
        of a sealed one, the start of the next."""
        segment = segments[index]
        until = max(self.until, offset)
        while until < offset + AHEAD_BYTES and until < segment.size:
            READ_AHEAD.request(segment.path, until, WINDOW_BYTES)
            until += WINDOW_BYTES
        self.until = until
        if (until < offset + AHEAD_BYTES and segment.sealed and not self.next_asked
                and index + 1 < len(segments)):
            READ_AHEAD.request(segments[index + 1].path, 0, WINDOW_BYTES)
            self.next_asked = True

    def moved_on(self) -> None:
        """The cursor went to the next segment."""
        self.until = WINDOW_BYTES if self.next_asked else 0
        self.next_asked = False


#: One thread for every queue of the process (storage modules are never reloaded).
READ_AHEAD = ReadAhead()
