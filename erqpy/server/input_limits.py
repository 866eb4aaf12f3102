"""Input limits of a connection: the partial request it may hold, and for how long.

``InputLimits`` is a base class of ``connection.Connection`` (after ``BlockingCommands``:
one line of bases, as each keeps slots) and works on its attributes.
A partial request is accounted in ``state.buffered_input`` (bounded over all connections
by ``max_buffered_input``) and timed from its first byte (``request_timeout``), so no
client can hold memory or a connection by sending slowly or never finishing a request.
"""

import logging
from typing import Any

import gevent

from erqpy.errors import InputLimit
from erqpy.server.blocking import BlockingCommands
from erqpy.server.protocol import error_request

log = logging.getLogger("erqpy.server")


class InputLimits(BlockingCommands):
    # The state these methods change is declared here; the rest is the connection's
    # (``Connection.__init__`` sets all of it), declared for the type checker.
    __slots__ = ("input_held", "request_started", "out_size", "eof")
    input_held: int
    request_started: float
    out_size: int
    eof: bool
    clock: Any

    def _input_changed(self) -> None:
        """After a feed: account the partial request held, start or stop its timer, and
        enforce the server-wide bound on buffered input."""
        parser = self.parser
        held = parser.buffered
        if held != self.input_held:
            state = self.state
            grown = held > self.input_held
            state.buffered_input += held - self.input_held
            self.input_held = held
            if grown and state.buffered_input > state.settings.max_buffered_input:
                log.warning(
                    "closing connection %s %s: buffered input of all connections over "
                    "max_buffered_input (%d bytes)", self.session.id, self.address,
                    state.settings.max_buffered_input,
                )
                # Answered after the requests already complete, then the connection
                # closes; the partial request is dropped now and nothing more parsed.
                parser.abandon()
                self._release_input()
                assert self.requests is not None  # the feed that grew the input set them
                self.requests.append(error_request(InputLimit("out of memory: too much buffered input")))
        if parser.partial:
            if not self.request_started:
                self.request_started = self.clock()
        else:
            self.request_started = 0.0

    def _release_input(self) -> None:
        self.state.buffered_input -= self.input_held
        self.input_held = 0

    def _wait_readable(self, hub, readable) -> bool:
        """Wait for input while a request is partial; False when ``request_timeout``
        has passed since it began."""
        limit = self.state.settings.request_timeout
        if not limit:
            hub.wait(readable)
            return True
        remaining = self.request_started + limit - self.clock()
        if remaining > 0:
            with gevent.Timeout(remaining, False):
                hub.wait(readable)
                return True
        return False

    def _request_timed_out(self) -> None:
        limit = self.state.settings.request_timeout
        log.info("closing connection %s %s: request not completed within request_timeout (%g s)",
                 self.session.id, self.address, limit)
        reply = self.parser.error_reply(InputLimit(f"request not completed within {limit:g} s"))
        self.out.append(reply)
        self.out_size += len(reply)

    def _end_of_input(self) -> None:
        if self.eof:
            return
        self.eof = True
        if self.parser.partial:
            log.debug("connection %s %s ended its input inside a request (%d bytes dropped)",
                      self.session.id, self.address, self.parser.buffered)
