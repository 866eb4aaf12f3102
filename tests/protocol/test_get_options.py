"""`get` options (`/t= /open /close /abort /peek`) and rules 1-7 of PROTOCOL.md."""

import socket
import struct
import time

import pytest

from proto_helpers import (
    close_and_wait_for_fin, get, make_queue, nodelay, put, queue_stat, set_cmd, stats, value, wait_for_waiters,
    wait_until,
)


def queue_stat_conn(conn, queue, field):
    """A queue stat (int) read over ``conn`` itself, or None when absent."""
    reply = conn.call(b"stats\r\n", b"END\r\n")
    for line in reply.split(b"\r\n"):
        if line.startswith(b"STAT queue_%s_%s " % (queue.encode(), field.encode())):
            return int(line.split()[2])
    return None


# -- rule 1 and 2: refused keys ------------------------------------------------------------


@pytest.mark.parametrize("key", [b"/open", b"/t=10", b"/peek"])
def test_empty_queue_name_is_client_error(conn, key):
    """Rule 1: a key with options but no queue name gets CLIENT_ERROR."""
    reply = conn.call(b"get " + key + b"\r\n")

    assert reply.startswith(b"CLIENT_ERROR ")
    assert b"UP\r\n" == conn.call(b"status\r\n")


@pytest.mark.parametrize(
    "options",
    ["peek/open", "open/peek", "peek/close", "peek/abort", "abort/open", "close/abort", "abort/close"],
)
def test_conflicting_options_are_client_errors(conn, q, options):
    """Rule 2: peek with open/close/abort and abort with open/close are refused with a reason."""
    put(conn, q, b"x")

    reply = conn.call(b"get %s/%s\r\n" % (q.encode(), options.encode()))

    assert reply.startswith(b"CLIENT_ERROR ") and len(reply) > len(b"CLIENT_ERROR \r\n") + 5
    assert value(q, b"x") + b"END\r\n" == get(conn, q)  # nothing was taken


def test_refused_key_among_several_serves_none(conn, q):
    """A refused key in a multi-key get refuses the whole request before any item is taken."""
    put(conn, q, b"x")

    reply = conn.call(b"get %s %s/peek/open\r\n" % (q.encode(), q.encode()))

    assert reply.startswith(b"CLIENT_ERROR ")
    assert value(q, b"x") + b"END\r\n" == get(conn, q)


def test_unknown_options_are_ignored(conn, q):
    """An option erqpy does not know is ignored, as Kestrel does."""
    put(conn, q, b"x")

    assert value(f"{q}/frobnicate", b"x") + b"END\r\n" == get(conn, f"{q}/frobnicate")


@pytest.mark.parametrize("timeout", [b"abc", b"-", b"1.5", b""])
def test_non_numeric_timeout_is_client_error(conn, q, timeout):
    """`/t=` with something other than an integer is refused."""
    reply = conn.call(b"get %s/t=%s\r\n" % (q.encode(), timeout))

    assert reply.startswith(b"CLIENT_ERROR ")


# -- peek ------------------------------------------------------------------------------------


def test_peek_shows_the_head_without_removing_it(conn, q):
    """`/peek` returns the head and leaves it in place."""
    put(conn, q, b"head", b"next")

    assert value(f"{q}/peek", b"head") + b"END\r\n" == get(conn, f"{q}/peek")
    assert value(f"{q}/peek", b"head") + b"END\r\n" == get(conn, f"{q}/peek")
    assert value(q, b"head") + b"END\r\n" == get(conn, q)


def test_peek_on_empty_queue_is_end(conn, q):
    """`/peek` on an empty queue replies END."""
    assert b"END\r\n" == get(conn, f"{q}/peek")


def test_peek_with_timeout_waits_and_leaves_the_item(shared_server, clients, q):
    """`/peek/t=` waits for an item and leaves it for a plain get."""
    make_queue(shared_server, q)  # a blocked read of a missing queue shows in no stats
    reader, producer = clients(), clients()
    reader.send(b"get %s/peek/t=10000\r\n" % q.encode())
    wait_for_waiters(shared_server, q, 1)

    put(producer, q, b"seen")

    assert value(f"{q}/peek/t=10000", b"seen") + b"END\r\n" == reader.read_until()
    assert value(q, b"seen") + b"END\r\n" == get(producer, q)


# -- /t= blocking --------------------------------------------------------------------------


