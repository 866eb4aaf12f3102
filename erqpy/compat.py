"""Every use of a library's private name, in one place.

erqpy leans on a few undocumented details of gevent, its pywsgi and pymemcache where the
public API cannot do the job (reasons at each function).  Keeping them here means a
library upgrade that renames one breaks one module, and tests/unit/test_compat.py, which
exercises each against the installed library, says which.  pyproject.toml bounds both
libraries to the versions these were tested with.

This module imports no library itself: it works on the objects it is given, so the
client library can use it without pulling in gevent's server parts.
"""


def raw_socket(sock):
    """The OS socket under gevent's cooperative socket (its ``_sock``), or ``sock`` itself
    when it is not a gevent socket.

    The raw socket's ``recv``/``send`` return EAGAIN instead of waiting on the hub: the
    connection loop decides itself when to wait, and a peek must not block.
    """
    return getattr(sock, "_sock", sock)


def accept_descriptor(listener):
    """Accept one connection on a gevent listening socket as ``(fd, address)``, without
    wrapping a socket object (and an event-loop watcher) around it (``_accept``).

    Used when the process is out of descriptors and the connection is only told so and
    closed.
    """
    return listener._accept()


def pause_accepting(server, seconds: float) -> None:
    """Stop a gevent server's accept loop and restart it after ``seconds``.

    gevent's own back-off after an accept error, which it does not expose (its
    ``_timer`` is cancelled by ``stop_accepting``, and ``_start_accepting_if_started``
    does nothing once the server is stopped).
    """
    server.stop_accepting()
    server._timer = server.loop.timer(seconds)
    server._timer.start(server._start_accepting_if_started)


def abandon_wsgi_input(stream) -> None:
    """Make pywsgi skip reading the rest of a request body (``Input._chunked_input_error``).

    pywsgi otherwise reads and discards the whole declared body before it closes the
    connection; it skips that when this flag is set, its own mark for "the socket is
    about to be closed".  A stream that is not pywsgi's is left alone.
    """
    if hasattr(stream, "_chunked_input_error"):
        stream._chunked_input_error = True


class ClientErrorReply:
    """Mix in before pywsgi's ``WSGIHandler`` to choose the reply to a request pywsgi
    could not read: override ``client_error_reply``.

    pywsgi's only hook for that is the private ``_handle_client_error``.
    """

    def client_error_reply(self, ex):
        """``(status, body bytes)`` for ``ex``, or None for pywsgi's own reply."""
        return None

    def _handle_client_error(self, ex):
        reply = self.client_error_reply(ex)
        return reply if reply is not None else super()._handle_client_error(ex)  # type: ignore[misc]  # a mixin: pywsgi's WSGIHandler is next


def send_pipelined(mc, commands, name: bytes) -> list:
    """Send ``commands`` (whole request bytes) on a pymemcache client in one write and
    read one reply line for each, raising pymemcache's errors for an error line
    (``Client._misc_cmd``).

    ``set_many`` would do the writing but wants distinct keys; a batch of items for one
    queue has the same key in every command.
    """
    return mc._misc_cmd(commands, name, False)


def upgraded_stream(environ):
    """The client's byte stream after an HTTP upgrade (a WebSocket) on pywsgi.

    For a request asking for an upgrade pywsgi puts its buffered reader of the socket
    itself in ``wsgi.input`` instead of the body-limited ``Input`` (which refuses to read
    without a Content-Length); reading it (``read1``) gets the bytes a client sent right
    after its handshake that pywsgi already buffered.  Older pywsgi gave the ``Input``:
    its ``rfile`` is that reader.  Raises ``RuntimeError`` when neither is there.
    """
    stream = environ["wsgi.input"]
    if not hasattr(stream, "read1"):
        stream = getattr(stream, "rfile", None)
    if stream is None or not hasattr(stream, "read1"):
        raise RuntimeError("pywsgi's wsgi.input for an upgrade request is not a buffered reader")
    return stream
