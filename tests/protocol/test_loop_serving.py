"""Batches served from the event loop's callback (server/loop_serving.py) and handed over
to the connection's greenlet where they might wait: same replies, same order.

``erqctl status`` counts both kinds of batch (``loop_batches``, ``greenlet_batches``),
which is how these tests know which path served them."""

import json
import os
import signal
import socket
import struct
import time

import pytest

from tests.conftest import hooked_server


def status(server) -> dict:
    result = server.ctl("--json", "status", check=True)
    return json.loads(result.stdout)


def round_trip(raw, data: bytes, terminator: bytes) -> bytes:
    """Send once the connection is idle (its greenlet parked), read the whole reply."""
    raw.send(data)
    return raw.read_until(terminator)


def test_plain_sets_and_gets_one_at_a_time_are_served_from_the_loop(server):
    raw = server.raw()
    before = status(server)

    for n in range(50):
        assert b"STORED\r\n" == round_trip(raw, b"set loopq 0 0 %d\r\nv%d\r\n" % (len(b"v%d" % n), n), b"\r\n")
    values = [round_trip(raw, b"get loopq\r\n", b"END\r\n") for _ in range(50)]

    after = status(server)
    assert [b"VALUE loopq 0 %d\r\nv%d\r\nEND\r\n" % (len(b"v%d" % n), n) for n in range(50)] == values
    # The first read of a connection is its greenlet's (it tells the protocol); the
    # other 99 batches are the loop's.
    assert after["loop_batches"] - before["loop_batches"] >= 90


def test_replies_of_connections_ready_in_one_turn_go_out_together_at_its_end(server):
    """Eight idle connections whose requests are all waiting when the loop wakes (the
    server was stopped while they sent) are served in one turn, and their replies are
    sent together after the last of them ran (``loop_serving.TurnReplies``): one send
    round for the eight, each connection its own replies, in order."""
    clients = [server.raw() for _ in range(8)]
    for n, client in enumerate(clients):
        assert b"VERSION " == round_trip(client, b"version\r\n", b"\r\n")[:8]  # now idle
        # The queue exists before the turn: creating one opens its journal file.
        assert b"END\r\n" == round_trip(client, b"set turnq%d 0 0 1\r\n-\r\nget turnq%d\r\n" % (n, n),
                                          b"END\r\n")[-5:]
    before = status(server)

    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        for n, client in enumerate(clients):
            client.send(b"set turnq%d 0 0 1\r\n%d\r\nget turnq%d\r\n" % (n, n, n))
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    replies = [client.read_until(b"END\r\n") for client in clients]

    after = status(server)
    assert [b"STORED\r\nVALUE turnq%d 0 1\r\n%d\r\nEND\r\n" % (n, n) for n in range(8)] == replies
    assert 8 == after["turn_end_replies"] - before["turn_end_replies"]
    # One round, or two if the process lost its CPU for a whole LOOP_TURN_SECONDS.
    assert after["turn_end_sends"] - before["turn_end_sends"] in (1, 2)


def test_a_long_turn_sends_the_replies_due_before_it_ends(server):
    """A turn that serves many ready connections sends what is due once it has run for
    LOOP_TURN_SECONDS, so an early reply does not wait for the whole turn: 64 idle
    connections with 16 sets each (a batch is never cut under 16 requests) are over a
    thousand sets, several ms of work, so their replies go out in more than one round."""
    clients = [server.raw() for _ in range(64)]
    for n, client in enumerate(clients):
        assert b"VERSION " == round_trip(client, b"version\r\n", b"\r\n")[:8]
        assert b"STORED\r\n" == round_trip(client, b"set longturn%d 0 0 1\r\nx\r\n" % n, b"\r\n")
    before = status(server)

    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        for n, client in enumerate(clients):
            client.send(b"set longturn%d 0 0 1\r\nx\r\n" % n * 16)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    replies = [client.read_exactly(8 * 16, timeout=30) for client in clients]

    after = status(server)
    assert [b"STORED\r\n" * 16] * 64 == replies
    assert 64 == after["turn_end_replies"] - before["turn_end_replies"]
    assert after["turn_end_sends"] - before["turn_end_sends"] >= 2