def test_blocking_get_wakes_on_a_set_from_another_connection(shared_server, clients, q):
    """A reader blocked with /t= receives an item set by another client."""
    make_queue(shared_server, q)  # a blocked read of a missing queue shows in no stats
    reader, producer = clients(), clients()
    reader.send(b"get %s/t=20000\r\n" % q.encode())
    wait_for_waiters(shared_server, q, 1)

    put(producer, q, b"hello")

    assert value(f"{q}/t=20000", b"hello") + b"END\r\n" == reader.read_until()
    assert 0 == queue_stat(shared_server, q, "waiters")


def test_blocking_get_times_out_with_end(conn, q):
    """A blocked reader that sees no item replies END when its time is up."""
    assert b"END\r\n" == get(conn, f"{q}/t=200")


def test_zero_timeout_does_not_wait(shared_server, conn, q):
    """`/t=0` on an empty queue replies END at once rather than waiting for an item."""
    make_queue(shared_server, q)
    # No item ever arrives: a waiting reader would never answer within the read timeout.
    assert b"END\r\n" == get(conn, f"{q}/t=0", timeout=5)
    assert 0 == queue_stat_conn(conn, q, "waiters")


def test_blocking_get_returns_at_once_when_an_item_is_there(conn, q):
    """/t= with an item already queued returns it without waiting."""
    put(conn, q, b"ready")

    assert value(f"{q}/t=60000", b"ready") + b"END\r\n" == get(conn, f"{q}/t=60000", timeout=5)


def test_requests_pipelined_behind_a_blocked_get_are_answered_after_it(shared_server, clients, q):
    """Input sent while a get blocks is kept and answered, in order, after the get."""
    make_queue(shared_server, q)  # a blocked read of a missing queue shows in no stats
    reader, producer = clients(), clients()
    reader.send(b"get %s/t=20000\r\n" % q.encode())
    wait_for_waiters(shared_server, q, 1)
    reader.send(b"version\r\n" + set_cmd(q, b"mine") + b"status\r\n")

    put(producer, q, b"woken")

    assert value(f"{q}/t=20000", b"woken") + b"END\r\n" == reader.read_until()
    assert reader.line().startswith(b"VERSION ")
    assert b"STORED\r\n" == reader.line()
    assert b"UP\r\n" == reader.line()
    assert value(q, b"mine") + b"END\r\n" == get(reader, q)


# -- rule 7: blocked readers, fairness and disconnects ----------------------------------------


def test_blocked_readers_are_served_first_come_first_served_one_item_each(shared_server, clients, q):
    """Rule 7: three blocked readers receive three items in the order they arrived."""
    make_queue(shared_server, q)  # a blocked read of a missing queue shows in no stats
    readers = []
    for count in range(1, 4):
        reader = clients()
        reader.send(b"get %s/t=20000\r\n" % q.encode())
        wait_for_waiters(shared_server, q, count)
        readers.append(reader)

    put(clients(), q, b"item1", b"item2", b"item3")

    key = f"{q}/t=20000"
    assert [value(key, b"item%d" % n) + b"END\r\n" for n in (1, 2, 3)] == [
        r.read_until() for r in readers
    ]


def reset(client):
    """Close with SO_LINGER 0: the client's stack sends a reset, not a FIN."""
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.sock.close()


def test_reset_blocked_reader_is_removed_at_once(shared_server, clients, q):
    """Rule 7: a blocked reader whose client resets leaves the waiter list; it takes no item."""
    make_queue(shared_server, q)  # a blocked read of a missing queue shows in no stats
    gone = clients()
    gone.send(b"get %s/t=30000\r\n" % q.encode())
    wait_for_waiters(shared_server, q, 1)

    reset(gone)
    wait_for_waiters(shared_server, q, 0)

    later = clients()
    later.send(b"get %s/t=20000\r\n" % q.encode())
    wait_for_waiters(shared_server, q, 1)
    put(clients(), q, b"for-later")
    assert value(f"{q}/t=20000", b"for-later") + b"END\r\n" == later.read_until()
    assert 0 == queue_stat(shared_server, q, "items")


