"""The servers of a ``Client``: their connections, which are live, and which one a reader
is on.

A server that fails is skipped for ``retry_after`` seconds, then tried again; each failure in
a row doubles that, up to ``retry_max``, and a success resets it.  A reader stays on one
server while it has items for the queue, for at most ``reads_per_server`` reads in a row.

With ``failover`` (engine mode: every node serves every queue) the servers are front doors
of one store instead: every request goes to the first live server in the order given, the
next one only when it fails, and one server's answer stands for all.
"""

import contextlib
import random
import time

from pymemcache.client.base import Client as MemcacheClient
from pymemcache.exceptions import MemcacheClientError, MemcacheServerError

from erqpy.client.errors import CONNECTION_ERRORS, NoServerAvailable, RequestRefused, describe

DEFAULT_SERVER = "127.0.0.1:22133"
#: The longest a failed server is skipped, by default, after failing many times in a row.
DEFAULT_RETRY_MAX = 5.0


def parse_servers(servers):
    """``"a:1,b:2"``, ``["a:1", "b:2"]`` or ``[("a", 1)]`` -> ``[("a", 1), ("b", 2)]``."""
    if isinstance(servers, str):
        servers = [servers]
    parsed = []
    for entry in servers:
        if isinstance(entry, tuple):
            parsed.append((entry[0], int(entry[1])))
            continue
        for spec in entry.split(","):
            spec = spec.strip()
            if not spec:
                continue
            host, sep, port = spec.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"bad server {spec!r}: expected host:port")
            parsed.append((host.strip("[]"), int(port)))
    if not parsed:
        raise ValueError("no servers given")
    return parsed


def check_queue(queue):
    if not isinstance(queue, str) or not queue:
        raise ValueError("a queue name is a non-empty str")
    if "/" in queue or any(c.isspace() for c in queue) or len(queue.encode()) > 250:
        raise ValueError(f"bad queue name {queue!r}: no '/', no whitespace, at most 250 bytes")


class Server:
    """One server: its pymemcache connection, and when it may be tried again after failing
    (``failures`` in a row so far, and the last one's ``last_error``)."""

    __slots__ = ("name", "mc", "dead_until", "timeout_now", "failures", "last_error")

    def __init__(self, address, serde, connect_timeout, timeout):
        self.name = f"{address[0]}:{address[1]}"
        self.mc = MemcacheClient(
            address, serde=serde, connect_timeout=connect_timeout, timeout=timeout,
            default_noreply=False, allow_unicode_keys=True, no_delay=True,
        )
        self.dead_until = 0.0
        self.timeout_now = timeout
        self.failures = 0
        self.last_error = ""

    def set_timeout(self, seconds):
        """pymemcache applies one socket timeout to every recv; a blocking get needs more."""
        if seconds != self.timeout_now:
            self.mc.timeout = seconds
            if self.mc.sock is not None:
                self.mc.sock.settimeout(seconds)
            self.timeout_now = seconds


