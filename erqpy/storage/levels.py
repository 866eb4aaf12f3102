"""Priority levels (``set q/pri=<0..9>``): 0 is the most urgent, ``DEFAULT_PRIORITY``
(5) is what a ``set`` without ``/pri=`` gets.

The default level is the queue's own FIFO (``items``, with read-behind); each other level
is a deque here, made when its first item comes, in memory only (its items are never read
behind, and are in the queue's ``mem_bytes``).  So a queue that never sees a priority has
no level here and takes the path it always took (``count`` is 0).

A read serves the most urgent non-empty level: levels 0 to 4, then the default level,
then 6 to 9; FIFO within a level.  An open read given back goes to the head of its own
level.  Expiry, ``max_deliveries`` and dead-lettering apply at the head of every level.
"""

from collections import deque
from collections.abc import Sequence
from types import MappingProxyType
from typing import cast

from erqpy.storage.items import DEFAULT_PRIORITY

__all__ = ["DEFAULT_PRIORITY", "LOWEST_PRIORITY", "Levels"]

#: The least urgent level; ``/pri=`` takes 0 to this.
LOWEST_PRIORITY = 9
#: The levels of a queue that has none: read-only, so it can be shared (``push`` puts a
#: dict in its place before the first write; typed as one for the readers).
NO_LEVELS = cast(dict, MappingProxyType({}))


class Levels:
    """The non-default levels of one queue: ``{level: deque of Item}``, with their
    totals, and the order in which reads serve them."""

    __slots__ = ("deques", "count", "bytes", "urgent", "lazy")

    def __init__(self):
        # Shared empty ones until the first level comes: most queues never see one, and
        # three empty containers are 176 B of each of 10,000 queues.
        self.deques = NO_LEVELS
        self.count = 0
        self.bytes = 0
        self.urgent: Sequence[deque] = ()  # the deques of levels 0..4, most urgent first
        self.lazy: Sequence[deque] = ()  # those of levels 6..9

    def push(self, item, front: bool = False) -> None:
        """Add ``item`` to its level (``item.priority``): at the tail, or the head."""
        level = self.deques.get(item.priority)
        if level is None:
            if self.deques is NO_LEVELS:
                self.deques = {}
            level = self.deques[item.priority] = deque()
            self.urgent = [self.deques[p] for p in sorted(self.deques) if p < DEFAULT_PRIORITY]
            self.lazy = [self.deques[p] for p in sorted(self.deques) if p > DEFAULT_PRIORITY]
        if front:
            level.appendleft(item)
        else:
            level.append(item)
        self.count += 1
        self.bytes += item.payload_size

    def taken(self, item) -> None:
        """``item`` left the head of its level (the caller popped it)."""
        self.count -= 1
        self.bytes -= item.payload_size

    def in_order(self, default: deque) -> list:
        """Every level's deque in the order reads serve them, ``default`` in its place."""
        return [*self.urgent, default, *self.lazy]

    def items(self):
        """Every item of every level, in serving order within each level."""
        for level in sorted(self.deques):
            yield from self.deques[level]

    def counts(self) -> dict:
        """``{level: items}`` of the non-empty levels."""
        return {level: len(items) for level, items in sorted(self.deques.items()) if items}

    def clear(self) -> None:
        for level in self.deques.values():
            level.clear()
        self.count = self.bytes = 0
