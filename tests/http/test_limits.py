"""Slow and idle clients cannot hold the HTTP API: header and body timeouts, the cap on
request bodies held in memory at once, and no endless read of a body nobody wanted."""

import socket
import time
from contextlib import ExitStack

from http_helpers import wait_until

#: Generous slack on top of a configured timeout for a loaded 2-core machine.
MARGIN = 6.0


def connect(server, timeout: float = 15.0) -> socket.socket:
    host, port = server.base[len("http://"):].split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def read_reply(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (bounded by the timeout)."""
    data = b""
    while len(data) < 1_000_000:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_idle_half_requests_do_not_block_the_api(http_server):
    """60 connections that never finish their headers, with max_connections 50: once
    header_timeout (1 s) has passed they are closed and a normal request is answered."""
    server = http_server({"max_connections": 50, "header_timeout": 1})
    with ExitStack() as stack:
        idle = [stack.enter_context(connect(server)) for _ in range(60)]
        for sock in idle:
            sock.sendall(b"POST /q/slow HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line, ever
        started = time.monotonic()

        reply = server.get("/stats", timeout=1 + MARGIN)
        elapsed = time.monotonic() - started

        assert 200 == reply.status_code
        assert elapsed < 1 + MARGIN
        # The first 50 were served (and timed out) by the pool: 408 then closed.
        replies = [read_reply(sock) for sock in idle[:50]]
    assert all(r.startswith(b"HTTP/1.1 408 ") for r in replies), {r[:40] for r in replies}
    assert b"header_timeout" in replies[0]


def test_a_connection_idle_before_its_request_line_is_closed(http_server):
    """A connection that sends nothing at all is closed after header_timeout."""
    server = http_server({"header_timeout": 1})

    with connect(server) as sock:
        started = time.monotonic()
        data = read_reply(sock)
        elapsed = time.monotonic() - started

    assert b"" == data
    assert elapsed < 1 + MARGIN


def test_a_body_that_stops_arriving_is_a_408(http_server):
    """Content-Length 100 and 10 bytes sent: 408 after body_timeout (1 s), connection
    closed; nothing was queued."""
    server = http_server({"body_timeout": 1})

    with connect(server) as sock:
        sock.sendall(b"POST /q/stalled HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n[1,2,3,4,")
        started = time.monotonic()
        reply = read_reply(sock)
        elapsed = time.monotonic() - started

    assert reply.startswith(b"HTTP/1.1 408 "), reply[:80]
    assert b"http.body_timeout" in reply
    assert elapsed < 1 + MARGIN
    assert 404 == server.get("/j/stalled").status_code


def test_bodies_held_at_once_are_bounded(http_server):
    """max_body_buffer 128 KiB, max_body 64 KiB: two clients stalled in the middle of a
    64 KiB body hold it all; a third body is refused with 503 and Retry-After.  Once the
    stalled bodies time out, bodies are taken again."""
    server = http_server({"max_body": 65536, "max_body_buffer": 131072, "body_timeout": 3})
    head = (b"POST /q/held HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 65536\r\n\r\n")
    with ExitStack() as stack:
        stalled = [stack.enter_context(connect(server)) for _ in range(2)]
        for sock in stalled:
            sock.sendall(head + b'["' + b"x" * 30000)

        answers = []

        def third_refused() -> bool:
            # Another queue: a third body that came before the two were held may be queued.
            answers.append(server.post("/q/held-probe", json={"third": True}))
            return answers[-1].status_code == 503

        assert wait_until(third_refused, timeout=5), [a.status_code for a in answers]
        refused = answers[-1]
        assert "http.max_body_buffer" in refused.json()["error"]
        assert "1" == refused.headers["Retry-After"]

        assert all(read_reply(sock).startswith(b"HTTP/1.1 408 ") for sock in stalled)
    accepted = server.post("/q/held", json={"after": True})

    assert 201 == accepted.status_code
    assert 1 == server.depth("held")


def test_a_body_no_route_reads_does_not_hold_the_connection(http_server):
    """A GET that announces a 1 MB body and sends 10 bytes is answered, and the
    connection is closed instead of waiting (with no time limit) for the rest."""
    server = http_server({"body_timeout": 30})

    with connect(server, timeout=1 + MARGIN) as sock:
        sock.sendall(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\n0123456789")
        reply = read_reply(sock)

    assert reply.startswith(b"HTTP/1.1 200 ")
    assert b"Connection: close" in reply


def test_a_body_over_max_body_is_a_413_without_reading_it(http_server):
    """Content-Length over max_body: 413 at once, the body is not waited for."""
    server = http_server({"max_body": 4096})

    with connect(server, timeout=1 + MARGIN) as sock:
        sock.sendall(b"POST /q/big HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 5000\r\n\r\n[")
        reply = read_reply(sock)

    assert reply.startswith(b"HTTP/1.1 413 ")
    assert b"over 4096 bytes" in reply
