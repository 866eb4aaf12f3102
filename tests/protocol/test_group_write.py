"""The journal records of one loop turn are written together (storage/syncer.py, the
group write): one ``write`` per journal for every connection served in the turn, before
any reply that acknowledges one of them.

``erqctl status`` counts ``grouped_records``, ``group_writes`` and
``group_write_failures``.  A sitecustomize on the server's ``PYTHONPATH`` makes the
journal's ``os.write`` fail with EIO for a write holding a marked payload: a failing
disk, made to order."""

import json
import os
import signal
import time

import pytest

from tests.conftest import ErqServer, hooked_server, mounted_tmpfs


def status(server) -> dict:
    return json.loads(server.ctl("--json", "status", check=True).stdout)


def idle(client) -> None:
    """A round trip: the connection's first read is its greenlet's; after it, the
    connection is served from the loop."""
    assert b"VERSION " == client.call(b"version\r\n")[:8]


#: Every os.write whose data holds the marker fails with EIO (sockets use send, so only
#: files see it).
FAILING_WRITE = """
import errno, os
_real_write = os.write
def _failing_write(fd, data, _marker={marker!r}):
    if _marker in bytes(data):
        raise OSError(errno.EIO, "Input/output error (test)")
    return _real_write(fd, data)
os.write = _failing_write
"""
MARKER = b"FAILS-TO-WRITE"


@pytest.fixture
def failing_disk_server(make_server, tmp_path):
    return hooked_server(make_server, tmp_path, FAILING_WRITE.format(marker=MARKER))


def test_records_of_connections_ready_in_one_turn_are_written_together_and_survive_sigkill(server):
    """Eight connections whose sets all wait when the loop wakes (the server was stopped
    while they sent) are served in one turn: their eight records go to the queue's
    journal in one write (two if the turn ran past LOOP_TURN_SECONDS), and every
    acknowledged item is there after a SIGKILL."""
    clients = [server.raw() for _ in range(8)]
    for client in clients:
        idle(client)
    assert b"STORED\r\n" == clients[0].call(b"set groupq 0 0 1\r\n-\r\n")  # the queue's file exists
    before = status(server)
    assert before["group_writes_allowed"], "the test's disk has less than 64 MiB free"

    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        for n, client in enumerate(clients):
            client.send(b"set groupq 0 0 1\r\n%d\r\n" % n)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    assert [b"STORED\r\n"] * 8 == [client.line() for client in clients]

    after = status(server)
    assert 8 == after["grouped_records"] - before["grouped_records"]
    assert after["group_writes"] - before["group_writes"] in (1, 2)
    assert 0 == after["group_write_failures"]

    server.kill9()
    server.start()
    raw = server.raw()
    values = [raw.call(b"get groupq\r\n", b"END\r\n") for _ in range(10)]
    assert b"VALUE groupq 0 1\r\n-\r\nEND\r\n" == values[0]
    assert sorted(b"VALUE groupq 0 1\r\n%d\r\nEND\r\n" % n for n in range(8)) == sorted(values[1:9])
    assert b"END\r\n" == values[9]


def test_a_turn_writes_its_records_early_once_they_pass_group_write_max_bytes(server):
    """Pending records are bounded (``GROUP_WRITE_MAX_BYTES``, 2 MiB): 56 connections
    with a 60 kB ``noreply`` set each, all served in one turn (libev takes up to 64
    ready descriptors from one epoll_wait), are 3.4 MB of records, so they go out in
    more than one write (without the bound: one, at the turn's end)."""
    clients = [server.raw() for _ in range(56)]
    for client in clients:
        idle(client)
    assert b"STORED\r\n" == clients[0].call(b"set bigturnq 0 0 1\r\n-\r\n")
    item = b"b" * 60_000
    before = status(server)

    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        for client in clients:
            client.send(b"set bigturnq 0 0 %d noreply\r\n%s\r\n" % (len(item), item))
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    wait_for_status(server, "grouped_records", before["grouped_records"] + 56, timeout=30)

    after = status(server)
    assert after["group_writes"] - before["group_writes"] >= 2, (before, after)
    server.kill9()
    server.start()
    raw = server.raw()
    assert b"VALUE bigturnq 0 1\r\n-\r\nEND\r\n" == raw.call(b"get bigturnq\r\n", b"END\r\n")
    for _ in range(56):
        assert b"VALUE bigturnq 0 60000\r\n" + item + b"\r\nEND\r\n" == raw.call(b"get bigturnq\r\n", b"END\r\n")


