"""Ends of input: a client that shuts down its sending side (nc, a script piping requests)
gets every request it sent answered before the server closes.  (The binary protocol,
which issue 10 only refused here, is served now: tests/protocol/test_binary_*.py.)"""

import socket
import time

from proto_helpers import close_and_wait_for_fin, make_queue, put, queue_stat, value, wait_for_waiters, wait_until

import erqpy

VERSION = b"VERSION 2.4.1 erqpy-%s\r\n" % erqpy.__version__.encode()


def read_to_eof(client, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection."""
    deadline = time.monotonic() + timeout
    data = client.buf
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"connection not closed; got {data[:300]!r}")
        client.sock.settimeout(remaining)
        chunk = client.sock.recv(1 << 16)
        if not chunk:
            return data
        data += chunk


def test_requests_sent_before_a_half_close_are_all_answered(conn, q):
    """`get q/t=100`, `version`, then end of input (as `nc -q3`): both are answered, then
    the connection closes."""
    conn.send(b"get %s/t=100\r\nversion\r\n" % q.encode())
    conn.sock.shutdown(socket.SHUT_WR)

    assert b"END\r\n" + VERSION == read_to_eof(conn)


def test_half_close_while_a_get_blocks_still_waits_its_time_and_gets_the_item(shared_server, conn, clients, q):
    """End of input during a 20 s blocking get: the get still waits (the client may only
    have shut down its sending side, as nc does), the item that arrives is delivered, and
    since the client's TCP stack acknowledged it, it is confirmed: gone from the queue."""
    make_queue(shared_server, q)
    conn.send(b"get %s/t=20000\r\nversion\r\n" % q.encode())
    wait_for_waiters(shared_server, q, 1)
    conn.sock.shutdown(socket.SHUT_WR)
    time.sleep(0.3)  # the FIN reaches the server; the get must go on waiting
    assert 1 == queue_stat(shared_server, q, "waiters")

    put(clients(), q, b"for-the-half-closed")

    assert value(f"{q}/t=20000", b"for-the-half-closed") + b"END\r\n" + VERSION == read_to_eof(conn, timeout=15)
    wait_until(lambda: queue_stat(shared_server, q, "open_transactions") == 0, what="the held read settled")
    assert 0 == queue_stat(shared_server, q, "items")


def test_an_item_taken_for_a_client_that_closed_is_given_back(shared_server, clients, q):
    """A client that sent a blocking get and closed its socket (not a half-close): the
    item taken for it is sent, the client's stack answers with a reset instead of an
    acknowledgement, and the item goes back to the head for the next reader."""
    make_queue(shared_server, q)
    gone = clients()
    gone.send(b"get %s/t=20000\r\n" % q.encode())
    wait_for_waiters(shared_server, q, 1)
    close_and_wait_for_fin(gone)

    put(clients(), q, b"must-not-be-lost")

    wait_until(lambda: queue_stat(shared_server, q, "waiters") == 0, what="the closed reader left")
    wait_until(lambda: queue_stat(shared_server, q, "open_transactions") == 0, what="the held read settled")
    assert "reply after end of input not acknowledged" in shared_server.log()
    reader = clients()
    assert value(q, b"must-not-be-lost") + b"END\r\n" == reader.call(b"get %s\r\n" % q.encode(), b"END\r\n")


def test_plain_gets_after_a_half_close_are_confirmed_once_acknowledged(shared_server, clients, q):
    """Pipelined plain gets sent with the end of input take items as held reads; each is
    confirmed when the reply is acknowledged, so none comes back."""
    writer = clients()
    for n in range(3):
        put(writer, q, b"item-%d" % n)
    conn = clients()
    conn.send(b"get %s\r\nget %s\r\n" % (q.encode(), q.encode()))
    conn.sock.shutdown(socket.SHUT_WR)

    assert value(q, b"item-0") + b"END\r\n" + value(q, b"item-1") + b"END\r\n" == read_to_eof(conn)
    wait_until(lambda: queue_stat(shared_server, q, "open_transactions") == 0, what="the held reads settled")
    assert 1 == queue_stat(shared_server, q, "items")


def test_set_and_get_sent_with_a_half_close_are_answered(conn, q):
    """Storage and reads sent together with the end of input all run and are answered."""
    conn.send(b"set %s 0 0 2\r\nhi\r\nget %s/t=50\r\nget %s/t=50\r\n" % (q.encode(), q.encode(), q.encode()))
    conn.sock.shutdown(socket.SHUT_WR)

    key = f"{q}/t=50"
    assert b"STORED\r\n" + value(key, b"hi") + b"END\r\nEND\r\n" == read_to_eof(conn)
