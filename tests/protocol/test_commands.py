"""Every command row of PROTOCOL.md, over raw bytes, against a real ``erqpy serve``."""

import os

import pytest

from proto_helpers import (
    get, make_queue, parse_stats, put, queue_stat, set_cmd, stats, value, wait_for_waiters,
    wait_until,
)

import erqpy


def stats_field(conn, name):
    """One stats value (str) over ``conn``, or None when absent."""
    return parse_stats(conn.call(b"stats\r\n", b"END\r\n")).get(name)


# -- set ---------------------------------------------------------------------------------


def test_set_keeps_flags_and_returns_them(conn, q):
    """Flags given to set come back on the VALUE line (differs from Kestrel)."""
    assert b"STORED\r\n" == conn.call(set_cmd(q, b"hello", flags=4294967295))

    assert value(q, b"hello", 4294967295) + b"END\r\n" == get(conn, q)


def test_set_with_noreply_sends_nothing_and_stores(conn, q):
    """`set ... noreply` stores the item and sends no reply at all."""
    conn.send(set_cmd(q, b"one", noreply=True) + set_cmd(q, b"two", noreply=True))

    # The first reply bytes must be the get's, not a STORED.
    assert value(q, b"one") + b"END\r\n" == get(conn, q)
    assert value(q, b"two") + b"END\r\n" == get(conn, q)


def test_set_with_future_exptime_is_kept(conn, q):
    """An item with a relative exptime in the future is returned normally."""
    assert b"STORED\r\n" == conn.call(set_cmd(q, b"later", exptime=3600))

    assert value(q, b"later") + b"END\r\n" == get(conn, q)


def test_queue_is_fifo(conn, q):
    """Items come out in the order they were set."""
    put(conn, q, b"a", b"b", b"c")

    assert [b"a", b"b", b"c"] == [get(conn, q).split(b"\r\n")[1] for _ in range(3)]
    assert b"END\r\n" == get(conn, q)


def test_empty_block_is_a_valid_item(conn, q):
    """A zero-length item is stored and returned as zero bytes."""
    assert b"STORED\r\n" == conn.call(set_cmd(q, b""))

    assert b"VALUE %s 0 0\r\n\r\nEND\r\n" % q.encode() == get(conn, q)


def test_command_word_is_case_insensitive_and_queue_name_is_not(conn, q):
    """`SET`/`GeT` work; `Q` and `q` are different queues."""
    upper = q.upper()
    assert b"STORED\r\n" == conn.call(b"SET %s 0 0 1\r\nx\r\n" % q.encode())

    assert b"END\r\n" == conn.call(b"GeT %s\r\n" % upper.encode(), b"END\r\n")
    assert value(q, b"x") + b"END\r\n" == conn.call(b"GeT %s\r\n" % q.encode(), b"END\r\n")


# -- get / gets --------------------------------------------------------------------------


def test_get_on_empty_queue_is_end(conn, q):
    """A get on an empty (or new) queue replies END alone."""
    assert b"END\r\n" == get(conn, q)


def test_get_several_keys_serves_each_in_order_one_item_each(conn, q):
    """`get a b a` takes one item per key, in the order of the keys (differs from Kestrel)."""
    other = q + "_b"
    put(conn, q, b"a1", b"a2", b"a3")
    put(conn, other, b"b1")

    reply = conn.call(b"get %s %s %s\r\n" % (q.encode(), other.encode(), q.encode()), b"END\r\n")

    assert value(q, b"a1") + value(other, b"b1") + value(q, b"a2") + b"END\r\n" == reply
    assert value(q, b"a3") + b"END\r\n" == get(conn, q)


def test_get_several_keys_skips_empty_queues(conn, q):
    """An empty queue among several keys contributes nothing; the others still reply."""
    empty = q + "_empty"
    put(conn, q, b"x")

    reply = conn.call(b"get %s %s\r\n" % (empty.encode(), q.encode()), b"END\r\n")

    assert value(q, b"x") + b"END\r\n" == reply


