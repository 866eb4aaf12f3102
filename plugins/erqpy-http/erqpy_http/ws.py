"""WebSockets on the HTTP port: the handshake, and one framed connection over wsproto.

Two endpoints (docs/WEBSOCKET.md): ``/ws`` pushes the body of ``GET /stats`` every
``ws_push_interval`` seconds (``ws_stats.py``), ``/ws/q/NAME`` is the consumer API
(``ws_consumer.py``).  The handshake is an ordinary request of ``app.dispatch``: the Host,
Origin and auth checks refuse it with the API's JSON errors before anything is upgraded.
A WebSocket bypasses the browser's same-origin policy (a page on any site may open one),
so the Origin check applies to ``/ws`` too, although ``GET /stats`` needs none.

Once upgraded, the session runs in the request's greenlet (it holds one of the
``max_connections`` slots until it ends).  wsproto only turns bytes into events and
events into bytes; this module does the I/O, so it decides what is buffered:

* frames to the client wait in this socket's outbox; when one more would take it past
  ``ws_send_buffer`` bytes the client is not reading, and it is dropped rather than
  buffered without bound (one message always fits an empty outbox);
* a message from the client is assembled up to ``ws_max_message`` bytes (close 1009);
* a quiet client is pinged every ``ws_ping_interval`` seconds and closed after
  ``ws_idle_timeout`` seconds without any frame (a pong is one);
* at most ``ws_max_connections`` sockets are open at once (the count is in ``api.data``
  so it outlives a reload); past it the handshake gets 503.

No extension (permessage-deflate) is negotiated: nothing to inflate, no compression bomb.
"""

import json
import logging
import re
import socket
import time
from collections import deque

import gevent
from gevent.event import Event
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.utilities import LocalProtocolError, generate_accept_token

from erqpy.compat import upgraded_stream
from erqpy_http.web import HttpError, check_auth, check_same_origin

log = logging.getLogger("erqpy.plugin.http.ws")

#: Seconds a closing socket waits for the client's Close frame before it is cut.
CLOSE_GRACE = 2.0
READ_SIZE = 64 * 1024
#: Close codes (RFC 6455 section 7.4.1) this server sends.
NORMAL, GOING_AWAY, UNSUPPORTED, POLICY, TOO_BIG, TRY_LATER = 1000, 1001, 1003, 1008, 1009, 1013
_QUEUE_PATH = re.compile(r"^/ws/q/([^/]+)$")


def is_websocket_path(path: str) -> bool:
    return path == "/ws" or path.startswith("/ws/")


def counters(data: dict) -> dict:
    """The WebSocket figures kept in ``api.data``: open now, refused, dropped slow."""
    return data.setdefault("ws", {"open": 0, "refused": 0, "dropped_slow": 0, "opened": 0})


def _peer_name(sock) -> str:
    try:
        return "%s:%s" % tuple(sock.getpeername()[:2])
    except OSError:  # gone already
        return "-"