def test_a_batch_counts_its_turn_from_the_loops_poll(server):
    """A batch run from the loop's callback hands the rest of its requests to its greenlet
    (which gives way) once the loop's turn is LOOP_TURN_SECONDS old, counted from the
    poll, so the callbacks that ran before it count.  It counted from its own 16th
    request, so each ready connection ran 2 ms more and a turn grew with their number (a
    300,000 x 1 KiB drain held turns of 7-9 ms, session 16).  64 connections ready in one
    turn, each with 16 sets and 200 versions (a fraction of a ms each): all but the first
    few find the turn old at their first look and hand over."""
    clients = [server.raw() for _ in range(64)]
    version = b""
    for n, client in enumerate(clients):
        version = round_trip(client, b"version\r\n", b"\r\n")
        assert b"STORED\r\n" == round_trip(client, b"set oldturn%d 0 0 1\r\nx\r\n" % n, b"\r\n")
    expected = b"STORED\r\n" * 16 + version * 200
    before = status(server)

    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        for n, client in enumerate(clients):
            client.send(b"set oldturn%d 0 0 1\r\nx\r\n" % n * 16 + b"version\r\n" * 200)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    replies = [client.read_exactly(len(expected), timeout=30) for client in clients]

    after = status(server)
    assert [expected] * 64 == replies
    assert after["greenlet_batches"] - before["greenlet_batches"] >= 32, {k: after[k] - before[k] for k in ("greenlet_batches", "loop_batches", "turn_end_sends", "turn_end_replies")}


#: A sitecustomize for the server process: while the gate file exists, every os.fsync
#: waits (up to a minute) before it runs.  A slow disk, made to order.
FSYNC_GATE = """
import os, time
_real_fsync = os.fsync
def _gated_fsync(fd, _gate={gate!r}):
    deadline = time.monotonic() + 60
    while os.path.exists(_gate) and time.monotonic() < deadline:
        time.sleep(0.005)
    return _real_fsync(fd)
os.fsync = _gated_fsync
"""


def test_under_fsync_always_a_reply_from_the_loop_waits_for_its_fsync(make_server, tmp_path):
    """fsync ``always``: the STORED of a set served from the loop's callback, and left
    for the end of its turn, goes out only once the write is fsynced; meanwhile the
    other connections are served, also one served in the same turn before the set (its
    reply acknowledges no write, so it waits for no fsync)."""
    gate = tmp_path / "fsync-gate"
    server = hooked_server(make_server, tmp_path, FSYNC_GATE.format(gate=str(gate)), "--fsync", "always")
    writer, other = server.raw(), server.raw()
    for client in (writer, other):
        assert b"VERSION " == round_trip(client, b"version\r\n", b"\r\n")[:8]  # now idle
    # The queue exists before the gate closes: creating one fsyncs the data directory.
    assert b"STORED\r\n" == round_trip(writer, b"set alwaysq 0 0 1\r\n-\r\n", b"\r\n")
    before = status(server)

    gate.touch()
    try:
        os.kill(server.proc.pid, signal.SIGSTOP)  # both requests wait for one turn ...
        try:
            writer.send(b"set alwaysq 0 0 1\r\nx\r\n")
            # ... and this one is served first: libev runs a turn's ready watchers from
            # the last reported (epoll reports them in the order they became ready).
            other.send(b"version\r\n")
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert b"VERSION " == other.read_until(b"\r\n", timeout=5)[:8]
        for _ in range(5):  # the loop goes on serving others while the fsync waits
            assert b"VERSION " == round_trip(other, b"version\r\n", b"\r\n")[:8]
        with pytest.raises(TimeoutError):
            writer.read_until(b"\r\n", timeout=0.5)
    finally:
        gate.unlink()
    assert b"STORED\r\n" == writer.read_until(b"\r\n", timeout=30)

    after = status(server)
    assert after["turn_end_replies"] - before["turn_end_replies"] >= 6  # the set and the versions


