"""Per-connection and server-wide bounds on a real server: output a client does not read,
partial requests that never complete, buffered input across connections, and the
pipeline of a client that has reset.

Memory is the server's own, read from /proc/<pid>/status (VmHWM: the peak resident set),
with generous bounds: the unbounded code grows by hundreds of MiB in each case.
"""

import os
import signal
import socket
import struct
import threading
import time

import pytest

from proto_helpers import make_queue, parse_stats, put, queue_stat, set_cmd, stats, unique_name, value, wait_until

MiB = 1024 * 1024


def peak_rss(pid: int) -> int:
    """The process's peak resident set size, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def wait_server_idle(pid: int, quiet: float = 0.5, timeout: float = 60.0) -> None:
    """Until the server has used no CPU for ``quiet`` seconds: it has done all it will do
    (here: it is blocked on a client that does not read)."""
    deadline = time.monotonic() + timeout
    last = cpu_ticks(pid)
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = cpu_ticks(pid)
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet:
            return
    raise AssertionError("server never went idle")


def reset(client) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashed or killed client does."""
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def server_config(tmp_path, text: str) -> str:
    path = tmp_path / "limits.toml"
    path.write_text(text)
    return str(path)


# -- output a client does not read (issue 9 item 7) -----------------------------------------


def test_pipelined_peeks_of_a_large_item_by_a_client_that_does_not_read_stay_bounded(server, q):
    """200 pipelined peeks of a 1 MiB item from a client that reads nothing grow the
    server by far less than 200 copies; when the client reads, every reply is whole."""
    item = bytes(range(256)) * 4096  # 1 MiB
    put(server.raw(), q, item)
    reader = server.raw()
    before = peak_rss(server.proc.pid)

    reader.send(b"get %s/peek\r\n" % q.encode() * 200)
    wait_server_idle(server.proc.pid)

    grown = peak_rss(server.proc.pid) - before
    assert grown < 64 * MiB, f"server grew by {grown / MiB:.0f} MiB"
    expected = value(f"{q}/peek", item) + b"END\r\n"
    for _ in range(200):
        assert expected == reader.read_exactly(len(expected), timeout=30)
    reader.close()


def test_get_naming_a_large_item_300_times_does_not_copy_it_per_key(server, q):
    """One get with 300 peek keys of a 1 MiB item: the reply refers to the item, it is
    not copied 300 times; the client that reads late gets all of it."""
    item = b"\xab" * MiB
    put(server.raw(), q, item)
    reader = server.raw()
    before = peak_rss(server.proc.pid)
    key = f"{q}/peek"

    reader.send(b"get " + b" ".join([key.encode()] * 300) + b"\r\n")
    wait_server_idle(server.proc.pid)

    grown = peak_rss(server.proc.pid) - before
    assert grown < 64 * MiB, f"server grew by {grown / MiB:.0f} MiB"
    one = value(key, item)
    for _ in range(300):  # one value at a time: the test client is simple, not fast
        assert one == reader.read_exactly(len(one), timeout=30)
    assert b"END\r\n" == reader.line()
    reader.close()


def test_get_naming_a_60_kib_item_thousands_of_times_does_not_copy_it_per_key(server):
    """A 64 KiB line names a short queue's 60 KiB item ~3,500 times: the reply still
    refers to the item instead of copying it per key."""
    q = unique_name("s")
    item = b"\xcd" * (60 * 1024)
    put(server.raw(), q, item)
    key = f"{q}/peek"
    count = (64 * 1024 - 8) // (len(key) + 1)
    reader = server.raw()
    before = peak_rss(server.proc.pid)

    reader.send(b"get " + b" ".join([key.encode()] * count) + b"\r\n")
    wait_server_idle(server.proc.pid)

    grown = peak_rss(server.proc.pid) - before
    assert grown < 64 * MiB, f"server grew by {grown / MiB:.0f} MiB for {count} keys"
    one = value(key, item)
    for _ in range(count):
        assert one == reader.read_exactly(len(one), timeout=30)
    assert b"END\r\n" == reader.line()
    reader.close()


