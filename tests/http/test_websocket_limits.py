"""The WebSocket endpoints' checks and bounds against a real erqpy: auth, Origin and Host
as the HTTP API has them, the connection cap, the send buffer (a slow reader is dropped
and its jobs come back), the message size, bad frames and the idle timeout, each with
a real handshake and the server fine afterwards."""

import base64
import json
import os
import socket
import time
from contextlib import closing

import pytest
import websocket

from http_helpers import wait_until
from ws_helpers import close_code, connect, fill, receive, receive_type, refused_status, send, subscribed

pytestmark = pytest.mark.protocol
TOKEN = "s3cret-token"


def still_serving(server) -> None:
    """A fresh socket gets a push: the server took no harm."""
    with closing(connect(server, "/ws")) as sock:
        assert "stats" == receive_type(sock, "stats")["type"]


def test_the_consumer_api_needs_the_token_when_one_is_set(http_server):
    server = http_server({"token": TOKEN, "ws_push_interval": 0.2})
    server.post("/q/authq", json={"n": 1}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert 401 == refused_status(server, "/ws/q/authq")
    assert 401 == refused_status(server, "/ws/q/authq", header=["Authorization: Bearer wrong"])
    with closing(subscribed(server, "authq", header=[f"Authorization: Bearer {TOKEN}"])) as sock:
        assert {"n": 1} == receive(sock)["job"]
    still_serving(server)  # /ws needs no token, as GET /stats needs none


def test_a_foreign_origin_is_refused_on_both_endpoints_and_the_own_origin_accepted(http_server):
    server = http_server({"ws_push_interval": 0.2})
    for path in ("/ws", "/ws/q/originq"):
        assert 403 == refused_status(server, path, origin="http://evil.example")
        assert 403 == refused_status(server, path, origin="null")
        assert 403 == refused_status(server, path, origin=server.base,
                                     header=["Sec-Fetch-Site: cross-site"])
    sock = connect(server, "/ws", origin=server.base)  # a page of this server
    try:
        assert "stats" == receive_type(sock, "stats")["type"]
    finally:
        sock.close()


def test_a_foreign_host_is_refused(http_server):
    server = http_server({"ws_push_interval": 0.2})
    port = server.base.rsplit(":", 1)[1]
    assert 403 == refused_status(server, "/ws", host=f"rebound.example:{port}")


def test_read_only_refuses_the_consumer_api_but_not_the_pushes(http_server):
    server = http_server({"read_only": True, "ws_push_interval": 0.2})
    assert 403 == refused_status(server, "/ws/q/roq")
    still_serving(server)


def test_not_a_websocket_handshake_is_a_clear_http_error(http_server):
    server = http_server()
    reply = server.get("/ws")
    assert 400 == reply.status_code and "WebSocket" in reply.json()["error"]
    assert 400 == server.get("/ws/q/bad%20name", headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}).status_code
    assert 404 == server.get("/ws/other").status_code
    reply = server.get("/ws", headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                       "Sec-WebSocket-Version": "8", "Sec-WebSocket-Key": "x"})
    assert 400 == reply.status_code and "13" == reply.headers["Sec-WebSocket-Version"]


def test_the_connection_cap_refuses_the_next_handshake_until_one_closes(http_server):
    server = http_server({"ws_max_connections": 2, "ws_push_interval": 0.2})
    first, second = connect(server, "/ws"), connect(server, "/ws")
    try:
        receive_type(first, "stats")
        receive_type(second, "stats")
        assert 503 == refused_status(server, "/ws")
        assert 503 == refused_status(server, "/ws/q/capq")
        figures = server.get("/stats").json()["http"]["websockets"]  # plain HTTP is not capped by it
        assert {"open": 2, "opened": 2, "refused": 2, "dropped_slow": 0} == figures
    finally:
        first.close()
    wait_until(lambda: _accepted(server), what="a slot free again")
    second.close()


