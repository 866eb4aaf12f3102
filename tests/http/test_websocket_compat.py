"""``erqpy.compat.upgraded_stream`` and the pywsgi upgrade behaviour ws.py relies on,
against the installed gevent: each test fails if pywsgi changes it.

* For a request with ``Upgrade: websocket``, ``wsgi.input`` is pywsgi's buffered reader
  of the socket (not the body-limited ``Input``), and bytes the client sent right after
  its headers are there to read;
* a ``101`` answer is sent with no chunked encoding and nothing after the headers, and
  once the application has shut the socket down pywsgi adds nothing and ends.

Real gevent sockets and a real pywsgi server on 127.0.0.1 in this process.
"""

import socket

import gevent.socket
from gevent.pywsgi import WSGIHandler

from erqpy import compat
from tests.unit.test_compat import TIMEOUT, _read_to_end, _wsgi_server

HANDSHAKE = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")


def _upgrading_app(seen: dict):
    """Answer 101, read what follows through compat.upgraded_stream, echo it, shut down."""

    def app(environ, start_response):
        stream = compat.upgraded_stream(environ)
        write = start_response("101 Switching Protocols", [("Upgrade", "websocket"), ("Connection", "Upgrade")])
        write(b"")
        seen["read"] = stream.read1(65536)
        seen["socket"].sendall(b"echo:" + seen["read"])
        seen["socket"].shutdown(socket.SHUT_RDWR)
        return []

    return app


def _handler_exposing_the_socket(seen: dict):
    class Handler(WSGIHandler):
        def get_environ(self):
            seen["socket"] = self.socket  # as erqpy-http's Handler puts it in erqpy.socket
            return super().get_environ()

    return Handler


def test_upgraded_stream_reads_the_bytes_sent_with_the_handshake_and_101_is_not_chunked():
    seen: dict = {}
    server = _wsgi_server(_upgrading_app(seen), _handler_exposing_the_socket(seen))
    client = gevent.socket.create_connection(server.address, timeout=TIMEOUT)
    try:
        client.sendall(HANDSHAKE + b"\x81\x85first-frame")  # the frame right behind the headers
        reply = _read_to_end(client, TIMEOUT)
    finally:
        client.close()
        server.stop()
    head, _, rest = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"transfer-encoding" not in head.lower()
    assert b"\x81\x85first-frame" == seen["read"]
    assert b"echo:\x81\x85first-frame" == rest  # nothing of pywsgi's after the session


def test_upgraded_stream_refuses_a_stream_it_cannot_use():
    class NoReader:
        pass

    try:
        compat.upgraded_stream({"wsgi.input": NoReader()})
    except RuntimeError as exc:
        assert "buffered reader" in str(exc)
    else:
        raise AssertionError("a stream without read1 was accepted")


def test_upgraded_stream_takes_the_reader_of_an_older_pywsgi_input():
    import io

    reader = io.BufferedReader(io.BytesIO(b"abc"))

    class OldInput:
        rfile = reader

    assert reader is compat.upgraded_stream({"wsgi.input": OldInput()})