def test_pipelined_stats_with_many_queues_stay_bounded(server, q):
    """200 pipelined `stats` with 600 queues, unread: replies are not all built at once."""
    creator = server.raw()
    names = [f"{q}_{n}" for n in range(600)]
    creator.send(b"".join(set_cmd(name, b"x") for name in names))  # a get creates no queue
    assert [b"STORED\r\n"] * len(names) == [creator.line(timeout=60) for _ in names]
    one = creator.call(b"stats\r\n", b"END\r\n")
    assert len(parse_stats(one)) > 600
    reader = server.raw()
    before = peak_rss(server.proc.pid)

    reader.send(b"stats\r\n" * 200)
    wait_server_idle(server.proc.pid)

    grown = peak_rss(server.proc.pid) - before
    assert grown < 64 * MiB + 10 * len(one), f"server grew by {grown / MiB:.0f} MiB"
    for _ in range(200):
        assert reader.read_until(b"END\r\n", timeout=30).startswith(b"STAT pid ")
    reader.close()


def test_input_sent_behind_a_blocked_get_is_read_only_up_to_a_bound(server, q):
    """While a get blocks, a client sends 100 sets of 1 MiB: the server reads only a few
    MiB of them until the get ends, then stores them all in order."""
    make_queue(server, q)  # a read alone creates no queue, and shows in no stats
    reader, producer = server.raw(), server.raw()
    reader.send(b"get %s/t=60000\r\n" % q.encode())
    wait_until(lambda: queue_stat(server, q, "waiters", 0) == 1, what="the reader to block")
    block = b"b" * MiB
    before = peak_rss(server.proc.pid)
    sender = threading.Thread(target=reader.send, args=(set_cmd(q + "_big", block) * 100,), daemon=True)
    sender.start()
    wait_server_idle(server.proc.pid)

    grown = peak_rss(server.proc.pid) - before
    assert grown < 64 * MiB, f"server grew by {grown / MiB:.0f} MiB"
    put(producer, q, b"wake")
    assert value(f"{q}/t=60000", b"wake") + b"END\r\n" == reader.read_until()
    assert [b"STORED\r\n"] * 100 == [reader.line(timeout=60) for _ in range(100)]
    sender.join(timeout=60)
    assert 100 == queue_stat(server, q + "_big", "items")


# -- a client that has reset (issue 9 item 5) --------------------------------------------------


def pause(srv):
    """SIGSTOP the server: what clients send meanwhile (data, then a reset) is all in the
    kernel when it resumes, which is exactly the case of a server busy elsewhere."""
    os.kill(srv.proc.pid, signal.SIGSTOP)


def resume(srv):
    os.kill(srv.proc.pid, signal.SIGCONT)


def send_then_reset_while_paused(server, q, pipeline: bytes):
    """1,000 items on ``q``, then a connected client sends ``pipeline`` and resets while
    the server is stopped, so that both are waiting when it resumes.  Returns once the
    server has ended that connection."""
    producer = server.raw()
    producer.send(b"".join(set_cmd(q, b"item%d" % n, noreply=True) for n in range(1000)))
    wait_until(lambda: queue_stat(server, q, "items") == 1000, what="1000 items")
    victim = server.raw()
    assert victim.call(b"version\r\n").startswith(b"VERSION")
    pause(server)
    try:
        victim.send(pipeline)
        reset(victim)
    finally:
        resume(server)
    wait_until(lambda: stats(server)["curr_connections"] == "2", what="the victim's connection to end")


def test_pipeline_behind_a_failed_send_is_not_run(server, q):
    """A client sends a reply-producing request, a blocking get and 1,000 gets, then
    resets: the send before the wait fails, and none of the 1,000 gets runs (each would
    dequeue an item for nobody).  No traceback is logged."""
    send_then_reset_while_paused(
        server, q, b"version\r\nget %s_empty/t=1\r\n" % q.encode() + b"get %s\r\n" % q.encode() * 1000
    )

    assert 1000 == queue_stat(server, q, "items")
    assert "Traceback" not in server.log()


