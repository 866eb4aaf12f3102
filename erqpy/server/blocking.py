"""Blocking commands on a connection: waiting for an item while the socket is watched,
and holding what is taken after the client's FIN until the reply is acknowledged.

``BlockingCommands`` is a base class of ``connection.Connection`` and works on its
attributes; it is kept apart because a waiting command is the one place where a batch
gives the hub away midway: input that arrives meanwhile is parsed for later, a reset
ends the wait at once, and a FIN does not.
"""

import logging
from typing import TYPE_CHECKING, Any

from erqpy.errors import ConnectionGone
from erqpy.server import waiters
from erqpy.server.receiving import receive
from erqpy.server.session import Session

log = logging.getLogger("erqpy.server")

#: While a command waits, input that arrives is parsed and kept for later; past these
#: bounds (bytes read during the batch's waits, requests pending) the connection stops
#: reading until the wait ends (and so stops noticing a disconnect, which ``finish``
#: still handles when the wait returns).
MAX_ABSORBED_BYTES = 4 * 1024 * 1024
MAX_ABSORBED_REQUESTS = 10_000
#: Seconds a reply carrying items taken after the client's FIN may wait for the
#: client's acknowledgement before the items are given back.
DELIVERY_TIMEOUT = 10.0


class BlockingCommands:
    # The state the waits change is declared here; the rest of what they use is the
    # connection's (``Connection.__init__`` sets all of it), declared for the type checker.
    __slots__ = ("requests", "absorbed", "undelivered")
    requests: list | None
    absorbed: int
    undelivered: Session | None
    state: Any
    sock: Any
    recv_into: Any  # the OS socket's (receiving.receive)
    address: Any
    session: Session
    parser: Any
    out: list
    eof: bool

    if TYPE_CHECKING:
        def flush(self) -> None: ...
        def _end_of_input(self) -> None: ...
        def _input_changed(self) -> None: ...

    def wait_for_item(self, queue, timeout: float, take):
        """Block until ``take()`` returns an item, ``timeout`` seconds pass, or the queue
        or server goes away.  Raises ``ConnectionGone`` if the connection was reset.

        While waiting, the socket is watched: input is parsed and queued behind this
        command (a pipelining client), and a reset cancels the wait at once, so a dead
        client never holds a place in the queue's line of waiters.  End of input (FIN)
        does not end the wait: the client may only have shut down its sending side and
        still read (``nc -q3``, memcached serves it).  The socket is then no longer
        watched (it stays readable at EOF), a reset is looked for before an item is
        taken, and the handler takes the item as an open read that ``confirm_delivery``
        confirms once the reply is acknowledged, or gives back to the head.
        """
        if self.out:
            self.flush()
        return waiters.wait_for_item(
            queue, timeout, take, self._stopping, sock=self.sock, on_input=self._on_input,
            is_gone=self._gone_before_take, watch=not self.eof,
        )

    def _stopping(self) -> bool:
        return self.state.stopping

    def _on_input(self) -> bool:
        """Input while waiting: parse it for later; keep watching while within bounds.
        At end of input, stop watching (a socket at EOF is always readable) and wait on."""
        if not self._absorb_input():
            return False
        return (
            not self.parser.closed
            and self.absorbed <= MAX_ABSORBED_BYTES
            and len(self.requests or ()) <= MAX_ABSORBED_REQUESTS
        )

    def _gone_before_take(self, sock) -> bool:
        """Just before a waiting get takes an item: True if the connection was reset.  A
        FIN not noticed so far is noted (``eof``), so the item is held until delivered."""
        state = waiters.peek_input(sock)
        if state != waiters.END_OF_INPUT:
            return state == waiters.BROKEN
        self._end_of_input()
        return waiters.client_reset(sock)

    # -- delivery after end of input ----------------------------------------------------

    def hold_until_delivered(self, queue, item) -> None:
        """``item`` was taken (as an open read) for a client that has ended its input:
        ``confirm_delivery`` confirms it once the reply is acknowledged.  The held reads
        are a session of their own, apart from the client's reliable reads (which its
        ``close``/``abort`` act on)."""
        if self.undelivered is None:
            self.undelivered = Session()
        self.undelivered.add_open(queue, item)

    def confirm_delivery(self) -> None:
        """After a flush carrying items held for a client past its FIN: confirm them if
        the client's TCP stack acknowledged every byte sent (a socket that was closed
        answers with a reset instead), else give them back to the head and end the
        connection (ConnectionGone)."""
        held, self.undelivered = self.undelivered, None
        assert held is not None  # called only after a flush that carried held reads
        if waiters.delivered(self.sock, DELIVERY_TIMEOUT):
            try:
                for name in list(held.open_reads):
                    held.close_oldest(name, held.open_count(name))
            except Exception:
                log.exception("connection %s: could not confirm reads delivered after end of input; "
                              "giving back the rest", self.session.id)
                held.finish()
            return
        log.info("connection %s %s: reply after end of input not acknowledged; its items go back",
                 self.session.id, self.address)
        held.finish()
        raise ConnectionGone()

    def _absorb_input(self) -> bool:
        """Read what the client sent while we wait; False at end of input.  Raises
        ``ConnectionGone`` when the connection was reset."""
        try:
            data = receive(self.recv_into)  # the OS socket's: it never waits
        except BlockingIOError:
            return True
        except OSError:
            raise ConnectionGone() from None
        if not data:
            self._end_of_input()
            return False
        self.state.stats.bytes_read += len(data)
        self.absorbed += len(data)
        requests = self.parser.feed(data)
        if self.requests is None:
            self.requests = requests
        else:
            self.requests.extend(requests)
        self._input_changed()
        return True
