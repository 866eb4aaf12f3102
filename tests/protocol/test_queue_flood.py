"""Queue floods (issue 9 items 9 and 11): reads create no queue, creation is bounded
(``max_queues``, ``max_fanout_children``; that it is O(1) is shown in
tests/unit/test_collection.py), and long commands (a get naming thousands of keys, stats over thousands of
queues, a fanout set to many children) leave the hub to other connections.

Latency bounds are generous (the machine is shared); before the fixes the same probes
waited for seconds.
"""

import json
import multiprocessing
import os
import socket
import struct
import time

import pytest

from proto_helpers import get, parse_stats, put, set_cmd, stats, unique_name, value, wait_until

#: A probe round trip slower than this means the hub was held by one command.
PROBE_BOUND = 0.2
MANY = 5_000
#: Queues on the crowded server: stats over them held the hub ~200 ms before (linear).
CROWD = 10_000


def write_config(tmp_path, text):
    path = tmp_path / "flood.toml"
    path.write_text(text)
    return path


def data_files(srv, queue):
    return [name for name in os.listdir(srv.data_dir) if name.startswith(queue)]


def _probe(address, stop, ready, worst_us, trips):
    """Runs in its own process, so the test's own work (reading a 3 MB stats reply)
    cannot hold the probe up through the GIL."""
    from tests.conftest import RawClient

    client = RawClient(address)
    deadline = time.monotonic() + 120  # bounded even if stop were never set
    while not stop.is_set() and time.monotonic() < deadline:
        started = time.monotonic()
        reply = client.call(b"version\r\n", timeout=60)
        assert reply.startswith(b"VERSION "), reply
        worst_us.value = max(worst_us.value, int((time.monotonic() - started) * 1e6))
        trips.value += 1
        if trips.value == 3:
            ready.set()
    client.close()


class Probe:
    """Another client doing ``version`` round trips while a command runs; the worst one
    tells how long the hub was held."""

    def __init__(self, srv):
        context = multiprocessing.get_context("spawn")
        self.stop = context.Event()
        self.ready = context.Event()
        self._worst_us = context.Value("q", 0)
        self._trips = context.Value("q", 0)
        self._process = context.Process(
            target=_probe, args=(srv.address, self.stop, self.ready, self._worst_us, self._trips),
            daemon=True,
        )

    @property
    def worst(self) -> float:
        return self._worst_us.value / 1e6

    def __enter__(self):
        self._process.start()
        assert self.ready.wait(30), "the probe made no round trips"
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self._process.join(90)
        if self._process.is_alive():  # only the process this test started
            self._process.kill()
            self._process.join(10)
        assert 0 == self._process.exitcode
        print(f"probe: {self._trips.value} round trips, worst {self.worst * 1000:.1f} ms")


def read_reply(client, timeout: float = 120.0) -> bytes:
    """A whole reply ending in END, read in linear time: RawClient rescans its buffer
    per chunk, and a test process busy with a 3 MB reply would compete for the CPU
    with the server whose latency is being measured."""
    chunks = [client.buf]
    client.buf = b""
    tail = chunks[0][-5:]
    deadline = time.monotonic() + timeout
    while not tail.endswith(b"END\r\n"):
        remaining = deadline - time.monotonic()
        assert remaining > 0, "no END"
        client.sock.settimeout(remaining)
        chunk = client.sock.recv(1 << 20)
        assert chunk, "connection closed"
        chunks.append(chunk)
        tail = (tail + chunk)[-5:]
    return b"".join(chunks)


# -- a read never creates a queue ---------------------------------------------------------


@pytest.mark.parametrize("options", ["", "/t=50", "/open", "/peek", "/peek/t=50", "/t=50/open"])
def test_get_of_a_missing_queue_creates_nothing(shared_server, conn, q, options):
    """Every kind of get on a missing queue answers END and leaves no file, no stats entry."""
    creates = int(stats(shared_server)["queue_creates"])

    assert b"END\r\n" == get(conn, q + options)
    assert b"END\r\n" == conn.call(b"gets %s\r\n" % q.encode(), b"END\r\n")
    assert b"END\r\n" == conn.call(b"monitor %s 0\r\n" % q.encode(), b"END\r\n")

    fields = stats(shared_server)
    assert [] == [name for name in fields if name.startswith(f"queue_{q}_")]
    assert creates == int(fields["queue_creates"])
    assert [] == data_files(shared_server, q)