def test_long_pipeline_of_a_client_that_reset_stops_early(server, q):
    """1,000 pipelined gets and a reset: the server notices the reset within the batch and
    stops, instead of dequeuing every item for a client that has gone."""
    send_then_reset_while_paused(server, q, b"get %s\r\n" % q.encode() * 1000)

    assert queue_stat(server, q, "items") >= 400
    assert "Traceback" not in server.log()


# -- partial requests (issue 9 item 8) -------------------------------------------------------


@pytest.mark.parametrize("partial", [b"set {q} 0 0 100\r\nabc", b"get {q}", b"set {q} 0 0 5"])
def test_request_not_completed_within_request_timeout_closes_the_connection(make_server, tmp_path, q, partial):
    """A request started and never finished is given up after request_timeout: the
    client gets SERVER_ERROR and the connection is closed; other connections carry on."""
    srv = make_server("--config", server_config(tmp_path, "[server]\nrequest_timeout = 1\n"))
    slow = srv.raw()
    started = time.monotonic()

    slow.send(partial.replace(b"{q}", q.encode()))

    assert b"SERVER_ERROR request not completed within 1 s\r\n" == slow.line(timeout=20)
    assert slow.is_closed(timeout=10)
    assert time.monotonic() - started < 20
    assert "request_timeout" in srv.log()
    assert b"END\r\n" == srv.raw().call(b"get %s\r\n" % q.encode(), b"END\r\n")


def test_request_timeout_does_not_cut_a_request_that_completes(make_server, tmp_path, q):
    """Idle time between requests is not a partial request: no timeout applies to it."""
    srv = make_server("--config", server_config(tmp_path, "[server]\nrequest_timeout = 1\n"))
    client = srv.raw()
    client.send(b"set %s 0 0 3\r\nab" % q.encode())
    client.send(b"c\r\n")
    assert b"STORED\r\n" == client.line()

    time.sleep(1.5)  # idle for longer than request_timeout: must not matter

    assert value(q, b"abc") + b"END\r\n" == client.call(b"get %s\r\n" % q.encode(), b"END\r\n")


def test_buffered_input_over_max_buffered_input_refuses_the_connection_that_passes_it(make_server, tmp_path, q):
    """With max_buffered_input = 8 MiB, a partial 6 MiB block holding 5 MiB leaves room for
    3 MiB more: the connection whose partial block passes the bound gets SERVER_ERROR
    and is closed; the first one completes its set."""
    srv = make_server("--config", server_config(tmp_path, f"[server]\nmax_buffered_input = {8 * MiB}\n"))
    first, second = srv.raw(), srv.raw()
    block = b"f" * (6 * MiB)
    read_before = int(stats(srv)["bytes_read"])
    head = b"set %s 0 0 %d\r\n" % (q.encode(), len(block))
    first.send(head + block[: 5 * MiB])
    wait_until(lambda: int(stats(srv)["bytes_read"]) >= read_before + len(head) + 5 * MiB,
               what="the first block's 5 MiB to be read")

    second.send(b"set %s 0 0 %d\r\n" % (q.encode(), 6 * MiB) + b"s" * (3 * MiB + 1))

    assert second.line(timeout=20).startswith(b"SERVER_ERROR out of memory")
    assert second.is_closed(timeout=10)
    first.send(block[5 * MiB :] + b"\r\n")
    assert b"STORED\r\n" == first.line(timeout=20)
    assert value(q, block) + b"END\r\n" == first.call(b"get %s\r\n" % q.encode(), b"END\r\n", timeout=20)
    assert "max_buffered_input" in srv.log()


@pytest.mark.parametrize("line", ["max_output_buffer = 0", "max_buffered_input = -1", "request_timeout = -5",
                                  "request_timeout = \"soon\""])
def test_bad_connection_limit_settings_are_refused_at_start(make_server, tmp_path, line):
    """A connection limit that makes no sense stops the server at start, naming it."""
    with pytest.raises(RuntimeError) as failure:
        make_server("--config", server_config(tmp_path, f"[server]\n{line}\n"))
    assert line.split()[0] in str(failure.value)