class ServerPool:
    """The server bookkeeping of ``Client``, its base class.  Uses the client's
    ``servers`` (``Server`` objects), ``retry_after``, ``retry_max``, ``timeout``,
    ``reads_per_server``, ``_rng`` and the per-queue ``_reader`` and ``_streak``."""

    servers: list[Server]
    retry_after: float
    retry_max: float
    timeout: float
    reads_per_server: int
    failover: bool
    _rng: random.Random
    _reader: dict[str, int]  # queue -> index in ``servers`` of the server its reader is on
    _streak: dict[str, int]  # queue -> items read in a row from that server

    def _live(self):
        now = time.monotonic()
        return [s for s in self.servers if s.dead_until <= now]

    def _mark_dead(self, server, exc):
        server.mc.close()
        server.failures += 1
        server.last_error = describe(exc)
        delay = min(self.retry_after * 2 ** min(server.failures - 1, 32), self.retry_max)
        server.dead_until = time.monotonic() + delay

    def _mark_refusing(self, server, exc):
        """The server answered, but its status refuses the request (QUIESCENT): skip it
        for ``retry_after``, without the backoff of a server that does not answer, so
        that it is used again soon after it is back up."""
        server.mc.close()
        server.last_error = describe(exc)
        server.dead_until = time.monotonic() + self.retry_after

    @staticmethod
    def _alive(server):
        """The server answered: the next failure starts the backoff from ``retry_after``."""
        if server.failures:
            server.failures = 0
            server.dead_until = 0.0

    def live_servers(self):
        """Names of the servers not currently skipped."""
        return [s.name for s in self._live()]

    def retry_in(self):
        """Seconds until the first server marked dead may be tried again (0 if one is live)."""
        now = time.monotonic()
        return max(0.0, min(s.dead_until for s in self.servers) - now)

    def _all_dead(self, queue):
        reasons = "; ".join(f"{s.name}: {s.last_error}" for s in self.servers)
        return NoServerAvailable(f"every server is marked dead for {queue!r} ({reasons}); "
                                 f"next try in {self.retry_in():.2f} s")

    def _write_candidates(self):
        """Live servers in random order (with ``failover``, in the order given).  When
        every server is marked dead, all of them: a write is worth one more try before it
        fails, and one round of refused connections costs little."""
        candidates = self._live() or list(self.servers)
        if not self.failover:
            self._rng.shuffle(candidates)
        return candidates

    def _server_named(self, name):
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(name)

    def _reader_for(self, queue, live):
        if self.failover:  # any node has every item: the first live one
            self._reader[queue] = self.servers.index(live[0])
            return live[0]
        index = self._reader.get(queue)
        if index is None or self.servers[index] not in live:
            server = self._rng.choice(live)
            self._reader[queue] = self.servers.index(server)
            self._streak[queue] = 0
            return server
        if self._streak.get(queue, 0) >= self.reads_per_server and len(live) > 1:
            self._move_reader(queue, live)
            return self.servers[self._reader[queue]]
        return self.servers[index]

    def _move_reader(self, queue, live):
        """On to the next live server after the current one."""
        index = self._reader.get(queue, -1)
        count = len(self.servers)
        for step in range(1, count + 1):
            candidate = self.servers[(index + step) % count]
            if candidate in live:
                self._reader[queue] = (index + step) % count
                break
        self._streak[queue] = 0

    def _attempt(self, server, action):
        """``action(server.mc)`` with the client's timeout: ``(result, None)``, or
        ``(None, error)`` when the server failed (it is marked dead) or answered
        ``SERVER_ERROR``.  A ``CLIENT_ERROR`` is the caller's mistake: RequestRefused."""
        server.set_timeout(self.timeout)
        try:
            result = action(server.mc)
        except CONNECTION_ERRORS as exc:
            self._mark_dead(server, exc)
            return None, exc
        except MemcacheServerError as exc:
            return None, exc
        except MemcacheClientError as exc:
            raise RequestRefused(f"{server.name}: {exc}") from None
        self._alive(server)
        return result, None

    def _each_server(self, queue, action):
        done = 0
        last_error = None
        for server in self._live():
            _result, error = self._attempt(server, action)
            if error is None:
                done += 1
                if self.failover:  # one node acted for all of them
                    break
            else:
                last_error = error
        if not done:
            if last_error is None:
                raise self._all_dead(queue)
            raise NoServerAvailable(f"no server reached for {queue!r}: {describe(last_error)}")
        return done

    def stats(self):
        """``{"host:port": {field: value}}`` for every server, None for one that is down.
        Per-queue fields are named ``queue_<name>_<field>``."""
        result: dict[str, dict | None] = {}
        for server in self.servers:
            server.set_timeout(self.timeout)
            try:
                raw = server.mc.stats()
            except CONNECTION_ERRORS as exc:
                self._mark_dead(server, exc)
                result[server.name] = None
                continue
            self._alive(server)
            fields = {}
            for key, value in raw.items():
                key = key.decode() if isinstance(key, bytes) else key
                if isinstance(value, bytes):
                    value = value.decode("utf-8", "replace")
                    with contextlib.suppress(ValueError):
                        value = int(value)
                fields[key] = value
            result[server.name] = fields
        return result

    def queue_size(self, queue):
        """Items waiting in ``queue``, summed over the servers that answer."""
        total = 0
        for fields in self.stats().values():
            if fields:
                total += int(fields.get(f"queue_{queue}_items", 0))
                if self.failover:  # every node counts the same items
                    break
        return total

    # -- every live server at once ---------------------------------------------------------

    def flush(self, queue):
        """Remove every waiting item of ``queue`` on every live server (open reads stay);
        returns the number of servers reached.  A server that is down keeps its items."""
        check_queue(queue)
        return self._each_server(queue, lambda mc: mc.raw_command(f"flush {queue}"))

    def delete(self, queue):
        """Delete ``queue`` and its journal on every live server; returns the number reached."""
        check_queue(queue)
        return self._each_server(queue, lambda mc: mc.delete(queue, noreply=False))
