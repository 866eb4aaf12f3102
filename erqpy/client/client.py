"""A thin queue client over ``pymemcache.Client``, for one erqpy server or several.

::

    from erqpy.client import Client

    queue = Client(["127.0.0.1:22133"])
    queue.put("jobs", {"user": 42})
    with queue.reserve("jobs", wait=5) as item:      # confirmed on normal exit,
        if item is not None:                         # given back on an exception
            handle(item.data)

Several servers, the Kestrel way: servers never talk to each other.  A put goes to a random
live server.  A reader stays on one server while that server has items for the queue (or for
``reads_per_server`` reads, so that no server is starved) and moves on when it comes back
empty.  An open (reliable) read is always closed on the server, and the connection, that
opened it.  A server that fails is skipped for ``retry_after`` seconds (0.1), then tried
again; each failure in a row doubles that, up to ``retry_max`` (5 s), and a success resets it.
So each item is delivered at least once and, when no client dies, exactly once; ordering is
loose: FIFO per server, not across servers.

One ``Client`` holds one connection per server and is meant for one consumer (thread or
greenlet): reliable reads belong to the connection that opened them, so never share a
``Client`` between concurrent consumers.

Values go through a serde (``erqpy.serde``) that uses the item flags: ``JsonSerde`` (the
default) stores bytes as they are (flags 0) and anything else as JSON (flags 6, PHP
Memcached's JSON type, so a PHP consumer decodes it too); ``RawSerde`` passes bytes only.
No compression unless asked.
"""

import contextlib
import math
import random

from pymemcache.exceptions import MemcacheClientError, MemcacheServerError

from erqpy.compat import send_pipelined
from erqpy.client.errors import (
    CONNECTION_ERRORS,
    NoServerAvailable,
    NotStored,
    QueueClientError,
    ReadLost,
    RequestRefused,
    describe,
)
from erqpy.client import reading
from erqpy.client.put_options import key_options
from erqpy.client.reading import Item  # noqa: F401 (Item is a name of this module since it began)
from erqpy.client.serde import JsonSerde
from erqpy.client.servers import DEFAULT_RETRY_MAX, DEFAULT_SERVER, Server, ServerPool, check_queue, parse_servers

# -- items ----------------------------------------------------------------------------------


def _open_option(max_deliveries):
    return f"/open/max_deliveries={max_deliveries}" if max_deliveries else "/open"


class _OpenRead:
    """Where an open read lives: the server and the very socket that opened it."""

    __slots__ = ("server", "sock", "item")

    def __init__(self, server, item):
        self.server = server
        self.sock = server.mc.sock
        self.item = item


# -- the client -----------------------------------------------------------------------------


