"""What happens at the head of a journaled queue's levels before a read takes it, and to
make room: expiry (``expire_to``), ``max_deliveries`` (``dead_letter_to``) and
``discard_old_when_full``.  A mixin of ``pqueue.PersistentQueue``, whose attributes it
shares; ``items`` below is the level being served (``levels``): the queue's own FIFO or
the deque of another priority level.
"""

import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from erqpy.errors import JournalWriteError
from erqpy.storage.items import now_ms
from erqpy.storage.records import OP_REMOVE

log = logging.getLogger("erqpy.queue")

#: ``max_deliveries`` without ``dead_letter_to``: where over-delivered items go (the
#: same queue ``erqpy consume`` moves failed jobs to).
DEAD_LETTER_SUFFIX = "_errors"


class HeadRules:
    __slots__ = ()  # PersistentQueue has the slots
    name: str
    journal: Any
    events: Any
    move_item: Any
    stats: Any
    items: deque
    levels: Any  # levels.Levels
    bytes: int
    _config: Any
    _max_age_ms: int

    delayed: Any

    if TYPE_CHECKING:
        def _pop_head(self, now: int, items=None) -> Any: ...

        @property
        def count(self) -> int: ...

    def _serving_head(self, now: int, limit: int) -> tuple:
        """``(level, head)`` a read takes: the most urgent level whose head is
        deliverable (heads that are not are dealt with on the way); ``head`` None when
        no level has one."""
        levels = self.levels
        for items in (*levels.urgent, self.items, *levels.lazy):
            if items:
                head = self._deliverable_head(now, limit, items)
                if head is not None:
                    return items, head
        return self.items, None

    def _deliverable_head(self, now: int, limit: int, items: deque):
        """The head a read would get: expired items are dropped (or moved to
        ``expire_to``) and over-delivered ones moved to the dead-letter queue first."""
        while items:
            head = items[0]
            if (head.expires_ms or self._max_age_ms) and self._is_expired(head, now):
                self._expire_head(now, 1 << 62, items)
            elif limit and head.deliveries >= limit:
                if not self._dead_letter_head(now, limit, items):
                    return head  # the dead-letter queue refused it: delivered once more
            else:
                return head
        return None

    def discard_expired(self, now: int = 0, limit: int = 1 << 62) -> int:
        """Drop (or move) expired items from the head of every level; return how many."""
        now = now or now_ms()
        if not self.levels.count:
            return self._expire_head(now, limit, self.items) if self.items else 0
        return sum(self._expire_head(now, limit, items) for items in self.levels.in_order(self.items))

    def _is_expired(self, item, now: int) -> bool:
        if item.expires_ms and item.expires_ms <= now:
            return True
        return bool(self._max_age_ms) and item.added_ms + self._max_age_ms <= now

    def _expire_head(self, now: int, limit: int, items: deque) -> int:
        count = 0
        target_name = self._config.expire_to
        while items and count < limit and self._is_expired(items[0], now):
            head = items[0]
            if self.journal is not None:
                self.journal.append(self.journal.format.encode_id_op(OP_REMOVE, head.id))
            self._pop_head(now, items)
            self.stats.expired_items += 1
            count += 1
            if self.events.active:
                self.events.emit("expired", self.name, head)
            if target_name and target_name != self.name and self.move_item is not None:
                self.move_item(target_name, head, "expire_to")
        return count

    def _dead_letter_head(self, now: int, limit: int, items: deque) -> bool:
        """``max_deliveries`` (or a read's tighter ``limit``): head items handed out that
        often without a confirm (each delivery ended in an abort, a dropped connection or
        a restart) move to the dead-letter queue, so a job that kills its worker cannot
        cycle forever.

        The item is stored there before it is removed here: a crash in between leaves
        it in both queues, never in neither.  When it cannot be stored (the target is
        full, or the disk), it stays and is delivered once more: logged, not dropped."""
        target_name = self._config.dead_letter_to or self.name + DEAD_LETTER_SUFFIX
        if target_name == self.name or self.move_item is None:
            return False  # a dead-letter queue inheriting [queues.default]'s: it keeps its items
        while items and items[0].deliveries >= limit:
            head = items[0]
            if not self.move_item(target_name, head, "dead_letter_to"):
                log.error("queue %s: item %d was delivered %d times; it stays because queue %r "
                          "cannot take it", self.name, head.id, head.deliveries, target_name)
                return False
            if self.journal is not None:
                self.journal.append(self.journal.format.encode_id_op(OP_REMOVE, head.id))
            self._pop_head(now, items)
            self.stats.dead_lettered += 1
            if self.events.active:
                self.events.emit("dead_lettered", self.name, head)
        return True

    def _make_room(self, added_id: int) -> None:
        """``discard_old_when_full``: drop head items of the default level until the
        queue is within its limits again, after the new item ``added_id`` is stored.  In
        this order a write that fails (a full disk) leaves the head in place and the set
        refused, never the head dropped for an item that was not stored; replay applies
        records by id, so the ADD before the REMOVEs gives the same queue.  The new item
        is never dropped."""
        config = self._config
        items = self.items
        while items and (self.count + len(self.delayed) > config.max_items or self.bytes > config.max_size):
            head = items[0]
            if head.id == added_id:
                break
            if self.journal is not None:
                try:
                    self.journal.append(self.journal.format.encode_id_op(OP_REMOVE, head.id))
                except JournalWriteError as exc:
                    # The new item is stored (its ADD is journaled), so the set stands;
                    # the queue stays over its limit until a later write succeeds.
                    log.error("queue %s: could not discard the head to make room: %s", self.name, exc)
                    return
            self._pop_head(0, items)
            self.stats.discarded += 1
