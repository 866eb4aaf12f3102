"""The blocked readers of a queue that does not exist yet."""

from erqpy.storage.waitline import WaiterLine


class AwaitedQueue:
    """The line of blocked readers of a queue that does not exist yet.

    A read never creates a queue (no journal, no entry in stats); a blocking read of a
    missing queue waits here instead, and the queue adopts this line of waiters when a
    write creates it.  It quacks like a queue for ``waiters.wait_for_item``: ``waiters``,
    ``deleted`` and ``pass_on``.  The collection drops the entry when its last waiter
    leaves, so there are never more entries than blocked connections.
    """

    __slots__ = ("key", "waiters", "queue")

    def __init__(self, key: bytes):
        self.key = key
        self.waiters = WaiterLine()
        self.queue = None  # the PersistentQueue, once created

    @property
    def deleted(self) -> bool:
        return self.queue is not None and self.queue.deleted

    def pass_on(self) -> None:
        if self.queue is not None:
            self.queue.pass_on()

    def wake_all(self) -> None:
        """Wake every waiter without an item (shutdown): they reply END."""
        for waiter in list(self.waiters):
            waiter.event.set()