def test_a_noreply_set_from_the_loop_is_written_in_its_own_turn(server):
    """A ``noreply`` set leaves no reply to carry its record out: the turn writes it
    anyway, with no later request on any connection to wait for."""
    raw = server.raw()
    idle(raw)
    assert b"STORED\r\n" == raw.call(b"set quietq 0 0 1\r\n-\r\n")  # (a set creating a queue is the greenlet's)
    assert b"VALUE quietq 0 1\r\n-\r\nEND\r\n" == raw.call(b"get quietq\r\n", b"END\r\n")
    before = status(server)["grouped_records"]
    raw.send(b"set quietq 0 0 5 noreply\r\nquiet\r\n")
    wait_for_status(server, "grouped_records", before + 1)  # served (on the control channel: no turn of its own)

    server.kill9()
    server.start()
    assert b"VALUE quietq 0 5\r\nquiet\r\nEND\r\n" == server.raw().call(b"get quietq\r\n", b"END\r\n")


def test_a_failed_group_write_closes_the_connection_without_acknowledging_it(failing_disk_server):
    """A pipeline of two sets is one batch and one group write; when that write fails
    (EIO), neither set is acknowledged: the connection is closed unanswered, as after a
    failed fsync.  The server and the other connections go on, and the next write to
    the same journal lands."""
    server = failing_disk_server
    raw, other = server.raw(), server.raw()
    idle(raw)
    idle(other)
    assert b"STORED\r\n" == other.call(b"set eioq 0 0 5\r\nfirst\r\n")

    raw.send(b"set eioq 0 0 1\r\na\r\nset eioq 0 0 %d\r\n%s\r\n" % (len(MARKER), MARKER))
    assert raw.is_closed(timeout=10)
    assert b"" == raw.buf  # not one STORED

    assert 1 == status(server)["group_write_failures"]
    assert "DATA MAY NOT BE ON DISK: a group write" in server.log()
    assert b"STORED\r\n" == other.call(b"set eioq 0 0 4\r\nlast\r\n")

    server.kill9()
    server.start()
    raw = server.raw()
    # On disk: the acknowledged items, and neither of the two unacknowledged ones.
    assert b"VALUE eioq 0 5\r\nfirst\r\nEND\r\n" == raw.call(b"get eioq\r\n", b"END\r\n")
    assert b"VALUE eioq 0 4\r\nlast\r\nEND\r\n" == raw.call(b"get eioq\r\n", b"END\r\n")
    assert b"END\r\n" == raw.call(b"get eioq\r\n", b"END\r\n")


def test_replies_handed_to_the_greenlet_wait_for_the_records_the_loop_left(failing_disk_server):
    """A set served from the loop, then a command that is the greenlet's (``stats``) in
    the same read: the greenlet sends both replies, and before it does the set's record
    must be written.  Here that write fails, so no STORED may go out (sent first, it
    would acknowledge a record that the turn's end then fails to write)."""
    server = failing_disk_server
    raw = server.raw()
    idle(raw)
    assert b"STORED\r\n" == raw.call(b"set handq 0 0 1\r\n-\r\n")  # (a set creating a queue is the greenlet's)
    raw.send(b"set handq 0 0 %d\r\n%s\r\nstats\r\n" % (len(MARKER), MARKER))
    assert raw.is_closed(timeout=10)
    assert b"STORED" not in raw.buf
    assert 1 == status(server)["group_write_failures"]


