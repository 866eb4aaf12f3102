"""The process's file descriptor budget: its limit, a reserve, and the LRU of queue files.

Every queue holds descriptors (its journal, the tail segment while it takes appends, the
read-behind cursor), and so does every connection.  Without a budget, a server with many
queues runs out (EMFILE) and then cannot even accept the control connection that would
let an operator see why.  So:

* at start the soft RLIMIT_NOFILE is raised to the hard limit;
* queue files are kept under ``max_open_files`` by ``OpenFiles``: past it, the least
  recently used idle file is closed, and reopened on its next use;
* one descriptor is held in reserve (``Reserve``, on /dev/null): when ``accept`` fails
  with EMFILE, the reserve is given up for that one connection, so the control channel
  still answers and a data client is told ``SERVER_ERROR out of file descriptors``
  instead of hanging in the listen backlog.
"""

import errno
import logging
import os
import resource
import time
from collections import OrderedDict
from typing import TypeGuard

import gevent
from gevent.monkey import get_original
from gevent.server import StreamServer

from erqpy.compat import accept_descriptor, pause_accepting
from erqpy.errors import REPLY_NO_DESCRIPTORS

log = logging.getLogger("erqpy.descriptors")

EXHAUSTED = (errno.EMFILE, errno.ENFILE)
#: Descriptors kept for sockets, the hub and everything that is not a queue file when
#: ``max_open_files`` is derived from the limit.
OTHER_SHARE = 4  # a quarter of the limit, at least MIN_OTHER
MIN_OTHER = 32
#: A soft limit above this is not asked for even when the hard limit is unlimited.
RAISE_CAP = 1 << 20
PAUSE_SECONDS = 0.1  # accepting pauses this long when not even the reserve is left
WARN_INTERVAL = 10.0  # seconds between repeated warnings about exhaustion
#: The real close(2).  Monkey-patched, gevent's os.close defers closing anything but a
#: regular file to the next loop iteration; a descriptor given up to make room for an
#: accept must be free at once.
_close_now = get_original("os", "close")


def is_exhausted(exc: BaseException) -> TypeGuard[OSError]:
    return isinstance(exc, OSError) and exc.errno in EXHAUSTED


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, RAISE_CAP)
    if soft != resource.RLIM_INFINITY and target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            log.warning("could not raise the open file limit from %d to %d: %s", soft, target, exc)
            target = soft
    else:
        target = soft
    log.info("open file limit: soft %s, hard %s; now %s", soft, _show(hard), target)
    return target


def _show(limit: int) -> str:
    return "unlimited" if limit == resource.RLIM_INFINITY else str(limit)


def derived_max_open_files(nofile: int) -> int:
    """The default budget for queue files: the limit minus a share for everything else."""
    return max(nofile - max(nofile // OTHER_SHARE, MIN_OTHER), 8)


class OpenFiles:
    """The queue files holding a descriptor, closed least recently used first past ``limit``.

    A holder has an attribute ``used`` (set on every use, cleared by the clock hand),
    ``evictable()`` (False while it must stay open, e.g. a rewrite in flight) and
    ``evict()`` (close the descriptor, keep what is needed to reopen it; False if it
    could not).
    Recency is the CLOCK approximation of LRU: a use costs one attribute store, and an
    eviction skips (and clears) holders used since the hand last passed.
    """

    def __init__(self, limit: int = 0):
        self.limit = limit  # 0 = no budget
        self._open = OrderedDict()  # holder -> None, in clock order
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._open)

    def opened(self, holder) -> None:
        holder.used = True
        self._open[holder] = None
        if self.limit and len(self._open) > self.limit:
            self.evict(len(self._open) - self.limit, keep=holder)

    def closed(self, holder) -> None:
        self._open.pop(holder, None)

    def evict(self, count: int, keep=None) -> int:
        """Close up to ``count`` idle holders other than ``keep`` (the one being opened,
        about to be used); return how many were closed."""
        freed = 0
        open_ = self._open
        for _ in range(2 * len(open_) + 1):
            if freed >= count or not open_:
                break
            holder = next(iter(open_))
            if holder is keep or holder.used or not holder.evictable():
                holder.used = False
                open_.move_to_end(holder)
                continue
            del open_[holder]
            if holder.evict():
                freed += 1
            else:
                open_[holder] = None  # it stays open; try the next one
        self.evictions += freed
        return freed

    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        """``os.open``, closing idle queue files first when descriptors have run out."""
        try:
            return os.open(path, flags, mode)
        except OSError as exc:
            if exc.errno not in EXHAUSTED or not self.evict(max(len(self._open) // 8, 1)):
                raise
        return os.open(path, flags, mode)


class Reserve:
    """One descriptor held back (on /dev/null), given up to accept a connection at EMFILE."""

    def __init__(self):
        self.fd = -1

    def take(self) -> bool:
        if self.fd >= 0:
            return True
        try:
            self.fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        return True

    def take_back(self) -> None:
        """Take the reserve again after lending it; gevent may close the borrowing
        socket only at the next loop turn, so try again shortly if it is not free yet."""
        if not self.take():
            gevent.spawn_later(0.05, self.take)

    def release(self) -> bool:
        if self.fd < 0:
            return False
        _close_now(self.fd)
        self.fd = -1
        return True

    def close(self) -> None:
        self.release()


class GuardedStreamServer(StreamServer):
    """A StreamServer that answers instead of hanging when descriptors run out.

    gevent's accept loop treats EMFILE as transient and retries later, so the client
    waits in the backlog with no reply.  Here the reserve descriptor is given up for one
    accept.  ``serve_exhausted`` False: the client gets ``SERVER_ERROR out of file
    descriptors`` and is closed (the data port).  True: the connection is served as usual
    (the control channel) and the reserve is taken back when the handler returns.
    """

    def __init__(self, listener, handle, reserve: Reserve, serve_exhausted: bool = False, **kwargs):
        self.reserve = reserve
        self.serve_exhausted = serve_exhausted
        self._warned_at = 0.0
        self.refused = 0
        super().__init__(listener, handle, **kwargs)

    def do_read(self):
        try:
            return super().do_read()
        except OSError as exc:
            if exc.errno not in EXHAUSTED:
                raise
        self._warn()
        # The reserve may have been lost to a race (retaken while the socket it lent to
        # was not yet closed): a descriptor freed since gets it back first.
        if not (self.reserve.take() and self.reserve.release()):
            self._pause_accepting()
            return None
        try:
            fd, address = accept_descriptor(self.socket)
        except OSError:
            self.reserve.take()
            self._pause_accepting()
            return None
        if self.serve_exhausted:
            # The handler takes the reserve back when this connection ends.
            from gevent.socket import socket as GeventSocket

            return GeventSocket(self.socket.family, self.socket.type, self.socket.proto, fileno=fd), address
        try:
            os.write(fd, REPLY_NO_DESCRIPTORS)
        except OSError:
            pass
        finally:
            _close_now(fd)  # no watcher was ever registered for it
            self.reserve.take()
        self.refused += 1
        return None

    def _pause_accepting(self) -> None:
        # The listener stays readable while the backlog is not empty: without a pause
        # the accept loop would spin.  gevent's own back-off, minus its traceback.
        pause_accepting(self, PAUSE_SECONDS)

    def _warn(self) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_INTERVAL:
            self._warned_at = now
            log.error("out of file descriptors accepting on %s (open file limit %d); "
                      "raise the limit or lower max_open_files", self.address,
                      resource.getrlimit(resource.RLIMIT_NOFILE)[0])
