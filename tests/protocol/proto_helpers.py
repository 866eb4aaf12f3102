"""Small helpers shared by the black-box protocol tests.

They speak only raw bytes through ``RawClient`` (from the top-level conftest) and never
import erqpy's own codec, so a parser bug cannot hide itself in the tests.
"""

import itertools
import os
import re
import shutil
import socket
import sys
from pathlib import Path

from tests.conftest import wait_until  # noqa: F401 (the protocol tests import it from here)

_counter = itertools.count(1)
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def unique_name(hint: str = "q") -> str:
    """A queue name no other test in this process uses (shared servers need that)."""
    return f"{_UNSAFE.sub('_', hint)[:60]}_{os.getpid()}_{next(_counter)}"


def nodelay(client):
    """Turn Nagle off on a RawClient, so small sends leave as separate segments."""
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


def parse_stats(reply: bytes) -> dict:
    """``STAT name value`` lines to ``{name: value}`` (both str)."""
    out = {}
    for line in reply.split(b"\r\n"):
        if line.startswith(b"STAT "):
            _stat, name, value = line.decode().split(" ", 2)
            out[name] = value
    return out


def stats(srv) -> dict:
    """The server's ``stats`` over a fresh connection."""
    client = srv.raw()
    try:
        return parse_stats(client.call(b"stats\r\n", b"END\r\n"))
    finally:
        client.close()


def queue_stat(srv, queue: str, field: str, default=None):
    value = stats(srv).get(f"queue_{queue}_{field}")
    return default if value is None else int(value)


def wait_for_waiters(srv, queue: str, count: int, timeout: float = 20.0) -> None:
    """Block until ``queue`` has exactly ``count`` blocked readers."""
    wait_until(
        lambda: queue_stat(srv, queue, "waiters", 0) == count,
        timeout, what=f"{count} waiters on {queue}",
    )


#: ``st`` in /proc/net/tcp of a socket whose peer has sent its FIN (Linux ``TCP_CLOSE_WAIT``).
TCP_CLOSE_WAIT = "08"


def _proc_address(address) -> str:
    """An IPv4 (host, port) as /proc/net/tcp writes it: the address bytes as a host-order
    word, then the port, both in hex."""
    host, port = address[:2]
    return "%08X:%04X" % (int.from_bytes(socket.inet_aton(host), sys.byteorder), port)


def tcp_state(local, remote):
    """The kernel's state (``st``, two hex digits) of the TCP socket ``local`` -> ``remote``
    on this machine, or None when there is none."""
    wanted = (_proc_address(local), _proc_address(remote))
    with open("/proc/net/tcp") as table:
        next(table)  # the header
        for line in table:
            fields = line.split()
            if (fields[1], fields[2]) == wanted:
                return fields[3]
    return None


def close_and_wait_for_fin(client, timeout: float = 10.0) -> None:
    """Close a RawClient and wait until the server's end of the connection has received
    the FIN (its socket is in CLOSE_WAIT): from then on the server's event loop sees the
    end of input before anything a client sends on a new connection."""
    local, remote = client.sock.getsockname(), client.sock.getpeername()
    client.close()
    wait_until(lambda: tcp_state(remote, local) == TCP_CLOSE_WAIT, timeout, what="the FIN to reach the server")


def set_cmd(queue: str, data: bytes, flags: int = 0, exptime: int = 0, noreply: bool = False) -> bytes:
    tail = b" noreply" if noreply else b""
    return b"set %s %d %d %d%s\r\n%s\r\n" % (queue.encode(), flags, exptime, len(data), tail, data)


def value(key: str, data: bytes, flags: int = 0) -> bytes:
    """The reply block for one item (without the final END)."""
    return b"VALUE %s %d %d\r\n%s\r\n" % (key.encode(), flags, len(data), data)


def put(client, queue: str, *items: bytes) -> None:
    """Enqueue ``items`` over a raw client, pipelined, and check every STORED."""
    client.send(b"".join(set_cmd(queue, item) for item in items))
    for _ in items:
        assert b"STORED\r\n" == client.line()


def make_queue(srv, queue: str) -> None:
    """Create ``queue``, empty: a set, then a get that drains it (a read alone creates
    no queue, except a fanout child)."""
    client = srv.raw()
    try:
        put(client, queue, b"create")
        assert client.call(b"get %s\r\n" % queue.encode(), b"END\r\n").startswith(b"VALUE ")
    finally:
        client.close()


def get(client, key: str, timeout: float = 10.0) -> bytes:
    """One ``get`` round trip; the whole reply up to END."""
    return client.call(b"get %s\r\n" % key.encode(), b"END\r\n", timeout)


def copy_handlers(directory: Path) -> Path:
    """The shipped handler files (main and parts) copied into ``directory``, for a server
    started with ``--handlers`` whose files a test edits and reloads; the main file's path."""
    from erqpy.server import reloader

    main = Path(reloader.default_handlers_path())
    for path in [main, *map(Path, reloader.handler_parts(str(main)))]:
        shutil.copy(path, directory / path.name)
    return directory / main.name