def test_a_greenlet_write_to_a_journal_with_records_pending_writes_them_first(server):
    """A set served from the loop leaves its ADD pending; a greenlet served later in the
    same turn takes that item, and its REMOVE is written at once.  The file must get the
    ADD first (the other way round, replay would bring the item back).  The turn is made
    deterministic as in test_loop_serving: the server is stopped while both requests are
    sent, and libev runs the watcher reported last first.  The reader's greenlet waits
    for the end of a request it sent half of, so it is not served from the loop; its
    get has ``/t=``, a command that may wait, whose records a greenlet never groups."""
    reader, writer = server.raw(), server.raw()
    idle(writer)
    idle(reader)
    assert b"STORED\r\n" == writer.call(b"set wakeq 0 0 1\r\n-\r\n")
    assert b"VALUE wakeq 0 1\r\n-\r\nEND\r\n" == writer.call(b"get wakeq\r\n", b"END\r\n")
    reader.send(b"get wakeq/t=1")
    time.sleep(0.2)  # the reader's greenlet waits for the rest of its request
    before = status(server)

    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        reader.send(b"\r\n")
        writer.send(b"set wakeq 0 0 4\r\nwake\r\n")  # served first
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    assert b"STORED\r\n" == writer.line()
    assert b"VALUE wakeq/t=1 0 4\r\nwake\r\nEND\r\n" == reader.read_until(b"END\r\n")
    assert 1 == status(server)["grouped_records"] - before["grouped_records"]  # the ADD

    server.kill9()
    server.start()
    assert b"END\r\n" == server.raw().call(b"get wakeq\r\n", b"END\r\n")


def pipelined_sets(queue: bytes, payloads) -> bytes:
    return b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (queue, len(data), data) for data in payloads)


def read_to_the_end(raw, timeout: float = 30.0) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = bytearray(raw.buf)
    raw.sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = raw.sock.recv(65536)
        except ConnectionError:
            break
        except TimeoutError:
            raise AssertionError("the connection was not closed") from None
        if not chunk:
            break
        data += chunk
    else:
        raise AssertionError("the connection was not closed")
    return bytes(data)


def test_a_pipeline_past_the_loops_turn_is_grouped_by_its_greenlet_and_survives_sigkill(server):
    """3,000 sets in one send: the loop's callback runs what fits in its turn and hands
    the rest to the connection's greenlet, which groups the records of the sets too
    (it wrote one record per set before): nearly every record is grouped, in far fewer
    writes, and every acknowledged item is there after SIGKILL, in order."""
    raw = server.raw()
    idle(raw)
    assert b"STORED\r\n" == raw.call(b"set pipeq 0 0 1\r\n-\r\n")
    payloads = [b"item-%06d" % n for n in range(3000)]
    before = status(server)

    raw.send(pipelined_sets(b"pipeq", payloads))
    for _ in payloads:
        assert b"STORED\r\n" == raw.line(timeout=30)

    after = status(server)
    assert after["greenlet_batches"] > before["greenlet_batches"]  # the greenlet ran part of it
    assert after["grouped_records"] - before["grouped_records"] >= 2900
    assert after["group_writes"] - before["group_writes"] <= 300
    server.kill9()
    server.start()
    raw = server.raw()
    got = [raw.call(b"get pipeq\r\n", b"END\r\n") for _ in range(3001)]
    assert [b"VALUE pipeq 0 1\r\n-\r\nEND\r\n"] + [b"VALUE pipeq 0 %d\r\n%s\r\nEND\r\n" % (len(d), d)
                                                    for d in payloads] == got
    assert b"END\r\n" == raw.call(b"get pipeq\r\n", b"END\r\n")


