"""What the WebSocket tests share: a real client (``websocket-client``) on an erqpy-http
server, JSON messages with a deadline, and the close code of a closed socket."""

import json
import struct
import time

import websocket

TIMEOUT = 10.0  # seconds for any one receive


def ws_url(server, path: str) -> str:
    return server.base.replace("http://", "ws://", 1) + path


def connect(server, path: str, **options):
    """Open ``path``; ``origin`` defaults to none (a program, not a browser)."""
    options.setdefault("timeout", TIMEOUT)
    options.setdefault("suppress_origin", "origin" not in options)
    return websocket.create_connection(ws_url(server, path), **options)


def refused_status(server, path: str, **options) -> int:
    """The HTTP status of a refused handshake (fails if it is accepted)."""
    try:
        sock = connect(server, path, **options)
    except websocket.WebSocketBadStatusException as exc:
        return exc.status_code
    sock.close()
    raise AssertionError(f"the handshake for {path} was accepted")


def receive(sock, timeout: float = TIMEOUT) -> dict:
    sock.settimeout(timeout)
    text = sock.recv()
    assert text, "the server closed the socket"
    return json.loads(text)


def receive_type(sock, kind: str, timeout: float = TIMEOUT, limit: int = 200) -> dict:
    """The next message of ``kind``, skipping at most ``limit`` others."""
    deadline = time.monotonic() + timeout
    for _ in range(limit):
        message = receive(sock, max(0.05, deadline - time.monotonic()))
        if message.get("type") == kind:
            return message
    raise AssertionError(f"no {kind!r} message in {limit}")


def stats_with(sock, queue: str, limit: int = 20) -> dict:
    """The body of the first push that lists ``queue`` (a push is shared by every socket
    for half an interval, so the first may predate a queue just made)."""
    for _ in range(limit):
        body = receive_type(sock, "stats")["body"]
        if queue in body["queues"]:
            return body
    raise AssertionError(f"{limit} pushes without {queue}")


def send(sock, **message) -> None:
    sock.send(json.dumps(message))


def close_code(sock, timeout: float = TIMEOUT) -> int:
    """Read until the server's Close frame; its status code."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        opcode, frame = sock.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return struct.unpack("!H", frame.data[:2])[0] if len(frame.data) >= 2 else 1005
    raise AssertionError("no Close frame")


def fill(server, queue: str, count: int) -> None:
    """``count`` jobs ``{"n": 0}``, ``{"n": 1}``, ... on ``queue``, over HTTP."""
    for n in range(count):
        server.enqueue(queue, {"n": n})


def subscribed(server, queue: str, prefetch: int = 1, **options):
    sock = connect(server, f"/ws/q/{queue}", **options)
    send(sock, op="subscribe", prefetch=prefetch)
    reply = receive(sock)
    assert {"type": "subscribed", "queue": queue, "prefetch": prefetch} == reply
    return sock