@pytest.mark.parametrize("leave", ["reset", "close"])
def test_first_of_two_blocked_readers_leaving_passes_the_item_to_the_second(shared_server, clients, q, leave):
    """Rule 7: with readers A then B blocked, A leaving means B gets the next item.  A
    reset takes A out of the line at once; after a plain close (a FIN, which may be only
    a half-close) A keeps its place, the item sent to it is not acknowledged (its socket
    answers with a reset), and it goes back to the head, to B."""
    make_queue(shared_server, q)  # a blocked read of a missing queue shows in no stats
    first, second = clients(), clients()
    first.send(b"get %s/t=30000\r\n" % q.encode())
    wait_for_waiters(shared_server, q, 1)
    second.send(b"get %s/t=30000\r\n" % q.encode())
    wait_for_waiters(shared_server, q, 2)

    if leave == "reset":
        reset(first)
        wait_for_waiters(shared_server, q, 1)
    else:
        close_and_wait_for_fin(first)
    put(clients(), q, b"x")

    assert value(f"{q}/t=30000", b"x") + b"END\r\n" == second.read_until()
    wait_for_waiters(shared_server, q, 0)
    assert 0 == queue_stat(shared_server, q, "items")


def test_item_for_a_reader_that_has_just_gone_goes_to_the_next_reader(shared_server, clients, q):
    """Rule 7: an item that arrives as the first blocked reader disconnects reaches the second.

    The server is kept busy by a large pipelined batch so that the disconnect and the set
    are noticed in the same turn of its event loop: the exact race the rule is about.  The
    race is not certain to be hit each round, so several rounds are run.
    """
    for round_ in range(5):
        queue = f"{q}_{round_}"
        make_queue(shared_server, queue)  # a blocked read of a missing queue shows in no stats
        first, second = nodelay(clients()), clients()
        first.send(b"get %s/t=60000\r\n" % queue.encode())
        wait_for_waiters(shared_server, queue, 1)
        second.send(b"get %s/t=30000\r\n" % queue.encode())
        wait_for_waiters(shared_server, queue, 2)
        busy, producer = nodelay(clients()), nodelay(clients())

        busy.send(b"version\r\n" * 25_000)  # one read's worth: handled without a pause
        time.sleep(0.03)  # let the server start on it
        first.close()
        producer.send(set_cmd(queue, b"precious"))

        assert b"STORED\r\n" == producer.line()
        assert value(f"{queue}/t=30000", b"precious") + b"END\r\n" == second.read_until(timeout=60)
        busy.close()


# -- rules 3-6: reliable reads through get options --------------------------------------------


def test_open_then_close_confirms_the_item(shared_server, conn, q):
    """`/open` hands out the head as an open read; `/close` confirms it and replies END."""
    put(conn, q, b"job")

    assert value(f"{q}/open", b"job") + b"END\r\n" == get(conn, f"{q}/open")
    assert 1 == queue_stat(shared_server, q, "open_transactions")
    assert b"END\r\n" == get(conn, f"{q}/close")

    assert 0 == queue_stat(shared_server, q, "open_transactions")
    assert b"END\r\n" == get(conn, q)


def test_abort_returns_the_open_read_to_the_head(conn, q):
    """Rule 3: `/abort` gives the open read back to the head, before newer items."""
    put(conn, q, b"first", b"second")
    get(conn, f"{q}/open")

    assert b"END\r\n" == get(conn, f"{q}/abort")

    assert value(q, b"first") + value(q, b"second") + b"END\r\n" == conn.call(
        b"get %s %s\r\n" % (q.encode(), q.encode()), b"END\r\n")


def test_abort_with_nothing_open_is_end(conn, q):
    """Rule 3: `/abort` with no open read replies END and changes nothing."""
    put(conn, q, b"x")

    assert b"END\r\n" == get(conn, f"{q}/abort")
    assert value(q, b"x") + b"END\r\n" == get(conn, q)


def test_close_alone_is_end(conn, q):
    """Rule 4: `/close` with nothing open (even on an unknown queue) replies END."""
    assert b"END\r\n" == get(conn, f"{q}/close")


@pytest.mark.parametrize("written", ["close/open", "open/close"])
def test_close_runs_before_open_whatever_the_written_order(shared_server, conn, q, written):
    """Rule 4: `get q/open/close` and `get q/close/open` both confirm the previous item and open the next."""
    put(conn, q, b"one", b"two")
    get(conn, f"{q}/open")

    key = f"{q}/{written}"
    assert value(key, b"two") + b"END\r\n" == get(conn, key)

    assert 1 == queue_stat(shared_server, q, "open_transactions")
    assert b"END\r\n" == get(conn, f"{q}/abort")
    assert value(q, b"two") + b"END\r\n" == get(conn, q)  # "one" was confirmed, gone


