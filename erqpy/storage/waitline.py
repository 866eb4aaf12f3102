"""The line of a queue's blocked readers, and what wakes them: an item stored, given
back or come due (``schedule``), a queue resumed, deleted or shut down.

Shared by both storages (``pqueue``, ``memory``), which keep the same attributes:
``items`` (the default level's deque), ``levels`` (``levels.Levels``, the other
priorities), ``waiters`` (``waiters.Waiter``, oldest first), ``delayed``
(``schedule.DelayedItems``) and ``deleted``.
"""

from collections import deque
from typing import Any

from erqpy.storage.items import DEFAULT_PRIORITY, now_ms


class WaiterLine(list):
    """A line of blocked readers, oldest first, with the deque methods the waiters use.
    A list, not a deque: an empty deque is 760 B (its first block is made at once) and
    most of 10,000 queues have nobody waiting; the ends' O(n) is a memmove of a line."""

    __slots__ = ()

    def popleft(self):
        return self.pop(0)

    def appendleft(self, waiter) -> None:
        self.insert(0, waiter)


class WaitLine:
    __slots__ = ()  # PersistentQueue has the slots
    items: deque
    waiters: WaiterLine
    delayed: Any  # schedule.DelayedItems
    levels: Any  # levels.Levels
    deleted: bool

    def promote_due(self, now: int = 0) -> int:
        """Move the delayed items due at ``now`` to the tail of their levels, in due
        order, and wake a waiter for each; return how many.  The delayed heap's timer
        calls this."""
        if self.deleted:
            self.delayed.clear()
            return 0
        due = self.delayed.pop_due(now or now_ms())
        if due:
            for item in due:
                if item.priority == DEFAULT_PRIORITY:
                    self.items.append(item)
                else:
                    self.levels.push(item)
            for _ in range(min(len(due), len(self.waiters))):
                self.waiters.popleft().notify()
        return len(due)

    def pass_on(self) -> None:
        """A notified waiter left without taking: give its turn to the next one."""
        if (self.items or self.levels.count) and self.waiters:
            self.waiters.popleft().notify()

    def wake_takers(self) -> None:
        """Wake as many waiters as there are items to take (a resumed queue)."""
        for _ in range(min(len(self.items) + self.levels.count, len(self.waiters))):
            self.waiters.popleft().notify()

    def wake_all(self) -> None:
        """Wake every waiter without an item (delete, shutdown): they reply END."""
        while self.waiters:
            self.waiters.popleft().event.set()