def test_a_get_naming_many_missing_queues_creates_none(shared_server, conn, q):
    """A flood of plain gets (the issue's 20,000 queues) leaves the server as it was."""
    keys = [f"{q}_{n}" for n in range(2_000)]
    conn.send(b"".join(b"get %s\r\n" % key.encode() for key in keys))
    for _ in keys:
        assert b"END\r\n" == conn.read_until()

    assert [] == data_files(shared_server, q)
    assert not any(name.startswith(f"queue_{q}") for name in stats(shared_server))


def test_blocking_get_on_a_missing_queue_is_served_by_a_later_set(make_server):
    """A /t= reader of a queue nobody has created waits (without creating it) and gets
    the item of the set that creates it; the wait leaves no trace once it ends."""
    srv = make_server()
    reader, producer = srv.raw(), srv.raw()
    reader.send(b"get later/t=20000\r\n")
    wait_until(lambda: stats(srv).get("awaited_waiters") == "1", what="the reader to wait")
    assert [] == data_files(srv, "later")

    assert b"STORED\r\n" == producer.call(set_cmd("later", b"hello"))

    assert value("later/t=20000", b"hello") + b"END\r\n" == reader.read_until()
    assert "0" == stats(srv)["awaited_queues"]
    reader.close()
    producer.close()


def test_blocked_readers_of_a_missing_queue_are_served_in_order_and_leave_no_entry(make_server):
    """Readers, /open and plain, wait on the same missing queue: first come first served;
    a reader that resets drops out, and the registry empties when the waits end."""
    srv = make_server()
    first, second, gone, producer = srv.raw(), srv.raw(), srv.raw(), srv.raw()
    first.send(b"get pair/t=20000/open\r\n")
    wait_until(lambda: stats(srv).get("awaited_waiters") == "1", what="the first reader")
    gone.send(b"get pair/t=20000\r\n")
    wait_until(lambda: stats(srv).get("awaited_waiters") == "2", what="the second reader")
    second.send(b"get pair/t=20000\r\n")
    wait_until(lambda: stats(srv).get("awaited_waiters") == "3", what="the third reader")
    gone.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    gone.sock.close()  # a reset (a FIN alone may be a half-close: that reader would wait on)
    wait_until(lambda: stats(srv).get("awaited_waiters") == "2", what="the gone reader to leave")
    assert "1" == stats(srv)["awaited_queues"]

    put(producer, "pair", b"one", b"two")

    assert value("pair/t=20000/open", b"one") + b"END\r\n" == first.read_until()
    assert value("pair/t=20000", b"two") + b"END\r\n" == second.read_until()
    assert b"END\r\n" == first.call(b"get pair/close\r\n", b"END\r\n")
    assert b"END\r\n" == get(producer, "other/t=50")
    fields = stats(srv)
    assert ("0", "0") == (fields["awaited_queues"], fields["awaited_waiters"])
    for client in (first, second, producer):
        client.close()


@pytest.mark.parametrize("size", [4, 100_000])  # 100 kB: replied as parts, never copied
def test_monitor_of_a_missing_queue_waits_for_the_set_that_creates_it(make_server, size):
    srv = make_server()
    reader, producer = srv.raw(), srv.raw()
    reader.send(b"monitor mon 20 1\r\n")
    wait_until(lambda: stats(srv).get("awaited_waiters") == "1", what="the monitor to wait")
    item = b"i" * size

    put(producer, "mon", item)

    assert value("mon", item) + b"END\r\n" + b"END\r\n" == reader.read_until(b"END\r\nEND\r\n")
    assert b"END\r\n" == reader.call(b"confirm mon 1\r\n", b"END\r\n")
    reader.close()
    producer.close()


# -- limits ---------------------------------------------------------------------------------