#: A sitecustomize for the server process: while the gate file exists, creating a file
#: exclusively (a new queue's journal, storage/newfiles) waits, up to a minute.
CREATE_GATE = """
import os, time
_real_open = os.open
def _gated_open(path, flags, *args, _gate={gate!r}, **kwargs):
    if flags & os.O_EXCL and str(path).endswith(".journal"):
        deadline = time.monotonic() + 60
        while os.path.exists(_gate) and time.monotonic() < deadline:
            time.sleep(0.005)
    return _real_open(path, flags, *args, **kwargs)
os.open = _gated_open
"""


def create_gated(make_server, tmp_path):
    """A server under CREATE_GATE, the gate's path (closed while the file exists) and two
    idle connections to it."""
    gate = tmp_path / "create-gate"
    server = hooked_server(make_server, tmp_path, CREATE_GATE.format(gate=str(gate)))
    clients = server.raw(), server.raw()
    for client in clients:
        assert b"VERSION " == round_trip(client, b"version\r\n", b"\r\n")[:8]  # now idle
    return (gate, *clients)


def test_a_get_on_another_connection_finds_a_noreply_set_whose_queue_is_being_created(make_server, tmp_path):
    """``set q ... noreply`` creates q, whose journal a worker thread makes while the
    loop serves; a get of q sent after it on another connection waits for that creation
    and finds the item, instead of a miss (README "What was tuned", item 2)."""
    gate, writer, reader = create_gated(make_server, tmp_path)

    gate.touch()
    try:
        writer.send(b"set creatingq 0 0 1 noreply\r\nx\r\n")
        time.sleep(0.2)  # the set's greenlet now waits for the gated file
        reader.send(b"get creatingq\r\n")
        with pytest.raises(TimeoutError):  # the get waits for the creation, no miss
            reader.read_until(b"END\r\n", timeout=0.3)
    finally:
        gate.unlink()
    assert b"VALUE creatingq 0 1\r\nx\r\nEND\r\n" == reader.read_until(b"END\r\n", timeout=30)


#: Commands that find an existing queue (``collection.lookup``) and act on it, sent on
#: another connection after the ``set ... noreply`` that creates ``lookupq``: the reply
#: each gives once it found the queue with the item in it, and whether the item is gone
#: after it.
LOOKUP_COMMANDS = [
    pytest.param(b"delete lookupq\r\n", b"DELETED\r\n", b"DELETED\r\n", True, id="delete"),
    pytest.param(b"flush lookupq\r\n", b"END\r\n", b"END\r\n", True, id="flush"),
    pytest.param(b"md lookupq\r\n", b"HD\r\n", b"\r\n", True, id="md"),
    pytest.param(b"me lookupq\r\n", b"ME lookupq items=1 ", b"\r\n", False, id="me"),  # one queue's stats
]


@pytest.mark.parametrize("command, reply_start, terminator, removes", LOOKUP_COMMANDS)
def test_a_command_on_another_connection_finds_a_noreply_set_whose_queue_is_being_created(
    make_server, tmp_path, command, reply_start, terminator, removes,
):
    """As the get above, for the commands that look a queue up without creating it
    (``collection.lookup``: delete, flush, ``md``, ``me``): each waits for the creation
    in flight and acts on the queue and its item, instead of finding no queue (a delete
    or flush that removes nothing, the item appearing after it; ``NF``, ``EN``)."""
    gate, writer, other = create_gated(make_server, tmp_path)

    gate.touch()
    try:
        writer.send(b"set lookupq 0 0 1 noreply\r\nx\r\n")
        time.sleep(0.2)  # the set's greenlet now waits for the gated file
        other.send(command)
        with pytest.raises(TimeoutError):  # the command waits for the creation
            other.read_until(terminator, timeout=0.3)
    finally:
        gate.unlink()
    reply = other.read_until(terminator, timeout=30)
    assert reply.startswith(reply_start), reply

    expected = b"END\r\n" if removes else b"VALUE lookupq 0 1\r\nx\r\nEND\r\n"
    assert expected == round_trip(other, b"get lookupq\r\n", b"END\r\n")