class WebSocket:
    """One upgraded connection: send JSON, iterate the client's text messages."""

    def __init__(self, sock, stream, settings, figures: dict):
        self.sock = sock
        self.stream = stream
        self.settings = settings
        self.figures = figures
        self.proto = Connection(ConnectionType.SERVER)
        self.outbox: deque = deque()
        self.queued = 0  # bytes in the outbox
        self.has_output = Event()
        self.closed = False  # cut: nothing more goes either way
        self.closing = False  # our Close frame is sent or queued
        self.last_heard = time.monotonic()
        self.peer = _peer_name(sock)

    # -- sending -------------------------------------------------------------------------

    def send_json(self, obj) -> bool:
        """Queue ``obj`` as one text message; False when the socket is closing or gone."""
        return self.send_text(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))

    def send_text(self, text: str) -> bool:
        if self.closed or self.proto.state is not ConnectionState.OPEN:
            return False
        return self._queue(self.proto.send(TextMessage(data=text)))

    def _queue(self, data: bytes) -> bool:
        # One message always fits an empty outbox (a job may be bigger than the cap);
        # the client is too slow when what it has not taken yet would pass the cap.
        if self.queued and self.queued + len(data) > self.settings.ws_send_buffer:
            self.figures["dropped_slow"] += 1
            self.cut(f"over {self.settings.ws_send_buffer} bytes waiting to be sent "
                     "(http.ws_send_buffer): the client does not read")
            return False
        self.outbox.append(data)
        self.queued += len(data)
        self.has_output.set()
        return True

    def write_loop(self) -> None:
        """The writer greenlet: the outbox to the socket, in order."""
        while not self.closed:
            if not self.outbox:
                self.has_output.clear()
                self.has_output.wait()
                continue
            # Everything waiting in one send: one system call for a burst of jobs.
            count = len(self.outbox)
            data = self.outbox[0] if count == 1 else b"".join(self.outbox)
            try:
                self.sock.sendall(data)
            except OSError:
                self.cut("")
                return
            if self.closed:  # cut while this was being sent: the outbox is emptied
                return
            for _ in range(count):
                self.outbox.popleft()
            self.queued -= len(data)

    def close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake; the socket is cut when the client answers, or
        after ``CLOSE_GRACE`` seconds.  What the client sends meanwhile is dropped."""
        if self.closed or self.closing:
            return
        self.closing = True
        if self.proto.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            self._queue(self.proto.send(CloseConnection(code=code, reason=reason[:120])))
        if self.proto.state is ConnectionState.CLOSED:
            self._cut_when_sent()
        else:
            gevent.spawn_later(CLOSE_GRACE, self.cut, "")

    def _cut_when_sent(self) -> None:
        deadline = time.monotonic() + CLOSE_GRACE

        def flush_then_cut():
            while self.outbox and not self.closed and time.monotonic() < deadline:
                gevent.sleep(0.01)
            self.cut("")

        gevent.spawn(flush_then_cut)

    def cut(self, why: str) -> None:
        """End the TCP connection now (the message loop then ends)."""
        if self.closed:
            return
        self.closed = True
        if why:
            log.info("WebSocket from %s dropped: %s", self.peer, why)
        self.outbox.clear()
        self.queued = 0
        self.has_output.set()
        try:
            # shutdown, not close: pywsgi's reader holds a reference that keeps the
            # descriptor open; shutdown ends the connection for both sides at once.
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- receiving -----------------------------------------------------------------------

    def messages(self):
        """The client's text messages, until the connection ends; control frames, the
        closing handshake and every limit on input are handled here."""
        parts: list = []
        size = 0
        while not self.closed:
            try:
                data = self.stream.read1(READ_SIZE)
            except (OSError, ValueError):  # reset; ValueError: the reader was closed
                data = b""
            if not data:
                self.cut("")
                return
            self.last_heard = time.monotonic()
            try:
                self.proto.receive_data(data)
            except LocalProtocolError:  # data after the closing handshake ended
                self.cut("")
                return
            for event in self.proto.events():
                text = self._on_event(event)
                if text is None:
                    continue
                size += len(text.encode())
                if size > self.settings.ws_max_message:
                    self.close(TOO_BIG, f"message over {self.settings.ws_max_message} bytes "
                                        "(http.ws_max_message)")
                    parts, size = [], 0
                elif event.message_finished:
                    message = "".join(parts) + text
                    parts, size = [], 0
                    yield message
                else:
                    parts.append(text)

    def _on_event(self, event):
        """Handle a control event; for a piece of a text message, return its text."""
        if isinstance(event, TextMessage):
            return event.data if self.proto.state is ConnectionState.OPEN and not self.closing else None
        if isinstance(event, BytesMessage):
            self.close(UNSUPPORTED, "binary messages are not supported: send JSON text")
        elif isinstance(event, Ping):
            if self.proto.state is ConnectionState.OPEN:
                self._queue(self.proto.send(event.response()))
        elif isinstance(event, CloseConnection):
            if self.proto.state is ConnectionState.REMOTE_CLOSING:
                self._queue(self.proto.send(event.response()))  # the client closes: answer
                self._cut_when_sent()
            elif self.proto.state is ConnectionState.CLOSED:
                self._cut_when_sent()  # the client's answer to our Close
            else:  # a protocol error wsproto found: the framing is lost, wait for nothing
                self.close(event.code, event.reason or "")
                self._cut_when_sent()
        return None

    def keepalive_loop(self) -> None:
        """Ping a quiet client; close one silent for ``ws_idle_timeout`` seconds."""
        settings = self.settings
        tick = min(settings.ws_ping_interval, settings.ws_idle_timeout) / 2
        last_ping = time.monotonic()
        while not self.closed:
            gevent.sleep(tick)
            now = time.monotonic()
            if now - self.last_heard > settings.ws_idle_timeout:
                log.info("WebSocket from %s idle for %g s: closed", self.peer, settings.ws_idle_timeout)
                self.close(GOING_AWAY, f"idle for {settings.ws_idle_timeout:g} s (http.ws_idle_timeout)")
                return
            if now - last_ping >= settings.ws_ping_interval and self.proto.state is ConnectionState.OPEN:
                self._queue(self.proto.send(Ping(payload=b"erqpy")))
                last_ping = now


# -- the handshake ---------------------------------------------------------------------------


class Upgrade:
    """What ``dispatch`` returns for an accepted handshake: ``app.py`` calls ``run``,
    which answers 101 and runs ``session(ws)`` until the connection ends."""

    status = 101

    def __init__(self, ctx, request, accept: str, session):
        self.ctx = ctx
        self.environ = request.environ
        self.accept = accept
        self.session = session

    def run(self, start_response) -> list:
        figures = counters(self.ctx.data)
        figures["open"] += 1
        figures["opened"] += 1
        ws = None
        helpers: list = []
        try:
            write = start_response("101 Switching Protocols", [
                ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", self.accept),
            ])
            write(b"")  # pywsgi sends the status line and headers now, unchunked (a 101)
            sock = self.environ["erqpy.socket"]
            _bound_kernel_buffer(sock, self.ctx.settings.ws_send_buffer)
            ws = WebSocket(sock, upgraded_stream(self.environ), self.ctx.settings, figures)
            helpers = [gevent.spawn(ws.write_loop), gevent.spawn(ws.keepalive_loop)]
            self.session(ws)
        except OSError:
            pass  # the client went during the handshake's answer
        except Exception:
            log.exception("WebSocket session failed")
        finally:
            figures["open"] -= 1
            if ws is not None:
                ws.cut("")
            gevent.killall(helpers, block=False)
        return []


def _bound_kernel_buffer(sock, size: int) -> None:
    """Cap the kernel's send buffer as well (Linux doubles the value set), so that a
    client that stops reading holds about ``ws_send_buffer`` bytes there too, and is
    found out (the outbox fills) instead of being fed megabytes first."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, max(size, 4096))
    except OSError:
        pass