class Client(ServerPool):
    """A queue client over one or several erqpy servers.

    ``servers``: ``"host:port"`` strings (or one comma-separated string).
    ``timeout``: socket timeout in seconds for one request; a blocking read adds its wait to
    it, so that a long ``wait`` never trips the client's own timeout.
    ``retry_after``: seconds a failed server is skipped before it is tried again; each
    further failure in a row doubles it, up to ``retry_max`` (5 s, or ``retry_after`` if
    that is longer).  A success resets it, so a restarted server is back in use within
    about the time it was down (or ``retry_max``).
    ``wait_slice``: with several live servers, a blocking read waits this long on one server
    before it looks at the next one.
    ``reads_per_server``: a reader moves on after this many items from one server even when it
    has more, so that every server's items get read.
    ``failover``: the servers are engine-mode nodes sharing their queues (README "Engine
    mode"): every request goes to the first live one in the order given and fails over
    to the next on a connection error; an empty read is not asked of the others, and a
    blocking read waits its whole time on one node.
    """

    def __init__(self, servers=(DEFAULT_SERVER,), *, serde=None, timeout=5.0, connect_timeout=2.0,
                 retry_after=0.1, retry_max=None, wait_slice=1.0, reads_per_server=100, rng=None,
                 failover=False):
        if retry_max is None:
            retry_max = max(DEFAULT_RETRY_MAX, retry_after)
        if not 0 < retry_after <= retry_max:
            raise ValueError("need 0 < retry_after <= retry_max")
        self.serde = serde if serde is not None else JsonSerde()
        self.timeout = timeout
        self.retry_after = retry_after
        self.retry_max = retry_max
        self.wait_slice = wait_slice
        self.reads_per_server = reads_per_server
        self.failover = failover
        self.servers = [Server(a, self.serde, connect_timeout, timeout) for a in parse_servers(servers)]
        self._rng = rng or random.Random()
        self._open = {}  # queue -> _OpenRead
        # Per queue: index of the server the reader is on, and items read there in a row.
        self._reader = {}
        self._streak = {}

    def __repr__(self):
        return f"Client({[s.name for s in self.servers]!r})"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Close every connection.  Open reads are given back to their queues by the server."""
        self._open.clear()
        for server in self.servers:
            server.mc.close()


    # -- writing --------------------------------------------------------------------------


    def put(self, queue, data, expire=0, *, delay=None, at=None, priority=None):
        """Add ``data`` at the tail of ``queue`` on a random live server; return that server's
        name once it has acknowledged the item.

        ``expire``: seconds to live (0 never; 1,000,000 and up is an absolute Unix time).
        ``delay`` (seconds from now) or ``at`` (a ``datetime`` or Unix seconds): served not
        before then; ``priority``: 0 (most urgent) to 9, the server's default 5
        (``erqpy.client.put_options``; these need an erqpy server, not any Kestrel).
        If a server fails mid-request the item is sent to another one, so in that rare case it
        may be stored twice (at-least-once).  Raises ``NotStored`` or ``NoServerAvailable``.
        """
        check_queue(queue)
        key = queue + key_options(delay, at, priority)
        candidates = self._write_candidates()
        last_error = None
        for server in candidates:
            server.set_timeout(self.timeout)
            try:
                stored = server.mc.set(key, data, expire=expire, noreply=False)
            except CONNECTION_ERRORS as exc:
                self._mark_dead(server, exc)
                last_error = exc
                continue
            except MemcacheServerError as exc:  # READONLY or QUIESCENT: try another server
                last_error = exc
                continue
            except MemcacheClientError as exc:
                raise RequestRefused(f"{server.name}: {exc}") from None
            self._alive(server)
            if not stored:
                raise NotStored(f"{server.name} did not store the item in {queue!r} "
                                "(larger than max_item_size, or the queue is full)")
            return server.name
        raise NoServerAvailable(f"no server took the item for {queue!r}: {describe(last_error)}")

    def put_many(self, queue, values, expire=0, batch=100, *, delay=None, at=None, priority=None):
        """Add every value to ``queue``, ``batch`` items per round trip (pipelined ``set``),
        each batch on a random live server.  Returns the number stored; raises ``NotStored``
        (with ``failed`` indexes) when the server refused some of them.  A batch cut short by
        a failing server is sent again elsewhere, so some items may then be stored twice.
        ``delay``, ``at``, ``priority``: as ``put``, for every item."""
        check_queue(queue)
        key = queue + key_options(delay, at, priority)
        values = list(values)
        failed = []
        for start in range(0, len(values), batch):
            chunk = values[start:start + batch]
            replies = self._put_chunk(key, chunk, expire)
            failed.extend(start + i for i, reply in enumerate(replies) if reply != b"STORED")
        if failed:
            raise NotStored(f"{len(failed)} of {len(values)} items not stored in {queue!r}", failed)
        return len(values)

    def _put_chunk(self, queue, chunk, expire):
        candidates = self._write_candidates()
        last_error = None
        for server in candidates:
            mc = server.mc
            key = mc.check_key(queue, b"")
            commands = []
            for value in chunk:
                data, flags = self.serde.serialize(key, value)
                commands.append(b"set %s %d %d %d\r\n%s\r\n" % (key, flags, expire, len(data), data))
            replies, last_error = self._attempt(server, lambda mc, batch=commands: send_pipelined(mc, batch, b"set"))
            if last_error is None:
                return replies
        raise NoServerAvailable(f"no server took the batch for {queue!r}: {describe(last_error)}")

    # -- reading --------------------------------------------------------------------------

    def get(self, queue, wait=None):
        """Remove and return the head item's data, or None when every server is empty for
        ``wait`` seconds.  At-most-once: the item is gone before you see it; use ``reserve``
        for work that must not be lost."""
        self._refuse_if_open(queue)
        item = self._read(queue, "", wait)
        return None if item is None else item.data

    def peek(self, queue, wait=None):
        """The head item's data without removing it (from the first server that has one)."""
        check_queue(queue)
        item = self._read(queue, "/peek", wait)
        return None if item is None else item.data

    def open(self, queue, wait=None, max_deliveries=0):
        """Open a reliable read: return an ``Item`` (or None when empty after ``wait``) that
        stays reserved for this client until ``finish`` confirms it or ``abort`` gives it
        back.  If this client's connection ends first, the server gives it back itself.

        ``max_deliveries``: refuse items already handed out that many times (a job that
        killed every worker it reached); the server moves them to the queue's dead-letter
        queue (``<queue>_errors`` by default) instead of delivering them again."""
        self._refuse_if_open(queue)
        item = self._read(queue, _open_option(max_deliveries), wait)
        if item is not None:
            self._open[queue] = _OpenRead(self._server_named(item.server), item)
        return item

    def next(self, queue, wait=None, max_deliveries=0):
        """Confirm the open read on ``queue`` (if any) and open the next one, in one round
        trip when the next item is on the same server (``max_deliveries`` as in ``open``).

        Raises ``ReadLost`` (and opens nothing) when the previous read's connection ended
        before it could be confirmed: that item will be delivered again."""
        record = self._open.get(queue)
        if record is None:
            return self.open(queue, wait, max_deliveries)
        if self._streak.get(queue, 0) >= self.reads_per_server and len(self._live()) > 1:
            # Time to move to another server: confirm here, then read elsewhere.
            self.finish(queue)
            return self.open(queue, wait, max_deliveries)
        del self._open[queue]
        closing = self._check_still_open(queue, record)
        item = self._read(queue, _open_option(max_deliveries), wait, closing=closing)
        if item is not None:
            self._open[queue] = _OpenRead(self._server_named(item.server), item)
        return item

    def finish(self, queue):
        """Confirm the open read on ``queue``: the item is gone for good.  False when nothing
        was open; ``ReadLost`` when the item could not be confirmed and will come back."""
        record = self._open.pop(queue, None)
        if record is None:
            return False
        server = self._check_still_open(queue, record)
        server.set_timeout(self.timeout)
        try:
            server.mc.get(f"{queue}/close")
        except CONNECTION_ERRORS as exc:
            self._mark_dead(server, exc)
            raise ReadLost(f"confirming item {record.item.id} of {queue!r} on {server.name} "
                           f"failed ({describe(exc)}); it will be delivered again") from None
        except (MemcacheClientError, MemcacheServerError) as exc:
            raise ReadLost(f"{server.name} refused to confirm item {record.item.id} of "
                           f"{queue!r} ({describe(exc)}); it will be delivered again") from None
        self._alive(server)
        return True

    def abort(self, queue, delay=None):
        """Give the open read on ``queue`` back to the head of its queue.  False when nothing
        was open.  If the connection is gone the server has already given it back.

        ``delay``: seconds before it may be read again (``get q/abort/delay=<ms>``, an erqpy
        extension), so nobody holds it meanwhile.  False when the server refused the delay
        (engine mode): the read was then given back at once, its connection closed."""
        record = self._open.pop(queue, None)
        if record is None:
            return False
        server = record.server
        if server.mc.sock is None or server.mc.sock is not record.sock:
            return True  # its connection ended, and with it the read
        server.set_timeout(self.timeout)
        delay_ms = math.ceil(delay * 1000) if delay else 0
        try:
            server.mc.get(f"{queue}/abort/delay={delay_ms}" if delay_ms else f"{queue}/abort")
        except CONNECTION_ERRORS as exc:
            self._mark_dead(server, exc)  # closing the connection gives the read back too
        except (MemcacheClientError, MemcacheServerError):
            server.mc.close()  # the same: a closed connection gives its reads back
            return not delay_ms
        return True

    def holding(self, queue):
        """The ``Item`` this client holds open on ``queue``, or None."""
        record = self._open.get(queue)
        return None if record is None else record.item

    @contextlib.contextmanager
    def reserve(self, queue, wait=None):
        """``with client.reserve(q, wait=5) as item:`` -- ``item`` is an ``Item`` or None.

        Normal exit confirms the item; an exception gives it back (and propagates).  Calling
        ``finish`` or ``abort`` inside the block settles it early."""
        item = self.open(queue, wait)
        if item is None:
            yield None
            return
        try:
            yield item
        except BaseException:
            if self.holding(queue) is item:
                self.abort(queue)
            raise
        if self.holding(queue) is item:
            self.finish(queue)

    def _refuse_if_open(self, queue):
        # The server refuses a plain get or a second open read with CLIENT_ERROR, and
        # pymemcache answers any error by closing the connection, which would give back
        # every read this client holds on that server.  Refuse here instead.
        check_queue(queue)
        if queue in self._open:
            raise QueueClientError(f"this client holds an open read on {queue!r}; finish or abort it first")

    def _check_still_open(self, queue, record):
        server = record.server
        if server.mc.sock is None or server.mc.sock is not record.sock:
            raise ReadLost(f"the connection to {server.name} that held item {record.item.id} "
                           f"of {queue!r} ended; the item will be delivered again")
        return server

    def _read(self, queue, option, wait, closing=None):
        return reading.read(self, queue, wait, reading.one_queue(queue, option), closing)

    def next_of(self, queues, wait=None, *, reader=None, max_deliveries=0):
        """``next`` over several queues: confirm the open read this client holds on one of
        ``queues`` (if any) and open the head of the first of them, in that order, that
        has one, in one round trip and one blocking wait per server (``get a/any/open
        b/any/open ...``).  ``Item.queue`` says which.  ``reader``: a stable name for
        this set of queues, whatever their order (default: their names, sorted);
        ``max_deliveries`` as in ``open``.

        Raises ``ReadLost`` as ``next`` does."""
        held = [queue for queue in queues if queue in self._open]
        for queue in held[1:]:
            self.finish(queue)
        reader = reader or ",".join(sorted(queues))
        closing = close_queue = None
        if held:
            close_queue = held[0]
            record = self._open.pop(close_queue)
            closing = self._check_still_open(close_queue, record)
            if self._streak.get(reader, 0) >= self.reads_per_server and len(self._live()) > 1:
                self._open[close_queue] = record  # time to move on: confirm here, read elsewhere
                self.finish(close_queue)
                closing = close_queue = None
        item = reading.read(self, reader, wait, reading.first_of(queues, close_queue, _open_option(max_deliveries)), closing)
        if item is not None:
            self._open[item.queue] = _OpenRead(self._server_named(item.server), item)
        return item