def test_max_queues_refuses_a_new_queue_with_a_clear_reply(make_server, tmp_path):
    srv = make_server("--config", str(write_config(tmp_path, "[server]\nmax_queues = 3\n")))
    conn = srv.raw()
    put(conn, "a", b"1")
    put(conn, "b", b"2")
    put(conn, "c", b"3")

    refused = conn.call(set_cmd("d", b"4"))
    child = conn.call(b"get a+sub\r\n")

    assert b"SERVER_ERROR too many queues (max_queues is 3)\r\n" == refused
    assert b"SERVER_ERROR too many queues (max_queues is 3)\r\n" == child
    assert b"STORED\r\n" == conn.call(set_cmd("a", b"more"))  # existing queues still work
    assert b"DELETED\r\n" == conn.call(b"delete c\r\n")
    assert b"STORED\r\n" == conn.call(set_cmd("d", b"4"))  # room again after a delete
    assert "4" == stats(srv)["queue_creates"]
    conn.close()


def test_max_queues_never_stops_queues_on_disk_from_loading(make_server, tmp_path):
    """Lowering max_queues below what is on disk loads every queue (no item is lost);
    only new queues are refused."""
    srv = make_server()
    conn = srv.raw()
    for name in ("a", "b", "c"):
        put(conn, name, b"kept")
    conn.close()
    srv.terminate()
    srv.start(["--config", str(write_config(tmp_path, "[server]\nmax_queues = 2\n"))])
    conn = srv.raw()

    for name in ("a", "b", "c"):
        assert value(name, b"kept") + b"END\r\n" == get(conn, name)
    assert conn.call(set_cmd("d", b"x")).startswith(b"SERVER_ERROR too many queues")
    conn.close()


def test_fanout_children_are_limited_per_master(make_server, tmp_path):
    """A read creates a child up to max_fanout_children of its master, then answers
    SERVER_ERROR; a set on the master reaches exactly the children that exist."""
    srv = make_server("--config", str(write_config(tmp_path, "[queues.m]\nmax_fanout_children = 3\n")))
    conn = srv.raw()
    for child in ("a", "b", "c"):
        assert b"END\r\n" == get(conn, f"m+{child}")

    refused_read = conn.call(b"get m+d\r\n")
    refused_set = conn.call(set_cmd("m+d", b"x"))
    other = get(conn, "n+a")  # another master has its own allowance

    limit_reply = b"SERVER_ERROR too many fanout children of m (max_fanout_children is 3)\r\n"
    assert (limit_reply, limit_reply, b"END\r\n") == (refused_read, refused_set, other)
    assert b"STORED\r\n" == conn.call(set_cmd("m", b"event"))
    fields = stats(srv)
    assert "m+a,m+b,m+c" == fields["queue_m_children"]
    assert ["1", "1", "1"] == [fields[f"queue_m+{c}_items"] for c in "abc"]
    assert "queue_m+d_items" not in fields
    conn.close()


def test_default_max_fanout_children_is_64(shared_server, conn):
    m = unique_name("fanout_default")
    conn.send(b"".join(b"get %s+%d\r\n" % (m.encode(), n) for n in range(64)))
    for _ in range(64):
        assert b"END\r\n" == conn.read_until()

    assert conn.call(b"get %s+64\r\n" % m.encode()).startswith(
        b"SERVER_ERROR too many fanout children of %s (max_fanout_children is 64)" % m.encode()
    )


# -- creation cost and hub fairness with thousands of queues -------------------------------


@pytest.fixture(scope="module")
def crowded(tmp_path_factory):
    """A server with CROWD queues (the default max_queues), each holding one item,
    created by pipelined sets."""
    from tests.conftest import ErqServer

    srv = ErqServer(tmp_path_factory.mktemp("crowded") / "data").start()
    client = srv.raw()
    for start in range(0, CROWD, 500):
        client.send(b"".join(set_cmd(f"crowd{n}", b"item") for n in range(start, start + 500)))
        for _ in range(500):
            assert b"STORED\r\n" == client.line(timeout=60)
    client.close()
    yield srv
    srv.stop()


def test_a_get_naming_5000_missing_queues_leaves_the_hub_to_others(crowded):
    srv = crowded
    client = srv.raw()
    keys = b" ".join(b"absent%d" % n for n in range(MANY))
    with Probe(srv) as probe:
        client.send(b"get " + keys + b"\r\n")
        reply = read_reply(client)
    client.close()

    assert b"END\r\n" == reply
    assert probe.worst < PROBE_BOUND, probe.worst
    assert "queue_absent0_items" not in stats(srv)