def test_gets_adds_a_unique_cas_field(conn, q):
    """`gets` replies `VALUE key flags bytes cas`; cas differs between items."""
    put(conn, q, b"one", b"two")

    first = conn.call(b"gets %s\r\n" % q.encode(), b"END\r\n")
    second = conn.call(b"gets %s %s\r\n" % (q.encode(), q.encode()), b"END\r\n")

    header = first.split(b"\r\n")[0].split()
    assert [b"VALUE", q.encode(), b"0", b"3"] == header[:4]
    assert 5 == len(header) and header[4].isdigit()
    assert b"one\r\nEND\r\n" == first.split(b"\r\n", 1)[1]
    header2 = second.split(b"\r\n")[0].split()
    assert header[4] != header2[4]
    assert b"END\r\n" == second.split(b"\r\n", 2)[2]


def test_get_echoes_the_key_with_its_options(conn, q):
    """The VALUE line carries the key exactly as requested, options included."""
    put(conn, q, b"x")
    key = f"{q}/t=10/peek"

    assert value(key, b"x") + b"END\r\n" == get(conn, key)


# -- monitor / confirm ---------------------------------------------------------------------


def test_monitor_streams_items_as_open_reads_then_end(conn, q):
    """`monitor q 0 2` sends two items, each followed by END, then a final END."""
    put(conn, q, b"a", b"b", b"c")

    conn.send(b"monitor %s 0 2\r\n" % q.encode())
    reply = conn.read_until(b"END\r\nEND\r\n")

    assert value(q, b"a") + b"END\r\n" + value(q, b"b") + b"END\r\n" + b"END\r\n" == reply
    assert "2" == stats_field(conn, f"queue_{q}_open_transactions")


def test_confirm_finishes_open_reads_and_refuses_too_many(conn, q):
    """`confirm q 2` after a monitor of two items replies END; another confirm is ERROR."""
    put(conn, q, b"a", b"b", b"c")
    conn.send(b"monitor %s 0 2\r\n" % q.encode())
    conn.read_until(b"END\r\nEND\r\n")

    assert b"ERROR\r\n" == conn.call(b"confirm %s 3\r\n" % q.encode())
    assert "2" == stats_field(conn, f"queue_{q}_open_transactions")  # nothing confirmed
    assert b"END\r\n" == conn.call(b"confirm %s 2\r\n" % q.encode())
    assert b"ERROR\r\n" == conn.call(b"confirm %s 1\r\n" % q.encode())
    assert "0" == stats_field(conn, f"queue_{q}_open_transactions")
    assert value(q, b"c") + b"END\r\n" == get(conn, q)


def test_confirm_of_zero_is_end_and_a_negative_count_is_refused(conn, q):
    """PROTOCOL.md: ERROR only if fewer than `count` reads are open; with 0 that is never
    (it used to be ERROR).  A negative count is a bad request."""
    put(conn, q, b"a")

    assert b"END\r\n" == conn.call(b"confirm %s 0\r\n" % q.encode())
    assert b"CLIENT_ERROR bad count\r\n" == conn.call(b"confirm %s -1\r\n" % q.encode())
    assert value(q, b"a") + b"END\r\n" == get(conn, q)


def test_monitor_waits_for_items_up_to_its_seconds(shared_server, conn, q):
    """A monitor on an empty queue receives an item set meanwhile by another client."""
    make_queue(shared_server, q)  # a blocked read of a missing queue shows in no stats
    producer = shared_server.raw()
    conn.send(b"monitor %s 5 1\r\n" % q.encode())

    wait_for_waiters(shared_server, q, 1)
    put(producer, q, b"late")

    assert value(q, b"late") + b"END\r\nEND\r\n" == conn.read_until(b"END\r\nEND\r\n")
    producer.close()


def test_monitor_on_empty_queue_with_zero_seconds_is_end(conn, q):
    """`monitor q 0` with nothing queued replies a single END."""
    assert b"END\r\n" == conn.call(b"monitor %s 0\r\n" % q.encode(), b"END\r\n")


def test_unconfirmed_monitor_items_return_on_disconnect(shared_server, q):
    """Items a monitor sent and nobody confirmed go back to the head when it disconnects."""
    first = shared_server.raw()
    put(first, q, b"a", b"b")
    first.send(b"monitor %s 0 1\r\n" % q.encode())
    first.read_until(b"END\r\nEND\r\n")
    first.close()

    wait_until(lambda: queue_stat(shared_server, q, "open_transactions") == 0)
    second = shared_server.raw()

    assert value(q, b"a") + value(q, b"b") + b"END\r\n" == second.call(
        b"get %s %s\r\n" % (q.encode(), q.encode()), b"END\r\n")
    second.close()


