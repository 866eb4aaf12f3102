"""The plugin's services: the HTTP listener, the reservation sweeper, the rate sampler.

The listener outlives a reload of the plugin's code.  The ``WSGIServer`` (gevent's class,
not ours) is kept in ``api.data``; a new load only points it at the new application, so
the port is never closed and open keep-alive connections run new code from their next
request.  When the service is killed for a reload it leaves the server running and
checks a little later that a new load took it over; if none did (the ``[http]`` table was
removed), it stops it.  When the service is killed because the server stops, it stops
the listener.
"""

import logging
import socket

import gevent
from gevent.event import Event
from gevent.pool import Pool
from gevent.pywsgi import WSGIHandler, WSGIServer

from erqpy.compat import ClientErrorReply
from erqpy_http import reservations, stats

log = logging.getLogger("erqpy.plugin.http")

#: Seconds after a reload before an HTTP server that no new load claimed is stopped.
HANDOVER_GRACE = 5.0
#: Seconds the stopping server lets requests in flight finish.
STOP_GRACE = 2.0
SWEEP_INTERVAL = 0.25


class HeaderTimeout(OSError):
    """The client did not send a request line and headers within http.header_timeout.

    An ``OSError`` so that pywsgi, when it comes while waiting for the request line,
    closes the connection as it does for a reset.
    """


_TIMEOUT_BODY = b'{"error":"request headers not received within http.header_timeout"}'
_REQUEST_TIMEOUT_REPLY = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


class Handler(ClientErrorReply, WSGIHandler):
    """Exposes the client socket so a blocking fetch can notice the client leaving, and
    bounds the time a connection may take to send its request line and headers (else a
    few idle or trickling clients hold every slot of the pool for good)."""

    _header_timer = None

    def handle_one_request(self):
        timeout = getattr(self.server, "erqpy_header_timeout", None)
        if timeout:
            self._header_timer = gevent.Timeout.start_new(timeout, HeaderTimeout)
        try:
            return super().handle_one_request()
        finally:
            self._cancel_header_timer()

    def read_request(self, raw_requestline):
        try:
            return super().read_request(raw_requestline)
        finally:
            self._cancel_header_timer()  # the headers are in: the application's time now

    def _cancel_header_timer(self):
        timer, self._header_timer = self._header_timer, None
        if timer is not None:
            timer.cancel()

    def client_error_reply(self, ex):
        if isinstance(ex, HeaderTimeout):
            # The request line came but the headers did not: say why before closing.
            return ("408", _REQUEST_TIMEOUT_REPLY)
        return None

    def handle(self):
        # pywsgi writes the headers and the body in separate sends; with Nagle on, a
        # keep-alive client's delayed ACK then stalls every reply by ~40 ms.
        try:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        return super().handle()

    def get_environ(self):
        environ = super().get_environ()
        environ["erqpy.socket"] = self.socket
        return environ


def _stop_server(data: dict, server) -> None:
    if data.get("server") is server:
        data.pop("server", None)
        data.pop("bind", None)
    server.stop(timeout=STOP_GRACE)
    log.info("HTTP listener stopped")


def _stop_if_orphaned(data: dict, server, owner) -> None:
    if data.get("owner") is owner and data.get("server") is server:
        _stop_server(data, server)


def serve(api, settings, application) -> None:
    """The service greenlet: make sure the listener runs this load's application."""
    data = api.data
    owner = object()
    data["owner"] = owner
    bind = (settings.host, settings.port)
    server = data.get("server")
    if server is not None and (data.get("bind") != bind or server.closed):
        _stop_server(data, server)
        server = None
    if server is None:
        server = WSGIServer(
            bind, application, spawn=Pool(settings.max_connections), handler_class=Handler,
            log=None, error_log=logging.getLogger("erqpy.plugin.http.wsgi"),
        )
        try:
            server.start()
        except OSError as exc:
            data["error"] = f"cannot listen on {bind[0]}:{bind[1]}: {exc.strerror or exc}"
            log.error("HTTP API not started: %s", data["error"])
            api.report_listener("http", None)
            return
        data["server"], data["bind"] = server, bind
        data.pop("error", None)
        host, port = server.address[:2]
        log.info("erqpy-http listening on http://%s:%d/", host, port)
    else:
        server.application = application
        server.handler_class = Handler
        log.info("erqpy-http now serves the reloaded code")
    # Read by Handler for every request, so a reload with a new value applies at once.
    server.erqpy_header_timeout = settings.header_timeout
    data["address"] = server.address[:2]
    api.report_listener("http", data["address"])
    try:
        Event().wait()
    except gevent.GreenletExit:
        if api.state.stopping:
            _stop_server(data, server)
        else:
            gevent.spawn_later(HANDOVER_GRACE, _stop_if_orphaned, data, server, owner)
        raise


def sweep(api) -> None:
    """Give back reservations whose lease ran out."""
    while True:
        gevent.sleep(SWEEP_INTERVAL)
        try:
            reservations.expire(api.data)
        except Exception:
            log.exception("reservation sweep failed")


def sample(api, settings) -> None:
    """Sample queue counters for rates and sparklines."""
    while True:
        try:
            stats.sample(api.data, api.state, settings.history)
        except Exception:
            log.exception("rate sampling failed")
        gevent.sleep(settings.sample_interval)