def test_a_failed_group_write_of_a_greenlet_withholds_what_it_would_acknowledge(failing_disk_server):
    """The same pipeline with a set the disk fails to write near its end, in the part
    the greenlet runs: the connection is closed before any reply that acknowledges a
    record of that group write; every STORED that did go out is on disk after SIGKILL,
    and the failed one is not."""
    server = failing_disk_server
    raw = server.raw()
    idle(raw)
    assert b"STORED\r\n" == raw.call(b"set greq 0 0 1\r\n-\r\n")
    payloads = [b"item-%06d" % n for n in range(3000)] + [MARKER] + [b"late-%02d" % n for n in range(10)]

    raw.send(pipelined_sets(b"greq", payloads))
    replies = read_to_the_end(raw)
    acknowledged = replies.count(b"STORED\r\n")
    assert replies == b"STORED\r\n" * acknowledged  # only whole acknowledgements, then the close

    assert acknowledged < 3000  # not all before the marker: a group holds it and others
    assert 1 == status(server)["group_write_failures"]
    server.kill9()
    server.start()
    raw = server.raw()
    got = []
    for _ in range(len(payloads) + 2):
        reply = raw.call(b"get greq\r\n", b"END\r\n")
        if reply == b"END\r\n":
            break
        got.append(reply.split(b"\r\n")[1])
    assert b"-" == got[0]
    assert payloads[:acknowledged] == got[1:acknowledged + 1]
    assert MARKER not in got


@pytest.fixture
def small_disk(tmp_path):
    """A 96 MiB tmpfs: room for group writes until a file fills it."""
    yield from mounted_tmpfs(tmp_path, "96m")


def wait_for_status(server, key, value, timeout=10.0) -> None:
    deadline = time.monotonic() + timeout
    while status(server)[key] != value:
        assert time.monotonic() < deadline, f"{key} never became {value!r}"
        time.sleep(0.05)


def test_a_disk_nearly_full_gets_records_written_one_by_one_and_each_refusal_its_own_reply(small_disk, tmp_path):
    """Group writes stop once the disk has less than GROUP_WRITE_HEADROOM free: then a
    full disk refuses each set on its own (``SERVER_ERROR``, the connection usable),
    in the same pipeline as sets that were stored, and every STORED item is kept."""
    server = ErqServer(small_disk / "data")
    server.log_path = tmp_path / "server.log"  # not on the small disk
    server.start()
    try:
        raw = server.raw()
        idle(raw)
        assert b"STORED\r\n" == raw.call(b"set fullq 0 0 1\r\n-\r\n")
        assert status(server)["group_writes_allowed"]

        with open(small_disk / "filler", "wb") as filler:  # leaves about 1 MiB
            block = b"f" * (1 << 20)
            for _ in range(int(os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize >> 20) - 1):
                filler.write(block)
        wait_for_status(server, "group_writes_allowed", False)

        item = b"i" * 65536
        raw.send(b"".join(b"set fullq 0 0 %d\r\n%s\r\n" % (len(item), item) for _ in range(40)))
        replies = [raw.line(timeout=30) for _ in range(40)]
        stored = replies.count(b"STORED\r\n")
        assert 0 < stored < 40, replies
        assert all(r.startswith(b"SERVER_ERROR journal write failed for fullq") for r in replies[stored:]), replies
        idle(raw)  # still usable
        assert 0 == status(server)["group_write_failures"]

        os.unlink(small_disk / "filler")
        wait_for_status(server, "group_writes_allowed", True)
        values = [raw.call(b"get fullq\r\n", b"END\r\n") for _ in range(stored + 2)]
        assert b"VALUE fullq 0 1\r\n-\r\nEND\r\n" == values[0]
        assert [b"VALUE fullq 0 65536\r\n" + item + b"\r\nEND\r\n"] * stored == values[1:stored + 1]
        assert b"END\r\n" == values[-1]
    finally:
        server.stop()
