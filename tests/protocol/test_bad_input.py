"""Bad input gets the reply PROTOCOL.md names, the connection stays in step, other
connections are unaffected and the server lives."""

import random
import time

import pytest

from proto_helpers import get, nodelay, put, set_cmd, unique_name, value

import erqpy

VERSION = b"VERSION 2.4.1 erqpy-%s\r\n" % erqpy.__version__.encode()


@pytest.fixture(scope="module")
def bystander(shared_server):
    """A connection opened before any bad input and used after each test."""
    client = shared_server.raw()
    yield client
    client.close()


@pytest.fixture(autouse=True)
def server_still_serves(shared_server, bystander):
    """After every test: the bystander's connection and a brand-new one both work, and the
    server logged no traceback meanwhile."""
    log_before = len(shared_server.log())
    yield
    name = unique_name("bystander")
    assert b"STORED\r\n" == bystander.call(set_cmd(name, b"alive"))
    assert value(name, b"alive") + b"END\r\n" == get(bystander, name)
    fresh = shared_server.raw()
    assert VERSION == fresh.call(b"version\r\n")
    fresh.close()
    assert shared_server.proc.poll() is None
    assert "Traceback" not in shared_server.log()[log_before:]


def reply_then_in_step(conn, request: bytes) -> bytes:
    """Send ``request`` and a `version`; return the request's reply, checking the version follows."""
    conn.send(request + b"version\r\n")
    data = conn.read_until(VERSION)
    assert data.endswith(VERSION)
    return data[: -len(VERSION)]


# -- unknown commands and bad fields ----------------------------------------------------------


@pytest.mark.parametrize("line", [b"bogus", b"bogus with args", b"\x00\x01\x02", b"GET_", b"  "])
def test_unknown_commands_get_error(conn, line):
    """Unknown command words reply ERROR; the connection stays open and in step."""
    assert b"ERROR\r\n" == reply_then_in_step(conn, line + b"\r\n")