# -- delete / flush ----------------------------------------------------------------------


def test_delete_removes_the_queue_and_its_stats(conn, q):
    """`delete q` replies DELETED; the queue and its items are gone from stats."""
    put(conn, q, b"x")
    assert "1" == stats_field(conn, f"queue_{q}_items")

    assert b"DELETED\r\n" == conn.call(b"delete %s\r\n" % q.encode())

    assert None is stats_field(conn, f"queue_{q}_items")
    assert b"END\r\n" == get(conn, q)


def test_delete_of_unknown_queue_is_still_deleted(conn, q):
    """Deleting a queue that never existed replies DELETED and creates nothing."""
    assert b"DELETED\r\n" == conn.call(b"delete %s\r\n" % q.encode())

    assert None is stats_field(conn, f"queue_{q}_items")


def test_delete_noreply_sends_nothing(conn, q):
    """`delete q noreply` deletes silently."""
    put(conn, q, b"x")
    conn.send(b"delete %s noreply\r\n" % q.encode())

    assert b"END\r\n" == get(conn, q)


def test_delete_wakes_blocked_readers_with_end(shared_server, conn, q):
    """A reader blocked on a queue that is deleted gets END."""
    put(conn, q, b"seed")
    get(conn, q)
    reader = shared_server.raw()
    reader.send(b"get %s/t=20000\r\n" % q.encode())

    wait_for_waiters(shared_server, q, 1)
    assert b"DELETED\r\n" == conn.call(b"delete %s\r\n" % q.encode())

    assert b"END\r\n" == reader.read_until(b"END\r\n")
    reader.close()


def test_flush_removes_waiting_items_but_not_open_reads(shared_server, conn, q):
    """`flush q` replies END, empties the queue, and leaves open reads open."""
    put(conn, q, b"held", b"b", b"c")
    assert value(q + "/open", b"held") + b"END\r\n" == get(conn, q + "/open")

    assert b"END\r\n" == conn.call(b"flush %s\r\n" % q.encode())

    other = shared_server.raw()
    assert b"END\r\n" == get(other, q)
    assert "1" == stats_field(conn, f"queue_{q}_open_transactions")
    assert b"END\r\n" == get(conn, q + "/abort")
    assert value(q, b"held") + b"END\r\n" == get(other, q)
    other.close()


def test_flush_noreply_sends_nothing(conn, q):
    """`flush q noreply` flushes silently."""
    put(conn, q, b"x")
    conn.send(b"flush %s noreply\r\n" % q.encode())

    assert b"END\r\n" == get(conn, q)


def test_flush_all_replies_ok_and_empties_every_queue(server):
    """`flush_all` replies OK (differs from Kestrel) and empties all queues."""
    conn = server.raw()
    put(conn, "a", b"1")
    put(conn, "b", b"2")

    assert b"OK\r\n" == conn.call(b"flush_all\r\n")

    assert b"END\r\n" == conn.call(b"get a b\r\n", b"END\r\n")
    assert b"OK\r\n" == conn.call(b"flush_all 0\r\n")
    put(conn, "a", b"3")
    conn.send(b"flush_all noreply\r\nflush_all 0 noreply\r\n")
    assert b"END\r\n" == conn.call(b"get a\r\n", b"END\r\n")
    conn.close()


def test_flush_expired_counts_dropped_head_items(conn, q):
    """`flush_expired q` drops the expired items at the head and replies their count."""
    # One pipelined batch: the server's once-a-second expiry cannot run in between.
    conn.send(
        set_cmd(q, b"old1", exptime=-1) + set_cmd(q, b"old2", exptime=-1)
        + set_cmd(q, b"fresh") + b"flush_expired %s\r\n" % q.encode()
    )

    assert b"STORED\r\nSTORED\r\nSTORED\r\n2\r\n" == conn.read_until(b"2\r\n")
    assert value(q, b"fresh") + b"END\r\n" == get(conn, q)
    assert b"0\r\n" == conn.call(b"flush_expired %s\r\n" % q.encode())


def test_flush_all_expired_replies_the_total(server):
    """`flush_all_expired` drops expired items from every queue and replies the total."""
    conn = server.raw()
    conn.send(
        set_cmd("a", b"x", exptime=-1) + set_cmd("b", b"y", exptime=-1)
        + set_cmd("b", b"z", exptime=-1) + set_cmd("c", b"keep") + b"flush_all_expired\r\n"
    )

    assert b"STORED\r\n" * 4 + b"3\r\n" == conn.read_until(b"3\r\n")
    assert value("c", b"keep") + b"END\r\n" == conn.call(b"get a b c\r\n", b"END\r\n")
    conn.close()