def test_a_pipeline_of_loop_safe_and_waiting_commands_keeps_its_order(server):
    """Handed over at the first request that may wait (``/t=``), the rest runs in the
    greenlet after the replies already made: one reply stream, in request order."""
    raw = server.raw()
    assert b"VERSION " == round_trip(raw, b"version\r\n", b"\r\n")[:8]
    before = status(server)

    raw.send(
        b"set pipeq 0 0 1\r\na\r\n"
        b"get pipeq\r\n"
        b"get pipe_empty/t=100\r\n"  # waits 100 ms: the greenlet's
        b"set pipeq 0 0 1\r\nb\r\n"
        b"bogus\r\n"
        b"get pipeq\r\n"
        b"version\r\n"
    )
    reply = raw.read_until(b"VERSION ") + raw.read_until(b"\r\n")

    assert reply.startswith(
        b"STORED\r\nVALUE pipeq 0 1\r\na\r\nEND\r\n"
        b"END\r\n"
        b"STORED\r\nERROR\r\nVALUE pipeq 0 1\r\nb\r\nEND\r\nVERSION "
    )
    after = status(server)
    assert after["greenlet_batches"] > before["greenlet_batches"]  # the handover


def test_a_reply_too_large_for_the_loop_is_sent_whole_by_the_greenlet(server):
    raw = server.raw()
    big = bytes(range(256)) * 4096  # 1 MiB, over LOOP_SEND_LIMIT
    assert b"STORED\r\n" == round_trip(raw, b"set bigq 0 0 %d\r\n%s\r\n" % (len(big), big), b"\r\n")

    raw.send(b"get bigq\r\n")
    header = raw.read_until(b"\r\n")
    assert b"VALUE bigq 0 %d\r\n" % len(big) == header
    assert big + b"\r\nEND\r\n" == raw.read_exactly(len(big) + 7, timeout=30)
    assert b"VERSION " == round_trip(raw, b"version\r\n", b"\r\n")[:8]


def test_a_client_that_does_not_read_never_holds_the_loop(server):
    """A reply the socket buffer does not take goes to the connection's greenlet, which
    waits for that client; every other connection is served meanwhile."""
    slow = server.raw()
    item = b"x" * (1024 * 1024)
    for _ in range(16):
        slow.send(b"set slowq 0 0 %d\r\n%s\r\n" % (len(item), item))
    assert b"STORED\r\n" * 16 == slow.read_exactly(8 * 16, timeout=30)

    # 16 MiB of replies that nobody reads yet: more than the sockets' buffers hold.
    slow.send(b"get slowq\r\n" * 16)
    other = server.raw()
    for _ in range(20):
        assert round_trip(other, b"version\r\n", b"\r\n").startswith(b"VERSION ")

    expected = (b"VALUE slowq 0 %d\r\n%s\r\nEND\r\n" % (len(item), item)) * 16
    assert expected == slow.read_exactly(len(expected), timeout=60)


def test_binary_first_bytes_after_a_pause_still_select_the_binary_protocol(server):
    """A connection's first read decides its protocol; the loop serves text only, so a
    client that connects and sends later must still be read by its greenlet first."""
    sock = socket.create_connection(server.address, timeout=10)
    try:
        time.sleep(0.3)  # the server's first read found nothing; it waits for input
        # A binary NOOP: magic 0x80, opcode 0x0a, no key, no body.
        sock.sendall(struct.pack(">BBHBBHIIQ", 0x80, 0x0A, 0, 0, 0, 0, 0, 7, 0))
        header = b""
        while len(header) < 24:
            header += sock.recv(24 - len(header))
        magic, opcode, _key_length, _extras, _type, status_code, _body, opaque, _cas = struct.unpack(
            ">BBHBBHIIQ", header)
        assert (0x81, 0x0A, 0, 7) == (magic, opcode, status_code, opaque)
    finally:
        sock.close()


