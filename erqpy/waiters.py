"""A reader blocked on a queue, and the promise queues make to it.

A queue never hands an item to a waiter directly.  It appends the item, then *notifies*
the oldest waiter, which takes the item itself when it runs.  So an item is never in
flight between a queue and a reader that may have just gone: if the notified waiter
leaves without taking (its client disconnected, its deadline passed, the server is
stopping), it passes the notification to the next waiter (``PersistentQueue.pass_on``).
"""

from gevent.event import Event


class Waiter:
    """One blocked reader.  ``event`` wakes it for any reason; the flags say which."""

    __slots__ = ("event", "notified", "readable")

    def __init__(self):
        self.event = Event()
        self.notified = False  # a queue has an item for this waiter to try
        self.readable = False  # the client's socket has input (data or EOF)

    def notify(self) -> None:
        self.notified = True
        self.event.set()

    def on_readable(self) -> None:
        """Called from the hub's I/O watcher on the client socket."""
        self.readable = True
        self.event.set()
