"""Stopping a real server, gracefully (SIGTERM) or not (SIGKILL), with clients connected:
blocked readers get END, open reads come back at the head in the order they were opened,
and the data directory lock is held while a server runs and released when it dies."""

import signal
import subprocess
import sys

import pytest

from recovery_support import TIMEOUT, drain, queue_stats, read_values, set_items, wait_for

ITEMS = [b"item-%d" % i for i in range(8)]


def open_read(raw, queue: str) -> bytes:
    raw.send(b"get " + queue.encode() + b"/open\r\n")
    values = read_values(raw)
    assert 1 == len(values), values
    return values[0][0]


def start_blocked_get(server, queue: str, timeout_ms: int = 60_000):
    """A client blocked in ``get queue/t=...``; returns once the server counts the waiter."""
    raw = server.raw()
    # The queue is made first (a set, then a get that drains it): a read alone creates
    # no queue, and only a queue's stats count its waiters.
    raw.send(b"set %s 0 0 1\r\nx\r\nget %s\r\n" % (queue.encode(), queue.encode()))
    assert raw.read_until(b"END\r\n").startswith(b"STORED\r\nVALUE ")
    raw.send(b"get %s/t=%d\r\n" % (queue.encode(), timeout_ms))
    wait_for(lambda: queue_stats(server, queue).get("waiters") == 1, what=f"a waiter on {queue}")
    return raw


def stop(server, how: str) -> int:
    if how == "sigterm":
        return server.terminate(timeout=60)
    server.kill9()
    return server.proc.returncode


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_open_reads_of_several_connections_come_back_first_in_opening_order(server, how):
    """Reads opened by three connections in turn are, after a stop and restart, at the
    head in the order they were opened, ahead of the items that were never opened."""
    producer = server.raw()
    set_items(producer, "q", ITEMS)
    readers = [server.raw() for _ in range(3)]
    opened = [open_read(readers[i % 3], "q") for i in range(5)]
    assert ITEMS[:5] == opened

    code = stop(server, how)

    assert (0 if how == "sigterm" else -signal.SIGKILL) == code
    server.start()
    assert ITEMS == [data for data, _id in drain(server, "q")]


def test_sigterm_answers_a_blocked_get_gives_back_an_open_read_and_exits_zero(server):
    """SIGTERM with one client blocked in get/t= and one holding an open read on the same
    queue: the blocked client gets END (not the returned item), the server exits 0, and
    after a restart the item is there, first."""
    producer = server.raw()
    set_items(producer, "q", [b"held", b"second"])
    holder = server.raw()
    assert b"held" == open_read(holder, "q")
    assert b"VALUE q 0 6\r\nsecond\r\nEND\r\n" == producer.call(b"get q\r\n", b"END\r\n")
    blocked = start_blocked_get(server, "q")

    assert 0 == server.terminate(timeout=60)

    assert b"END\r\n" == blocked.read_until(b"END\r\n", timeout=TIMEOUT)
    assert blocked.is_closed(timeout=TIMEOUT)
    assert holder.is_closed(timeout=TIMEOUT)
    server.start()
    assert [b"held"] == [data for data, _id in drain(server, "q")]


def test_sigterm_ends_blocked_gets_on_several_queues(server):
    """Every blocked reader, on any queue, is answered END at a graceful stop."""
    blocked = [start_blocked_get(server, name) for name in ("one", "two")]

    assert 0 == server.terminate(timeout=60)

    assert [b"END\r\n", b"END\r\n"] == [raw.read_until(b"END\r\n", timeout=TIMEOUT) for raw in blocked]


def serve_command(data_dir):
    return [
        sys.executable, "-m", "erqpy", "serve", "--host", "127.0.0.1", "--port", "0",
        "--data-dir", str(data_dir),
    ]


def test_second_server_on_a_locked_data_dir_refuses_to_start(server):
    """A second server on a data directory in use exits non-zero with a clear message,
    and the running server keeps serving."""
    raw = server.raw()
    set_items(raw, "q", [b"kept"])

    second = subprocess.run(serve_command(server.data_dir), capture_output=True, text=True, timeout=60)

    assert second.returncode != 0
    assert "listening on" not in second.stdout
    assert f"data directory {server.data_dir}" in second.stderr
    assert f"in use by another erqpy server (pid {server.proc.pid})" in second.stderr
    assert b"STORED\r\n" == raw.call(b"set q 0 0 5\r\nlater\r\n")
    assert [b"kept", b"later"] == [data for data, _id in drain(server, "q")]


def test_lock_is_released_when_the_server_is_killed(server):
    """After SIGKILL (no clean-up at all) a new server starts on the same directory."""
    raw = server.raw()
    set_items(raw, "q", [b"survivor"])
    server.kill9()

    server.start()

    assert [b"survivor"] == [data for data, _id in drain(server, "q")]