# -- stats / dump_stats / version / status -------------------------------------------------

SERVER_FIELDS = (
    "pid uptime time version curr_connections total_connections cmd_get cmd_set cmd_peek "
    "get_hits get_misses bytes_read bytes_written curr_items total_items bytes queue_creates "
    "queue_deletes queue_expires"
).split()
QUEUE_FIELDS = (
    "items bytes total_items logsize expired_items mem_items mem_bytes age discarded dead_lettered waiters "
    "open_transactions transactions canceled_transactions total_flushes journal_rewrites "
    "journal_rotations delayed"
).split()


def test_stats_has_every_server_field_and_never_creates_a_queue(server):
    """A fresh server's stats name every server field and no queue at all."""
    conn = server.raw()

    fields = parse_stats(conn.call(b"stats\r\n", b"END\r\n"))
    fields_again = parse_stats(conn.call(b"stats\r\n", b"END\r\n"))

    assert [] == [name for name in SERVER_FIELDS if name not in fields]
    assert [] == [name for name in fields_again if name.startswith("queue_") and name not in SERVER_FIELDS]
    assert erqpy.__version__ == fields["version"]
    assert str(server.proc.pid) == fields["pid"]
    conn.close()


def test_stats_has_every_queue_field(conn, q):
    """Each queue shows every per-queue field as queue_<q>_<field> with current values."""
    put(conn, q, b"abc", b"de")

    fields = parse_stats(conn.call(b"stats\r\n", b"END\r\n"))

    assert [] == [f for f in QUEUE_FIELDS if f"queue_{q}_{f}" not in fields]
    assert ("2", "5", "2") == (
        fields[f"queue_{q}_items"], fields[f"queue_{q}_bytes"], fields[f"queue_{q}_total_items"]
    )


def test_stats_counts_gets_sets_and_hits(server):
    """cmd_set, cmd_get, get_hits, get_misses and cmd_peek count what happened."""
    conn = server.raw()
    put(conn, "s", b"x")
    get(conn, "s/peek")
    get(conn, "s")
    get(conn, "s")

    fields = parse_stats(conn.call(b"stats\r\n", b"END\r\n"))

    assert {"cmd_set": "1", "cmd_get": "2", "cmd_peek": "1", "get_hits": "2", "get_misses": "1",
            "curr_items": "0", "total_items": "1", "queue_creates": "1"} == {
        k: fields[k] for k in ("cmd_set", "cmd_get", "cmd_peek", "get_hits", "get_misses",
                               "curr_items", "total_items", "queue_creates")}
    conn.close()


def test_dump_stats_groups_fields_per_queue(server):
    """dump_stats prints `queue 'q' {`, indented field=value lines and `}` per queue, then END."""
    conn = server.raw()
    put(conn, "alpha", b"xyz")
    put(conn, "beta", b"1")

    reply = conn.call(b"dump_stats\r\n", b"END\r\n")
    only_alpha = conn.call(b"dump_stats alpha\r\n", b"END\r\n")

    lines = reply.decode().split("\r\n")
    assert ["queue 'alpha' {", "queue 'beta' {"] == [l for l in lines if l.startswith("queue")]
    alpha = lines[1 : lines.index("}")]
    assert QUEUE_FIELDS == [l.strip().split("=")[0] for l in alpha]
    assert all(l.startswith("  ") for l in alpha)
    assert "  items=1" in alpha and "  bytes=3" in alpha
    assert ["END", ""] == lines[-2:]
    assert ["queue 'alpha' {"] == [l for l in only_alpha.decode().split("\r\n") if l.startswith("queue")]
    conn.close()


def test_dump_stats_of_unknown_queue_creates_nothing(conn, q):
    """dump_stats naming an unknown queue prints nothing for it and does not create it."""
    assert b"END\r\n" == conn.call(b"dump_stats %s\r\n" % q.encode(), b"END\r\n")

    assert None is stats_field(conn, f"queue_{q}_items")