def _accepted(server) -> bool:
    try:
        sock = connect(server, "/ws")
    except websocket.WebSocketBadStatusException:
        return False
    sock.close()
    return True


def test_a_slow_reader_is_dropped_and_the_jobs_it_held_come_back(http_server):
    server = http_server({"ws_send_buffer": 8192, "ws_max_prefetch": 100})
    big = "x" * 30_000
    for n in range(40):
        server.enqueue("slowq", {"n": n, "pad": big})
    # A tiny receive buffer, and the client never reads: the server's outbox fills.
    sock = connect(server, "/ws/q/slowq", sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    send(sock, op="subscribe", prefetch=100)
    wait_until(lambda: "dropped: over 8192 bytes waiting" in server.srv.log(), timeout=15,
               what="the slow reader dropped")
    wait_until(lambda: server.depth("slowq") == 40, what="its jobs given back")
    assert 1 == server.get("/stats").json()["http"]["websockets"]["dropped_slow"]
    assert 0 == server.get("/stats/slowq").json()["queues"]["slowq"]["open_transactions"]
    sock.close()
    taken = server.post("/q/slowq/take").json()
    assert 0 == taken["n"]  # back at the head in order
    still_serving(server)


def test_a_slow_stats_reader_is_dropped(http_server):
    server = http_server({"ws_send_buffer": 4096, "ws_push_interval": 0.05})
    for n in range(30):
        server.enqueue(f"slowstats{n:02d}", {"n": n})
    sock = connect(server, "/ws", sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    wait_until(lambda: "dropped: over 4096 bytes waiting" in server.srv.log(), timeout=15,
               what="the slow stats reader dropped")
    sock.close()
    still_serving(server)


def test_binary_and_oversized_messages_are_closed_with_their_codes(http_server):
    server = http_server({"ws_max_message": 1024, "ws_push_interval": 0.2})
    sock = connect(server, "/ws/q/frameq")
    sock.send_binary(b"\x00\x01")
    assert 1003 == close_code(sock)
    sock.close()
    sock = connect(server, "/ws/q/frameq")
    sock.send(json.dumps({"op": "subscribe", "pad": "y" * 2000}))
    assert 1009 == close_code(sock)
    sock.close()
    still_serving(server)


def test_a_protocol_violation_is_closed_with_1002_and_the_server_is_fine(http_server):
    server = http_server({"ws_push_interval": 0.2})
    sock = connect(server, "/ws/q/rawq")
    # An unmasked text frame: RFC 6455 requires a client to mask every frame.
    sock.sock.sendall(b"\x81\x05hello")
    assert 1002 == close_code(sock)
    sock.close()
    # Half a frame header, then the socket ends: nothing breaks.
    raw = connect(server, "/ws/q/rawq")
    raw.sock.sendall(b"\x81")
    raw.sock.close()
    still_serving(server)


def test_an_idle_client_that_answers_no_ping_is_closed(http_server):
    server = http_server({"ws_ping_interval": 0.2, "ws_idle_timeout": 0.8, "ws_push_interval": 10})
    sock = connect(server, "/ws/q/idleq")
    sock.settimeout(5)
    started = time.monotonic()
    # Read raw frames and answer nothing (websocket-client would answer the pings).
    frames = _raw_frames(sock.sock, timeout=5)
    elapsed = time.monotonic() - started
    assert 0x9 in frames  # pinged first
    assert 0x8 in frames  # then closed
    assert 0.6 < elapsed < 5
    sock.sock.close()


def _raw_frames(raw, timeout: float) -> list:
    """Opcodes of the server's frames until its Close frame or the end of the socket."""
    raw.settimeout(timeout)
    data, opcodes = b"", []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and 0x8 not in opcodes:
        chunk = raw.recv(4096)
        if not chunk:
            break
        data += chunk
        while len(data) >= 2 and len(data) >= 2 + (data[1] & 0x7F):
            length = data[1] & 0x7F
            assert length < 126  # the server's control frames are short
            opcodes.append(data[0] & 0x0F)
            data = data[2 + length:]
    return opcodes


def test_the_client_closing_gets_an_answer_and_no_error(http_server):
    server = http_server({"ws_push_interval": 0.2})
    sock = subscribed(server, "closeq")
    sock.close(status=1000)  # websocket-client waits for the server's Close answer
    assert not sock.connected
    assert "WebSocket session failed" not in server.srv.log()
    still_serving(server)


def test_settings_are_checked():
    from erqpy_http import config

    with pytest.raises(ValueError, match="ws_send_buffer"):
        config.parse({"ws_send_buffer": 10})
    with pytest.raises(ValueError, match="ws_push_interval"):
        config.parse({"ws_push_interval": 0})
    assert 5 == config.parse({"ws_max_prefetch": 5}).ws_max_prefetch
    with pytest.raises(ValueError, match="below http.max_connections"):
        config.parse({"max_connections": 50, "ws_max_connections": 50})
    assert 49 == config.parse({"max_connections": 50, "ws_max_connections": 49}).ws_max_connections
    assert 25 == config.parse({"max_connections": 50}).ws_max_connections  # half, below 100
    assert 100 == config.parse({}).ws_max_connections


def test_an_open_socket_keeps_working_across_a_reload_and_the_count_is_kept(http_server):
    server = http_server({"ws_max_connections": 2, "ws_push_interval": 0.2})
    fill(server, "reloadq", 2)
    with closing(subscribed(server, "reloadq", prefetch=1)) as sock:
        job = receive(sock)
        assert 200 == server.post("/server/reload").status_code
        send(sock, op="ack", id=job["id"])  # the old code still serves this socket
        assert "acked" == receive(sock)["type"]
        assert {"n": 1} == receive(sock)["job"]
        other = connect(server, "/ws")  # the new code counts the old socket too
        try:
            assert 503 == refused_status(server, "/ws")
        finally:
            other.close()
    wait_until(lambda: server.depth("reloadq") == 1, what="the unacked job given back")


def test_jobs_held_when_the_server_stops_or_crashes_are_there_after_the_restart(http_server):
    server = http_server({"ws_push_interval": 0.2})
    fill(server, "stopq", 3)
    sock = subscribed(server, "stopq", prefetch=2)
    assert [0, 1] == [receive(sock)["job"]["n"] for _ in range(2)]
    server.restart()  # a graceful stop with the socket open
    sock.close()
    assert 3 == server.depth("stopq")
    sock = subscribed(server, "stopq", prefetch=2)
    assert [0, 1] == [receive(sock)["job"]["n"] for _ in range(2)]
    server.crash_and_start()  # SIGKILL: journal replay gives the open reads back
    sock.close()
    assert 3 == server.depth("stopq")
    assert [0, 1, 2] == [server.post("/q/stopq/take").json()["n"] for _ in range(3)]


def test_a_job_given_back_by_open_read_timeout_is_announced_and_frees_its_slot(http_server):
    server = http_server({"ws_push_interval": 0.2},
                         extra_toml="[queues.leaseq]\nopen_read_timeout = 1\n")
    fill(server, "leaseq", 1)
    with closing(subscribed(server, "leaseq", prefetch=1)) as sock:
        job = receive(sock)
        lost = receive(sock, timeout=15)  # the sweep gave it back; the socket says so
        assert ("error", job["id"]) == (lost["type"], lost["id"]) and "no longer held" in lost["error"]
        again = receive_type(sock, "job", timeout=15)  # the slot is free: delivered again
        assert again["item_id"] == job["item_id"] and again["id"] != job["id"]
        send(sock, op="ack", id=job["id"])  # the first delivery confirms nothing
        assert "error" == receive(sock)["type"]
        send(sock, op="ack", id=again["id"])
        assert "acked" == receive(sock)["type"]
    assert 0 == server.depth("leaseq")
