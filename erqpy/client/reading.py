"""How a ``Client`` reads: the sweep of its servers, and what one request asks for.

``read`` is the one loop (a sweep of the live servers without waiting, then blocking waits
of ``wait_slice`` on each in turn); a *fetch* is the request sent to one server: one queue
(``one_queue``: ``gets q/open/t=...``) or the first of several (``first_of``: ``gets
a/any/open b/any/open ...``, one wait on the server for all of them).
"""

import time

from pymemcache.exceptions import MemcacheClientError, MemcacheServerError

from erqpy.client.errors import CONNECTION_ERRORS, ReadLost, RequestRefused, describe
from erqpy.client.servers import check_queue


class Item:
    """One item read from a queue: ``data`` (decoded), ``queue``, ``server`` ("host:port")
    and ``id`` (the server's unique id for it, from ``gets``)."""

    __slots__ = ("queue", "data", "server", "id")

    def __init__(self, queue, data, server, item_id):
        self.queue = queue
        self.data = data
        self.server = server
        self.id = item_id

    def __repr__(self):
        return f"Item(queue={self.queue!r}, server={self.server!r}, id={self.id}, data={self.data!r:.60})"


def one_queue(queue, option):
    """The fetch of ``queue`` with ``option`` (``""``, ``/open``, ``/peek``)."""
    check_queue(queue)

    def fetch(server, closing, block_ms):
        key = queue + ("/close" if closing else "") + option
        if block_ms > 0:
            key += f"/t={block_ms}"
        data, item_id = server.mc.gets(key)
        return None if item_id is None else (queue, data, item_id)
    return fetch


def first_of(queues, close_queue=None, option="/open"):
    """The fetch of a reliable read (``option``: ``/open`` and any bound on it) of the first
    of ``queues`` (in that order) that has an item; ``close_queue``, one of them, has its
    open read confirmed by the same request."""
    for queue in queues:
        check_queue(queue)

    def fetch(server, closing, block_ms):
        wait = f"/t={block_ms}" if block_ms > 0 else ""
        keys = [queue + ("/close" if closing and queue == close_queue else "") + option + "/any" + wait
                for queue in queues]
        for key, (data, item_id) in server.mc.gets_many(keys).items():
            return key.partition("/")[0], data, item_id
        return None
    return fetch


def read(client, reader, wait, fetch, closing=None):
    """An ``Item`` from ``fetch`` on the live servers of ``client``, or None when every
    server is empty for ``wait`` seconds.  ``reader`` names the reader (a queue, or the
    queues of a multi-queue read): which server it is on, and its streak there.
    ``closing``: the server that holds the client's open read to confirm; the first
    request goes there and confirms that read in the same round trip."""
    deadline = time.monotonic() + (wait or 0.0)
    misses = 0
    while True:
        live = client._live()
        if closing is not None:
            server = closing
        else:
            if not live:
                raise client._all_dead(reader)
            server = client._reader_for(reader, live)
        count = 1 if client.failover else max(len(live), 1)  # failover: one node has them all
        remaining = max(0.0, deadline - time.monotonic())
        if misses >= count and remaining <= 0:
            return None
        if count == 1 or misses >= count:
            block = remaining if count == 1 else min(remaining, client.wait_slice)
        else:
            block = 0.0
        # The whole wait, not this slice: one stable value spares a settimeout per read.
        server.set_timeout(client.timeout + (wait or 0.0))
        try:
            found = fetch(server, closing is not None, int(block * 1000))
        except (*CONNECTION_ERRORS, MemcacheServerError) as exc:
            if isinstance(exc, MemcacheServerError):
                # QUIESCENT: this server serves no reads now.  Skip it for a while, or
                # every later read would ask it again at once.
                client._mark_refusing(server, exc)
            else:
                client._mark_dead(server, exc)
            if closing is not None:
                raise ReadLost(f"confirming the open read of {reader!r} on {server.name} failed "
                               f"({describe(exc)}); it will be delivered again") from None
            if not client.failover:  # failover: the next node answers for this one
                misses += 1
            continue
        except MemcacheClientError as exc:
            raise RequestRefused(f"{server.name}: {exc}") from None
        closing = None
        if server.failures:  # client._alive(server), inline on the read path
            server.failures = 0
            server.dead_until = 0.0
        if found is not None:
            client._streak[reader] = client._streak.get(reader, 0) + 1
            queue, data, item_id = found
            return Item(queue, data, server.name, int(item_id))
        misses += 1
        client._move_reader(reader, live)