def test_version_replies_the_package_version(conn):
    """`version` replies `VERSION <erqpy.__version__>`."""
    assert b"VERSION 2.4.1 erqpy-%s\r\n" % erqpy.__version__.encode() == conn.call(b"version\r\n")


def test_status_without_argument_is_up(conn):
    """`status` on a running server replies UP."""
    assert b"UP\r\n" == conn.call(b"status\r\n")


# -- quit / unknown ------------------------------------------------------------------------


def test_quit_closes_the_connection(shared_server):
    """`quit` closes the connection without a reply; the server keeps serving."""
    conn = shared_server.raw()
    conn.send(b"quit\r\n")

    assert conn.is_closed(timeout=5)
    other = shared_server.raw()
    assert b"UP\r\n" == other.call(b"status\r\n")
    other.close()


def test_requests_after_quit_in_the_same_batch_are_not_run(shared_server, q):
    """Requests pipelined after `quit` are ignored: the connection ends at quit."""
    conn = shared_server.raw()
    conn.send(b"quit\r\n" + set_cmd(q, b"x"))

    assert conn.is_closed(timeout=5)
    other = shared_server.raw()
    assert b"END\r\n" == get(other, q)
    other.close()


@pytest.mark.parametrize("line", [b"bogus", b"incr q 1", b"touch q 10", b"stats_bogus", b"", b"GETX q"])
def test_unknown_command_is_error_and_connection_stays_open(conn, line):
    """Unknown commands (and empty lines) reply ERROR and the connection keeps working."""
    assert b"ERROR\r\n" == conn.call(line + b"\r\n")

    assert b"UP\r\n" == conn.call(b"status\r\n")


@pytest.mark.parametrize("command", [b"add", b"replace", b"append", b"prepend", b"ADD"])
def test_storage_shaped_unknown_command_consumes_its_block(conn, q, command):
    """`add`-like commands have their data block read first, then ERROR; the next request is in step."""
    block = b"get %s\r\n" % q.encode()  # would be a command if the block were not consumed
    line = b"%s %s 0 0 %d\r\n%s\r\n" % (command, q.encode(), len(block), block)

    conn.send(line + b"version\r\n")

    assert b"ERROR\r\n" == conn.line()
    assert b"VERSION 2.4.1 erqpy-%s\r\n" % erqpy.__version__.encode() == conn.line()


def test_cas_command_consumes_its_block(conn, q):
    """`cas q 0 0 5 123` + block replies ERROR once and stays in step."""
    conn.send(b"cas %s 0 0 5 123\r\nversi\r\nstatus\r\n" % q.encode())

    assert b"ERROR\r\n" == conn.line()
    assert b"UP\r\n" == conn.line()


def test_stats_reports_connections(shared_server):
    """curr_connections counts this client among live connections."""
    a, b = shared_server.raw(), shared_server.raw()
    b.call(b"version\r\n")  # b is accepted, not just queued in the kernel

    fields = parse_stats(a.call(b"stats\r\n", b"END\r\n"))

    assert int(fields["curr_connections"]) >= 2
    assert int(fields["total_connections"]) >= int(fields["curr_connections"])
    a.close()
    b.close()


def test_listen_line_names_the_chosen_port(shared_server):
    """The server prints where it listens; with --port 0 that is a real, non-zero port."""
    assert shared_server.port > 0
    assert f"listening on 127.0.0.1:{shared_server.port}" in shared_server.banner
    assert stats(shared_server)["pid"] == str(shared_server.proc.pid)


def test_queue_name_of_250_bytes_is_accepted(server):
    """A 250-byte queue name is valid (PROTOCOL.md: 1 to 250 bytes), survives a restart
    under its full name, and delete removes every file it had."""
    conn = server.raw()
    name = "n" * 250

    assert b"STORED\r\n" == conn.call(set_cmd(name, b"x"))
    assert b"STORED\r\n" == conn.call(set_cmd(name, b"y"))
    assert value(name, b"x") + b"END\r\n" == get(conn, name)
    conn.close()
    assert all(len(f) <= 255 for f in os.listdir(server.data_dir))

    server.restart()
    conn = server.raw()

    assert ("queue_%s_items" % name) in stats(server)
    assert value(name, b"y") + b"END\r\n" == get(conn, name)
    assert b"DELETED\r\n" == conn.call(b"delete %s\r\n" % name.encode())
    assert [] == [f for f in os.listdir(server.data_dir) if f.startswith("nnnn")]
    conn.close()