@pytest.mark.parametrize("command", [b"get loop_t/t=50\r\n", b"get a b c d e f g h/t=50\r\n"])
def test_a_get_that_may_wait_runs_in_the_greenlet(server, command):
    raw = server.raw()
    assert b"VERSION " == round_trip(raw, b"version\r\n", b"\r\n")[:8]
    before = status(server)

    assert b"END\r\n" == round_trip(raw, command, b"END\r\n")

    after = status(server)
    assert after["greenlet_batches"] == before["greenlet_batches"] + 1


def test_gets_from_the_loop_that_fill_the_journal_past_its_size_are_answered_and_compacted(make_server, tmp_path):
    """A plain get past max_journal_size compacts the journal, and a large snapshot
    (here 1.2 MiB of live items) is written by the thread pool, which the event loop's
    callback cannot wait for: the compaction runs in a greenlet of its own right after,
    and every get is answered with its item, in order.  (A first version of the loop
    path waited for the thread there: the get's item, already removed, was lost behind
    ``SERVER_ERROR internal error``.)"""
    from proto_helpers import stats

    config = tmp_path / "erqpy.toml"
    config.write_text("[queues.default]\nmax_journal_size = 1048576\n")
    server = make_server("--config", str(config))
    raw = server.raw()
    payload = b"p" * 1024

    def item(n):
        return b"%06d-" % n + payload

    def store(n):
        assert b"STORED\r\n" == round_trip(raw, b"set compactq 0 0 %d\r\n%s\r\n" % (len(item(n)), item(n)), b"\r\n")

    live = 1200  # items the snapshots carry: 1.2 MiB
    for n in range(live):
        store(n)
    for n in range(live, live + 4200):  # churn: the journal grows past 4 x 1.2 MiB, then is compacted
        store(n)
        assert b"VALUE compactq 0 %d\r\n%s\r\nEND\r\n" % (len(item(n - live)), item(n - live)) == round_trip(
            raw, b"get compactq\r\n", b"END\r\n")

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        fields = stats(server)
        if int(fields["queue_compactq_journal_rewrites"]) >= 1:
            break
        time.sleep(0.1)
    assert int(fields["queue_compactq_journal_rewrites"]) >= 1
    assert int(fields["queue_compactq_logsize"]) < 5 * 1048576
    assert live == int(fields["queue_compactq_items"])
    assert status(server)["loop_batches"] >= 9000


@pytest.mark.parametrize("request_line", [
    b"mg loop_mg/t=200 v\r\n",
    b"mg " + __import__("base64").b64encode(b"loop_mgb/t=200") + b" b v\r\n",  # the /t= hidden in base64
])
def test_a_meta_get_that_waits_runs_in_the_greenlet_and_answers(server, request_line):
    raw = server.raw()
    assert b"MN\r\n" == round_trip(raw, b"mn\r\n", b"\r\n")
    before = status(server)

    started = time.monotonic()
    assert b"EN\r\n" == round_trip(raw, request_line, b"\r\n")

    assert time.monotonic() - started >= 0.15  # it waited its /t=
    assert status(server)["greenlet_batches"] == before["greenlet_batches"] + 1
    assert b"MN\r\n" == round_trip(raw, b"mn\r\n", b"\r\n")


def minor_faults(pid: int) -> int:
    """The process's minor page faults so far, all threads (proc(5): field 10)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[7])  # field 10, counted from the state, which is field 3


@pytest.mark.parametrize("request_bytes", [b"version\r\n", b"set readq 0 0 5\r\nhello\r\n"])
def test_reads_map_no_fresh_memory(server, request_bytes):
    """A read of a connection's input goes into a buffer allocated once
    (server/receiving.py).  ``recv(256 KiB)`` made glibc map fresh pages for every read
    (and remap and unmap them: three system calls more per request), so each request
    cost at least one page fault; 2,000 requests must now cost far fewer than 2,000."""
    raw = server.raw()
    terminator = b"\r\n"
    for _ in range(200):  # the server's own one-time allocations settle first
        round_trip(raw, request_bytes, terminator)
    before = minor_faults(server.proc.pid)
    for _ in range(2000):
        round_trip(raw, request_bytes, terminator)
    faults = minor_faults(server.proc.pid) - before
    assert faults < 400, f"{faults} minor page faults for 2,000 requests"
