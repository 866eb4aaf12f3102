"""erqpy.compat against the installed libraries: each test fails if gevent, its pywsgi or
pymemcache changes the private detail that erqpy.compat relies on.

Everything here is real: gevent sockets and servers on 127.0.0.1 in this process, and a
real erqpy server for pymemcache.
"""

import _socket
import os
import socket
import time

import gevent
import gevent.socket
from gevent.event import Event
from gevent.pywsgi import WSGIHandler, WSGIServer
from gevent.server import StreamServer
from pymemcache.client.base import Client as MemcacheClient
from pymemcache.exceptions import MemcacheClientError

from erqpy import compat

TIMEOUT = 10.0


# -- gevent sockets ------------------------------------------------------------------------


def test_raw_socket_is_the_os_socket_under_gevents_wrapper():
    ours, peer = gevent.socket.socketpair()
    try:
        raw = compat.raw_socket(ours)

        assert raw is not ours and type(raw) is not type(ours)
        assert isinstance(raw, _socket.socket) and raw.fileno() == ours.fileno()
        # Non-blocking: no data is EAGAIN at once, not a wait on the hub.
        started = time.monotonic()
        try:
            raw.recv(1)
        except BlockingIOError:
            pass
        else:
            raise AssertionError("the raw socket's recv waited for data")
        assert time.monotonic() - started < 1.0
        peer.sendall(b"x")
        gevent.socket.wait_read(ours.fileno(), timeout=TIMEOUT)
        assert b"x" == raw.recv(1)
        assert 1 == raw.send(b"y")
        with gevent.Timeout(TIMEOUT):
            assert b"y" == peer.recv(1)
    finally:
        ours.close()
        peer.close()


def test_raw_socket_of_a_plain_socket_is_itself():
    ours, peer = socket.socketpair()
    try:
        assert compat.raw_socket(ours) is ours
    finally:
        ours.close()
        peer.close()


def test_accept_descriptor_gives_a_bare_descriptor_and_the_peer_address():
    listener = gevent.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    client = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
    try:
        with gevent.Timeout(TIMEOUT):
            while True:
                try:
                    fd, address = compat.accept_descriptor(listener)
                    break
                except BlockingIOError:  # the handshake not yet in the backlog
                    gevent.sleep(0.01)
        try:
            assert isinstance(fd, int)
            assert client.getsockname() == address
            os.write(fd, b"hello")
            assert b"hello" == client.recv(5)
        finally:
            os.close(fd)
        assert b"" == client.recv(1)
    finally:
        client.close()
        listener.close()


def test_pause_accepting_holds_new_connections_until_the_pause_ends():
    handled = Event()
    handled_at = []

    def handle(sock, _address):
        handled_at.append(time.monotonic())
        handled.set()
        sock.close()

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    try:
        pause = 0.5
        paused_at = time.monotonic()
        compat.pause_accepting(server, pause)
        client = gevent.socket.create_connection(server.address, timeout=TIMEOUT)
        try:
            assert handled.wait(TIMEOUT), "accepting never resumed after the pause"
            assert handled_at[0] - paused_at >= pause * 0.9
        finally:
            client.close()
    finally:
        server.stop()


def test_the_pause_is_gevents_own_timer_that_stop_accepting_cancels():
    handled = Event()

    def handle(sock, _address):
        handled.set()
        sock.close()

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    try:
        compat.pause_accepting(server, 0.2)
        server.stop_accepting()  # cancels gevent's back-off timer: ours, if it is that one
        client = gevent.socket.create_connection(server.address, timeout=TIMEOUT)
        try:
            assert not handled.wait(0.6), "the cancelled pause still restarted accepting"
            server.start_accepting()
            assert handled.wait(TIMEOUT)
        finally:
            client.close()
    finally:
        server.stop()


# -- pywsgi --------------------------------------------------------------------------------


def _wsgi_server(app, handler_class=WSGIHandler):
    server = WSGIServer(("127.0.0.1", 0), app, handler_class=handler_class, log=None, error_log=None)
    server.start()
    return server


def _read_to_end(sock, timeout: float) -> bytes:
    """Everything the server sends until it closes; raises gevent.Timeout if it does not."""
    data = b""
    with gevent.Timeout(timeout):
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk


