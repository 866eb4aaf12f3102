"""Journal compaction on a real server: steady traffic keeps the journal bounded without
losing an item, and a crash at either failpoint of a rewrite (ERQPY_FAILPOINT, exit 86)
loses nothing and leaves no temporary file after the next start."""

import os

import pytest

from recovery_support import (
    TIMEOUT,
    drain,
    journal_file,
    log_mark,
    log_since,
    queue_stats,
    read_values,
    write_config,
)

MAX_JOURNAL = 65536
FAILPOINT_EXIT = 86
ITEM = 1024


def small_journal_server(make_server, tmp_path, env=None):
    config = write_config(tmp_path, f"[queues.default]\nmax_journal_size = {MAX_JOURNAL}\n")
    return make_server("--config", str(config), env=env)


def payload(i: int) -> bytes:
    head = b"item-%06d-" % i
    return head + b"." * (ITEM - len(head))


def put(raw, data: bytes) -> None:
    assert b"STORED\r\n" == raw.call(b"set q 0 0 %d\r\n%s\r\n" % (len(data), data), timeout=TIMEOUT)


def take(raw) -> bytes | None:
    raw.send(b"get q\r\n")
    values = read_values(raw)
    return values[0][0] if values else None


def test_steady_traffic_keeps_the_journal_bounded_and_loses_nothing(make_server, tmp_path):
    """Set/get through an empty queue, then with a small backlog: the journal is rewritten
    again and again, never grows far past max_journal_size, and every item comes back in
    order, also across a SIGKILL and restart."""
    server = small_journal_server(make_server, tmp_path)
    raw = server.raw()
    largest = 0
    # Phase 1: the queue is empty after every get.
    for i in range(1200):
        put(raw, payload(i))
        assert payload(i) == take(raw)
        if i % 50 == 0:
            largest = max(largest, queue_stats(server, "q")["logsize"], journal_file(server, "q").stat().st_size)
    rewrites_when_empty = queue_stats(server, "q")["journal_rewrites"]
    # Phase 2: a backlog of 5 items stays behind the reader all along.
    lag = 5
    base = 10_000
    for i in range(1200):
        put(raw, payload(base + i))
        if i >= lag:
            assert payload(base + i - lag) == take(raw)
        if i % 50 == 0:
            largest = max(largest, queue_stats(server, "q")["logsize"], journal_file(server, "q").stat().st_size)
    stats = queue_stats(server, "q")

    assert rewrites_when_empty > 0
    assert stats["journal_rewrites"] > rewrites_when_empty
    assert largest <= MAX_JOURNAL + 4 * ITEM
    assert lag == stats["items"]
    server.kill9()
    server.start()
    assert [payload(base + 1200 - lag + k) for k in range(lag)] == [d for d, _id in drain(server, "q")]
    assert [] == [n for n in os.listdir(server.data_dir) if "~~" in n]


@pytest.mark.parametrize("failpoint", ["rewrite-before-rename", "rewrite-after-rename"])
def test_crash_at_a_rewrite_failpoint_loses_nothing(make_server, tmp_path, failpoint):
    """The process dies (status 86) inside a compaction; the restart without the failpoint
    removes the leftover temp file and has every item: the reads that were open first, in
    order, then the backlog, minus only the item the interrupted plain get had removed."""
    server = small_journal_server(make_server, tmp_path, env={"ERQPY_FAILPOINT": failpoint})
    holder, churn = server.raw(), server.raw()
    put(churn, b"held-1")
    put(churn, b"held-2")
    for expected in (b"held-1", b"held-2"):
        holder.send(b"get q/open\r\n")
        assert [(expected, None)] == read_values(holder)
    lag = 3
    acked = -1  # highest i whose set was acknowledged
    received = -1  # highest i a get returned
    in_flight = None
    for i in range(5000):  # far more than one journal's worth; the failpoint ends it
        try:
            in_flight = ("set", i)
            put(churn, payload(i))
            acked = i
            if i >= lag:
                in_flight = ("get", i - lag)
                assert payload(i - lag) == take(churn)
                received = i - lag
            in_flight = None
        except ConnectionError:
            break
    assert in_flight is not None, "the failpoint was never reached"
    assert FAILPOINT_EXIT == server.proc.wait(timeout=TIMEOUT)
    server._close_pipes()
    leftovers = [n for n in os.listdir(server.data_dir) if "~~" in n]
    if failpoint == "rewrite-before-rename":
        assert ["q.journal~~"] == leftovers
    else:
        assert [] == leftovers
        assert journal_file(server, "q").stat().st_size < MAX_JOURNAL

    server.env = {}
    mark = log_mark(server)
    server.start()

    log = log_since(server, mark)
    assert [] == [n for n in os.listdir(server.data_dir) if "~~" in n]
    if failpoint == "rewrite-before-rename":
        assert "removed leftover temporary file q.journal~~" in log
    assert "DATA MAY HAVE BEEN LOST" not in log
    # A plain get removes (and journals the removal) before it replies: the item of the
    # get the crash interrupted is gone, as at-most-once delivery allows.
    assert ("get", received + 1) == in_flight
    expected = [b"held-1", b"held-2"] + [payload(i) for i in range(received + 2, acked + 1)]
    assert expected == [d for d, _id in drain(server, "q")]