@pytest.mark.parametrize("command", [b"stats", b"dump_stats"])
def test_stats_over_10000_queues_leaves_the_hub_to_others(crowded, command):
    """The probe's worst wait is a fraction of one command's run: the hub was shared.
    Held in one block (as before), the probe waits the whole run.  A ratio of the two,
    measured together, holds on a loaded machine, where a fixed bound flaked."""
    srv = crowded
    client = srv.raw()
    durations = []
    with Probe(srv) as probe:
        for _ in range(3):
            started = time.monotonic()
            client.send(command + b"\r\n")
            reply = read_reply(client)
            durations.append(time.monotonic() - started)
    client.close()

    assert CROWD <= reply.count(b"items")
    assert probe.worst < 0.5 * min(durations), (probe.worst, durations)


def test_erqctl_stats_over_10000_queues_leaves_the_hub_to_others(crowded):
    """The control channel's snapshot and its JSON are made a slice of queues at a time.
    The round trip is timed on the server's side of the socket (the first byte of the
    reply), not including this process parsing megabytes of JSON."""
    import socket

    durations = []
    with Probe(crowded) as probe:
        for _ in range(3):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(60)
            sock.connect(str(crowded.data_dir / "erqpy.sock"))
            started = time.monotonic()
            sock.sendall(b'{"cmd": "stats", "args": {}}\n')
            reply = [sock.recv(1 << 20)]
            durations.append(time.monotonic() - started)
            while not reply[-1].endswith(b"\n"):
                reply.append(sock.recv(1 << 20))
            sock.close()

    body = json.loads(b"".join(reply))
    assert CROWD <= len(body["queues"]) and body["ok"]
    assert probe.worst < 0.5 * min(durations), (probe.worst, durations)


def test_a_fanout_set_to_many_children_leaves_the_hub_to_others(make_server, tmp_path):
    """One 1 MiB set to 300 children writes 300 MiB: other clients are served meanwhile,
    STORED comes once every child has the item."""
    srv = make_server("--config", str(write_config(tmp_path, "[queues.big]\nmax_fanout_children = 300\n")))
    client = srv.raw()
    client.send(b"".join(b"get big+%d\r\n" % n for n in range(300)))
    for _ in range(300):
        assert b"END\r\n" == client.read_until()
    payload = os.urandom(1 << 20)

    with Probe(srv) as probe:
        started = time.monotonic()
        assert b"STORED\r\n" == client.call(set_cmd("big", payload), timeout=120)
        elapsed = time.monotonic() - started

    assert probe.worst < PROBE_BOUND, (probe.worst, elapsed)
    fields = stats(srv)
    assert all(fields[f"queue_big+{n}_items"] == "1" for n in range(300))
    assert value("big+299", payload) + b"END\r\n" == client.call(b"get big+299\r\n", b"END\r\n", timeout=30)
    client.close()


def test_a_get_refused_by_the_child_limit_takes_nothing(make_server, tmp_path):
    """The limit is checked before any key is served: the item of an earlier key stays."""
    srv = make_server("--config", str(write_config(tmp_path, "[queues.m]\nmax_fanout_children = 1\n")))
    conn = srv.raw()
    assert b"END\r\n" == get(conn, "m+a")
    put(conn, "kept", b"item")

    reply = conn.call(b"get kept m+b\r\n")

    assert reply.startswith(b"SERVER_ERROR too many fanout children of m")
    assert value("kept", b"item") + b"END\r\n" == get(conn, "kept")
    conn.close()


def test_sigterm_ends_a_blocked_get_on_a_missing_queue(make_server):
    """A graceful stop answers END to readers waiting for a queue that does not exist."""
    srv = make_server()
    reader = srv.raw()
    reader.send(b"get nobody/t=60000\r\n")
    wait_until(lambda: stats(srv).get("awaited_waiters") == "1", what="the reader to wait")

    assert 0 == srv.terminate(timeout=60)

    assert b"END\r\n" == reader.read_until(timeout=30)
    reader.close()