def _handshake_accept(request) -> str:
    """The Sec-WebSocket-Accept for a valid RFC 6455 opening handshake, or HttpError."""
    if request.method != "GET":
        raise HttpError(405, "a WebSocket handshake is a GET", [("Allow", "GET")])
    if request.header("Upgrade").lower() != "websocket" or \
            "upgrade" not in [t.strip() for t in request.header("Connection").lower().split(",")]:
        raise HttpError(400, "this is a WebSocket endpoint: send Upgrade: websocket, Connection: Upgrade")
    if request.header("Sec-WebSocket-Version") != "13":
        raise HttpError(400, "only WebSocket version 13 is supported", [("Sec-WebSocket-Version", "13")])
    key = request.header("Sec-WebSocket-Key").strip()
    if len(key) != 24 or not re.fullmatch(r"[A-Za-z0-9+/]{22}==", key):
        raise HttpError(400, "bad Sec-WebSocket-Key")
    return generate_accept_token(key.encode()).decode()


def upgrade(ctx, request, path: str) -> Upgrade:
    """Check a handshake for ``path`` and choose its session; raises ``HttpError``."""
    from erqpy_http import ws_consumer, ws_stats

    match = _QUEUE_PATH.match(path)
    if path == "/ws":
        session = ws_stats.session_for(ctx, with_history=request.flag("history"))
    elif match:
        if ctx.settings.read_only:
            raise HttpError(403, "read-only mode: this action is disabled")
        session = ws_consumer.session_for(ctx, match.group(1))
    else:
        raise HttpError(404, "not found")
    check_same_origin(request)
    if match:
        check_auth(request, ctx.settings)  # consuming changes the queue, as POST .../take
    accept = _handshake_accept(request)
    figures = counters(ctx.data)
    limit = ctx.settings.ws_max_connections
    if figures["open"] >= limit:
        figures["refused"] += 1
        raise HttpError(503, f"too many WebSockets open (http.ws_max_connections is {limit}); try again",
                        [("Retry-After", "1")])
    return Upgrade(ctx, request, accept, session)
