"""Blocking fetches (``?wait=ms``): stand in the queue's line of waiters.

The waiting itself is the core's (``erqpy.waiters.wait_for_item``), the same code the
data port uses: the queue only *notifies* the oldest waiter, the waiter takes the item
itself, and a waiter that leaves without taking passes its turn on.  The client's socket
is watched, so an HTTP client that gives up ends its wait at once instead of later taking
an item nobody will read.
"""

from erqpy.errors import ConnectionGone
from erqpy.server.waiters import client_gone, wait_for_item as _core_wait


def wait_for_item(state, queue, timeout: float, take, sock=None):
    """``take()`` until it returns an item; None at the deadline, when the queue is
    deleted, when the server stops, or when the client disconnects."""

    def on_input() -> bool:
        if client_gone(sock):
            raise ConnectionGone()
        return False  # the client sent more (pipelining): stop looking

    try:
        return _core_wait(
            queue, timeout, take, lambda: state.stopping,
            sock=sock, on_input=on_input if sock is not None else None,
        )
    except ConnectionGone:
        return None
