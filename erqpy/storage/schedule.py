"""Delayed items (``set q/delay=<ms>``, ``set q/at=<s>``, ``get q/abort/delay=<ms>``):
held out of the queue, in memory, until their due time.

A queue keeps them in a ``DelayedItems``: a heap of ``items.Item`` ordered by due time,
then id, so the items due together join the queue in the order they were stored.  The
heap holds the items themselves (``Item.__lt__``): a delayed item costs a full
``items.Item`` (its due time is one of the fields a plain queued item does without) and
one slot of a list (scripts/delayed_memory.py measures both).

Promotion needs no polling: each queue has one timer, armed for its earliest due time
whenever that changes, which moves every due item to the queue and wakes its blocked
readers; a read also promotes what is due before it looks at the head, so an item is
never missed for a late timer.  Promotion writes nothing: replay finds the due time in
the item's ATTRS record (``records``) and promotes it again.

Delayed items never spill to segment files (read-behind) and are counted in the
queue's ``mem_bytes``; their number per queue is bounded by ``MAX_DELAYED_ITEMS``.
"""

import heapq

import gevent

from erqpy.errors import LimitReached
from erqpy.storage.items import now_ms

#: Delayed items one queue holds at most (they are all in memory); a delayed ``set``
#: past it is refused with ``SERVER_ERROR`` naming the limit.
MAX_DELAYED_ITEMS = 2_000_000
#: The longest delay a ``set`` or an abort may ask for (``/delay=``, ``/at=``): ten years.
MAX_DELAY_MS = 10 * 366 * 24 * 3600 * 1000


def check_memory_room(queue_name: str, held_bytes: int, size: int, max_memory_size: int) -> None:
    """Delayed items and items of a non-default level never read behind, so the queue's
    ``max_memory_size`` bounds them instead: past it a new one is refused (an abort with
    a delay is not: its item is in memory already, as an open read)."""
    if held_bytes + size > max_memory_size:
        raise LimitReached(f"queue {queue_name} holds {held_bytes} bytes of delayed and prioritised "
                           f"items, which stay in memory (max_memory_size is {max_memory_size})")


def delayed_refusal(queue_name: str) -> str:
    return f"queue {queue_name} holds {MAX_DELAYED_ITEMS} delayed items, the most a queue may hold"


class DelayedItems(list):
    """The delayed items of one queue, a heap (``heapq``) ordered by ``(due_ms, id)``."""

    __slots__ = ("bytes", "_on_due", "_timer", "_timer_due")

    def __init__(self, on_due):
        super().__init__()
        self.bytes = 0
        self._on_due = on_due  # on_due(now): move the due items to the queue
        self._timer = None
        self._timer_due = 0

    def push(self, item) -> None:
        heapq.heappush(self, item)
        self.bytes += item.payload_size
        if self[0] is item:
            self._arm(item.due_ms)

    def pop_due(self, now: int) -> list:
        """Take out every item due at ``now``, earliest first; each is due from now on."""
        due = []
        while self and self[0].due_ms <= now:
            item = heapq.heappop(self)
            self.bytes -= item.payload_size
            item.due_ms = 0
            due.append(item)
        if self:
            self._arm(self[0].due_ms)
        else:
            self.stop()
        return due

    def load(self, items) -> None:
        """Replay: the delayed items found in the files, in any order."""
        self.extend(items)
        heapq.heapify(self)
        self.bytes = sum(item.payload_size for item in self)
        if self:
            self._arm(self[0].due_ms)

    def clear(self) -> None:
        super().clear()
        self.bytes = 0
        self.stop()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer.close()
            self._timer = None

    def _arm(self, due_ms: int) -> None:
        if self._timer is not None and self._timer_due == due_ms:
            return
        self.stop()
        loop = gevent.get_hub().loop
        # The loop's clock is the one of its last iteration: a busy hub would fire early.
        loop.update_now()
        # One ms late rather than early: a timer firing before the due ms finds nothing.
        delay = max(due_ms - now_ms() + 1, 0) / 1000.0
        self._timer = loop.timer(delay)
        self._timer_due = due_ms
        self._timer.start(self._fire)

    def _fire(self) -> None:
        self.stop()
        self._on_due(now_ms())
        if self and self._timer is None:  # nothing was due yet (a clock step): try again
            self._arm(self[0].due_ms)