def test_plain_get_is_refused_while_an_open_read_is_held(shared_server, conn, q):
    """Rule 5: a plain get with an open read held on that queue is a CLIENT_ERROR; the read stays open."""
    put(conn, q, b"a", b"b")
    get(conn, f"{q}/open")

    assert conn.call(b"get %s\r\n" % q.encode()).startswith(b"CLIENT_ERROR ")
    assert conn.call(b"get %s/t=10\r\n" % q.encode()).startswith(b"CLIENT_ERROR ")
    assert conn.call(b"gets other_%s %s\r\n" % (q.encode(), q.encode())).startswith(b"CLIENT_ERROR ")

    assert 1 == queue_stat(shared_server, q, "open_transactions")
    assert 1 == queue_stat(shared_server, q, "items")
    assert value(f"{q}/peek", b"b") + b"END\r\n" == get(conn, f"{q}/peek")  # peek is allowed
    assert b"END\r\n" == get(conn, f"{q}/close")
    assert value(q, b"b") + b"END\r\n" == get(conn, q)


def test_open_read_on_one_queue_does_not_block_plain_gets_on_another(conn, q):
    """Rule 5 is per queue: a plain get on another queue still works."""
    other = q + "_other"
    put(conn, q, b"a")
    put(conn, other, b"b")
    get(conn, f"{q}/open")

    assert value(other, b"b") + b"END\r\n" == get(conn, other)


def test_other_connections_may_plain_get_while_one_holds_an_open_read(clients, q):
    """Rule 5 is per connection: another client's plain get takes the next item."""
    holder, other = clients(), clients()
    put(holder, q, b"a", b"b")
    get(holder, f"{q}/open")

    assert value(q, b"b") + b"END\r\n" == get(other, q)


def test_max_open_reads_default_is_100(shared_server, conn, q):
    """Rule 6: the 101st open read on one queue from one connection is a CLIENT_ERROR."""
    put(conn, q, *[b"i%d" % n for n in range(102)])
    conn.send(b"get %s/open\r\n" % q.encode() * 100)
    for _ in range(100):
        conn.read_until()

    reply = conn.call(b"get %s/open\r\n" % q.encode())

    assert reply.startswith(b"CLIENT_ERROR ") and b"100" in reply
    assert 100 == queue_stat(shared_server, q, "open_transactions")
    # close/open keeps the count at 100, so it is allowed.
    assert value(f"{q}/close/open", b"i100") + b"END\r\n" == get(conn, f"{q}/close/open")


def test_open_read_with_timeout_waits_for_an_item(shared_server, clients, q):
    """`/t=/open` blocks, then holds the item as an open read."""
    make_queue(shared_server, q)  # a blocked read of a missing queue shows in no stats
    reader = clients()
    reader.send(b"get %s/t=20000/open\r\n" % q.encode())
    wait_for_waiters(shared_server, q, 1)

    put(clients(), q, b"late")

    assert value(f"{q}/t=20000/open", b"late") + b"END\r\n" == reader.read_until()
    assert 1 == queue_stat(shared_server, q, "open_transactions")


def test_stats_count_waiters_while_readers_block(shared_server, clients, q):
    """The waiters stat rises with blocked readers and falls when they time out."""
    make_queue(shared_server, q)  # a blocked read of a missing queue shows in no stats
    reader = clients()
    reader.send(b"get %s/t=500\r\n" % q.encode())
    wait_for_waiters(shared_server, q, 1)

    assert b"END\r\n" == reader.read_until()
    wait_until(lambda: 0 == queue_stat(shared_server, q, "waiters"))
    assert 0 == int(stats(shared_server)[f"queue_{q}_items"])


def test_max_open_reads_counts_every_key_of_one_request(shared_server, conn, q):
    """Rule 6 holds within one multi-key get: 99 open plus two more `/open` keys is refused whole."""
    put(conn, q, *[b"i%d" % n for n in range(102)])
    conn.send(b"get %s/open\r\n" % q.encode() * 99)
    for _ in range(99):
        conn.read_until()

    reply = conn.call(b"get %s/open %s/open\r\n" % (q.encode(), q.encode()))

    assert reply.startswith(b"CLIENT_ERROR ") and b"100" in reply
    assert 99 == queue_stat(shared_server, q, "open_transactions")
    assert value(f"{q}/open", b"i99") + b"END\r\n" == get(conn, f"{q}/open")