CASES = {
    "flags not a number": (b"set {q} abc 0 1\r\nx\r\n", b"CLIENT_ERROR bad flags\r\n"),
    "negative flags": (b"set {q} -1 0 1\r\nx\r\n", b"CLIENT_ERROR bad flags\r\n"),
    "flags over 32 bits": (b"set {q} 4294967296 0 1\r\nx\r\n", b"CLIENT_ERROR bad flags\r\n"),
    "exptime not a number": (b"set {q} 0 soon 1\r\nx\r\n", b"CLIENT_ERROR bad exptime\r\n"),
    "exptime beyond the journal's range": (b"set {q} 0 99999999999999999999 1\r\nx\r\n",
                                           b"CLIENT_ERROR bad exptime\r\n"),
    "exptime too long to read": (b"set {q} 0 -999999999999999999999 1\r\nx\r\n", b"CLIENT_ERROR bad exptime\r\n"),
    "too many fields": (b"set {q} 0 0 1 noreply extra\r\nx\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    "get without key": (b"get\r\n", b"CLIENT_ERROR get needs at least one key\r\n"),
    "gets without key": (b"gets\r\n", b"CLIENT_ERROR get needs at least one key\r\n"),
    "bad timeout": (b"get {q}/t=soon\r\n", b"CLIENT_ERROR bad timeout\r\n"),
    "monitor without seconds": (b"monitor {q}\r\n", b"CLIENT_ERROR usage: monitor <queue> <seconds> [max_items]\r\n"),
    "monitor bad seconds": (b"monitor {q} x\r\n", b"CLIENT_ERROR bad seconds\r\n"),
    "confirm bad count": (b"confirm {q} x\r\n", b"CLIENT_ERROR bad count\r\n"),
    "confirm without count": (b"confirm {q}\r\n", b"CLIENT_ERROR usage: confirm <queue> <count>\r\n"),
    "delete without queue": (b"delete\r\n", b"CLIENT_ERROR usage: delete <queue> [noreply]\r\n"),
    "flush without queue": (b"flush\r\n", b"CLIENT_ERROR usage: flush <queue> [noreply]\r\n"),
    "flush_all bad delay": (b"flush_all soon\r\n", b"CLIENT_ERROR bad delay\r\n"),
    "flush_expired without queue": (b"flush_expired\r\n", b"CLIENT_ERROR usage: flush_expired <queue>\r\n"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_fields_get_client_error_and_stay_in_step(conn, q, case):
    """Each malformed request gets its CLIENT_ERROR; no item is stored; the next request is served."""
    request, expected = CASES[case]

    assert expected == reply_then_in_step(conn, request.replace(b"{q}", q.encode()))
    assert b"END\r\n" == get(conn, q)


UNREADABLE_LENGTHS = {
    "length not a number": b"set {q} 0 0 five\r\n",
    "negative length": b"set {q} 0 0 -5\r\n",
    "fractional length": b"set {q} 0 0 1.5\r\n",
    "huge length": b"set {q} 0 0 99999999999999999999\r\n",
    "16-digit length": b"set {q} 0 0 1234567890123456\r\n",
    "missing length": b"set {q} 0 0\r\n",
    "set alone": b"set\r\n",
}


@pytest.mark.parametrize("case", sorted(UNREADABLE_LENGTHS))
def test_unreadable_length_closes_the_connection_without_running_the_block(shared_server, conn, q, case):
    """A set whose length cannot be read loses the framing: its error is sent and the
    connection closed, so a block that holds commands is never run as commands."""
    victim = q + "_victim"
    put(conn, victim, b"precious")
    block = b"delete %s\r\nflush_all\r\n" % victim.encode()
    line = UNREADABLE_LENGTHS[case].replace(b"{q}", q.encode())

    conn.send(line + block)

    assert b"CLIENT_ERROR bad command line format\r\n" == conn.line()
    assert conn.is_closed(timeout=10)
    other = shared_server.raw()
    assert value(victim, b"precious") + b"END\r\n" == get(other, victim)
    other.close()


def test_refused_set_line_still_consumes_its_block(conn, q):
    """A set refused for its queue name or flags still has its block read (it holds a `get`)."""
    block = b"set %s 0 0 1\r\nX\r\n" % q.encode()
    request = b"set bad.name 0 0 %d\r\n%s\r\n" % (len(block), block)
    request += b"set %s nope 0 %d\r\n%s\r\n" % (q.encode(), len(block), block)

    assert b"CLIENT_ERROR bad queue name\r\nCLIENT_ERROR bad flags\r\n" == reply_then_in_step(conn, request)
    assert b"END\r\n" == get(conn, q)


# -- lines and blocks ---------------------------------------------------------------------------


def test_over_long_set_line_has_its_block_skipped_not_run(shared_server, conn, q):
    """`set <64 KiB key> 0 0 <n>` with a block holding `delete` and `flush_all`: the line
    gets `CLIENT_ERROR line too long` and its block is skipped, not run as commands."""
    victim = q + "_victim"
    put(conn, victim, b"precious")
    block = b"delete %s\r\nflush_all" % victim.encode()
    line = b"set " + b"k" * 65536 + b" 0 0 %d\r\n" % len(block)

    assert b"CLIENT_ERROR line too long\r\n" == reply_then_in_step(conn, line + block + b"\r\n")
    assert value(victim, b"precious") + b"END\r\n" == get(conn, victim)


def test_over_long_set_line_with_an_unreadable_length_closes_the_connection(shared_server, conn, q):
    """An over-long set line whose length cannot be read (16 digits) loses the framing:
    `CLIENT_ERROR line too long`, then the connection is closed; the block never runs."""
    victim = q + "_victim"
    put(conn, victim, b"precious")
    line = b"set " + b"k" * 65536 + b" 0 0 1234567890123456\r\n"

    conn.send(line + b"delete %s\r\n" % victim.encode())

    assert b"CLIENT_ERROR line too long\r\n" == conn.line()
    assert conn.is_closed(timeout=10)
    other = shared_server.raw()
    assert value(victim, b"precious") + b"END\r\n" == get(other, victim)
    other.close()




def test_over_long_line_is_refused_and_the_connection_stays_usable(conn):
    """A line over 64 KiB gets `CLIENT_ERROR line too long`, once; the next line is served."""
    line = b"get " + b"a" * (70 * 1024) + b"\r\n"

    assert b"CLIENT_ERROR line too long\r\n" == reply_then_in_step(conn, line)


def test_over_long_line_trickling_in_is_refused_once(conn):
    """A 200 KB line sent in pieces, with no newline for a long time, gets one error."""
    nodelay(conn)
    for _ in range(50):
        conn.send(b"x" * 4096)

    assert b"CLIENT_ERROR line too long\r\n" == reply_then_in_step(conn, b"still the same line\r\n")


def test_line_of_exactly_64_kib_is_accepted(conn):
    """A line of exactly 64 KiB (without its CRLF) is not too long."""
    line = b"version" + b" " * (64 * 1024 - len(b"version"))

    conn.send(line + b"\r\nstatus\r\n")

    assert VERSION + b"UP\r\n" == conn.read_until(b"UP\r\n")


def test_line_of_64_kib_sent_in_pieces_is_accepted(conn):
    """The same 64 KiB line, with its CR and LF in separate packets, is still accepted."""
    nodelay(conn)
    line = b"version" + b" " * (64 * 1024 - len(b"version"))

    conn.send(line)
    time.sleep(0.02)
    conn.send(b"\r")
    time.sleep(0.02)
    conn.send(b"\nstatus\r\n")

    assert VERSION + b"UP\r\n" == conn.read_until(b"UP\r\n")


def test_block_with_wrong_terminator_is_bad_data_chunk(conn, q):
    """A block followed by something other than CRLF gets `CLIENT_ERROR bad data chunk`; nothing is stored."""
    assert b"CLIENT_ERROR bad data chunk\r\n" == reply_then_in_step(
        conn, b"set %s 0 0 3\r\nabcXY\r\n" % q.encode())
    assert b"CLIENT_ERROR bad data chunk\r\n" == reply_then_in_step(
        conn, b"set %s 0 0 3\r\nabc\n" % q.encode())
    assert b"END\r\n" == get(conn, q)


def test_block_shorter_than_declared_is_bad_data_chunk_and_resyncs(conn, q):
    """A block shorter than its length swallows the next bytes, is refused, and the client resyncs."""
    conn.send(b"set %s 0 0 10\r\nabc\r\nversion\r\nstatus\r\n" % q.encode())

    assert b"CLIENT_ERROR bad data chunk\r\n" == conn.line()
    assert b"UP\r\n" == conn.line()
    assert b"END\r\n" == get(conn, q)


# -- queue names ------------------------------------------------------------------------------

BAD_NAMES = [b"a/b", b"a.b", b"a~b", b".", b"~", b"x" * 251, b"+a", b"a+", b"a\x01b", b"\xff\xfe"]


def test_a_slash_in_a_set_key_starts_options_and_an_unknown_one_is_refused(conn):
    """``/`` never reaches a queue name: in a set key it starts the options (``/delay=``,
    ``/at=``, ``/pri=``), and one the server does not know is refused, block consumed."""
    assert b"CLIENT_ERROR unknown set option b\r\n" == reply_then_in_step(conn, b"set a/b 0 0 2\r\nhi\r\n")


@pytest.mark.parametrize("name", [n for n in BAD_NAMES if b"/" not in n], ids=lambda n: repr(n)[2:20])
def test_bad_queue_name_in_set_is_refused(conn, name):
    """set on an invalid queue name gets `CLIENT_ERROR bad queue name` with its block
    consumed; after a `/` comes a set option (erqpy: delay, at, pri), and any other is
    `CLIENT_ERROR unknown set option`."""
    expected = b"CLIENT_ERROR unknown set option b\r\n" if b"/" in name else b"CLIENT_ERROR bad queue name\r\n"

    assert expected == reply_then_in_step(conn, b"set %s 0 0 2\r\nhi\r\n" % name)


@pytest.mark.parametrize("name", [n for n in BAD_NAMES if b"/" not in n], ids=lambda n: repr(n)[2:20])
@pytest.mark.parametrize("command", [b"get %s", b"gets %s", b"get %s/open", b"get %s/t=10", b"get %s/peek",
                                     b"get %s/close", b"get %s/abort", b"delete %s", b"flush %s",
                                     b"flush_expired %s", b"monitor %s 0", b"confirm %s 1"])
def test_bad_queue_name_in_other_commands_is_refused(conn, name, command):
    """Every command naming an invalid queue replies `CLIENT_ERROR bad queue name`."""
    assert b"CLIENT_ERROR bad queue name\r\n" == reply_then_in_step(conn, command % name + b"\r\n")


def test_bad_names_create_no_queue(conn):
    """Refused names never show up in stats."""
    reply_then_in_step(conn, b"set a.b 0 0 1\r\nx\r\nget a~b\r\n")

    stats = conn.call(b"stats\r\n", b"END\r\n")
    assert b"queue_a.b_" not in stats and b"queue_a~b_" not in stats


# -- clients that vanish ------------------------------------------------------------------------


@pytest.mark.parametrize("partial", [
    b"set {q} 0 0 10\r\nhel",  # inside a block
    b"set {q} 0 0 10",  # inside a storage line
    b"get {q}/t=",  # inside a get line
    b"set {q} 0 0 10\r\n0123456789\r",  # between the block and its LF
])
def test_client_that_sends_half_a_command_and_vanishes_leaves_nothing(shared_server, q, partial):
    """Half a request followed by a disconnect stores nothing and harms no one."""
    client = shared_server.raw()
    client.send(partial.replace(b"{q}", q.encode()))
    client.close()

    other = shared_server.raw()
    assert b"END\r\n" == get(other, q)
    other.close()


def test_client_vanishing_during_a_large_block_leaves_nothing(shared_server, q):
    """A client that disconnects after half of a 1 MB block stores nothing."""
    client = shared_server.raw()
    client.send(b"set %s 0 0 1048576\r\n" % q.encode() + b"z" * 524288)
    client.close()

    other = shared_server.raw()
    assert b"END\r\n" == get(other, q)
    other.close()


def test_random_garbage_does_not_hurt_the_server(shared_server):
    """Seeded random bytes (with newlines) on one connection leave the server serving others."""
    rng = random.Random(20240601)
    for _ in range(5):
        client = nodelay(shared_server.raw())
        junk = bytes(rng.choice(b"set get 0123456789 \r\n/\x00\xff.abcq") for _ in range(20_000))
        try:
            client.send(junk)
        except OSError:
            pass  # the server may close on us; that is allowed, dying is not
        client.close()

    other = shared_server.raw()
    assert VERSION == other.call(b"version\r\n")
    other.close()


def test_refused_commands_do_not_disturb_an_item_in_the_queue(conn, q):
    """After a series of bad requests on a queue, its items are exactly what was stored."""
    put(conn, q, b"keep")
    reply_then_in_step(conn, b"set %s x 0 1\r\nz\r\nget %s/peek/open\r\nconfirm %s 5\r\n" % ((q.encode(),) * 3))

    assert value(q, b"keep") + b"END\r\n" == get(conn, q)