def _refuse_body(abandon: bool):
    def app(environ, start_response):
        if abandon:
            compat.abandon_wsgi_input(environ["wsgi.input"])
        start_response("413 Payload Too Large", [("Content-Length", "0"), ("Connection", "close")])
        return [b""]
    return app


def _send_head_of_a_large_body(server):
    client = gevent.socket.create_connection(server.address, timeout=TIMEOUT)
    client.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"a" * 10)
    return client


def test_abandon_wsgi_input_closes_without_reading_the_rest_of_the_body():
    server = _wsgi_server(_refuse_body(abandon=True))
    client = _send_head_of_a_large_body(server)
    try:
        assert _read_to_end(client, TIMEOUT).startswith(b"HTTP/1.1 413 ")
    finally:
        client.close()
        server.stop()


def test_without_abandon_pywsgi_waits_for_the_rest_of_the_body():
    """The control for the test above: the flag is what makes the difference."""
    server = _wsgi_server(_refuse_body(abandon=False))
    client = _send_head_of_a_large_body(server)
    try:
        try:
            _read_to_end(client, 0.5)
        except gevent.Timeout:
            pass
        else:
            raise AssertionError("pywsgi closed without reading the body: the control is void")
    finally:
        client.close()
        server.stop()


def test_pywsgi_sets_the_abandon_flag_itself_on_a_bad_chunk():
    """The flag keeps the meaning erqpy gives it: pywsgi's own mark of a body it gave up."""
    seen = {}

    def app(environ, start_response):
        stream = environ["wsgi.input"]
        seen["before"] = stream._chunked_input_error
        try:
            stream.read()
        except OSError as exc:  # pywsgi's _InvalidClientInput
            seen["error"] = exc
        seen["after"] = stream._chunked_input_error
        start_response("400 Bad Request", [("Content-Length", "0"), ("Connection", "close")])
        return [b""]

    server = _wsgi_server(app)
    client = gevent.socket.create_connection(server.address, timeout=TIMEOUT)
    try:
        client.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        _read_to_end(client, TIMEOUT)
        assert seen["before"] is False and seen["after"] is True and "error" in seen
    finally:
        client.close()
        server.stop()


def test_abandon_wsgi_input_leaves_other_streams_alone():
    class Stream:
        pass

    stream = Stream()
    compat.abandon_wsgi_input(stream)
    assert not hasattr(stream, "_chunked_input_error")


class _TeapotOnBadRequests(compat.ClientErrorReply, WSGIHandler):
    def client_error_reply(self, ex):
        if "teapot" in str(ex):
            return ("418", b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        return None


def _bad_request_reply(request_line: bytes) -> bytes:
    server = _wsgi_server(lambda environ, start: [], handler_class=_TeapotOnBadRequests)
    client = gevent.socket.create_connection(server.address, timeout=TIMEOUT)
    try:
        client.sendall(request_line + b"\r\n\r\n")
        return _read_to_end(client, TIMEOUT)
    finally:
        client.close()
        server.stop()


def test_client_error_reply_chooses_the_reply_to_an_unreadable_request():
    assert _bad_request_reply(b"GET /teapot HTTP/1.1 junk").startswith(b"HTTP/1.1 418 ")


def test_client_error_reply_none_leaves_pywsgis_own_reply():
    assert _bad_request_reply(b"GET /other HTTP/1.1 junk").startswith(b"HTTP/1.1 400 ")


# -- pymemcache ----------------------------------------------------------------------------


def test_send_pipelined_sends_every_command_and_reads_a_reply_each(server):
    mc = MemcacheClient(server.address, timeout=TIMEOUT)
    try:
        commands = [b"set pipeq 0 0 1\r\n%s\r\n" % bytes([c]) for c in b"abc"]
        assert [b"STORED"] * 3 == compat.send_pipelined(mc, commands, b"set")
        assert [b"a", b"b", b"c", None] == [mc.get("pipeq") for _ in range(4)]
    finally:
        mc.close()


def test_send_pipelined_raises_pymemcaches_error_for_an_error_line(server):
    mc = MemcacheClient(server.address, timeout=TIMEOUT)
    try:
        try:
            compat.send_pipelined(mc, [b"set pipeq 0 0 nonsense\r\nx\r\n"], b"set")
        except MemcacheClientError:
            pass
        else:
            raise AssertionError("an error reply did not raise")
    finally:
        mc.close()
