"""Queue events for plugins: enqueued, dequeued, expired, opened, confirmed, aborted,
dead_lettered (moved on by ``max_deliveries``).

Queues check ``active`` (one attribute read) before building anything, so events cost
nothing on the hot path until a plugin subscribes.  A subscriber that raises is logged and
kept; it never fails the command that emitted the event.
"""

import logging

log = logging.getLogger("erqpy.events")

EVENT_NAMES = ("enqueued", "dequeued", "expired", "opened", "confirmed", "aborted", "dead_lettered")


class EventBus:
    def __init__(self):
        self._subscribers = {name: [] for name in EVENT_NAMES}
        self.active = False

    def subscribe(self, event: str, callback, owner: str = "") -> None:
        """``callback(event, queue_name, item)``; ``owner`` lets a plugin be unsubscribed."""
        if event not in self._subscribers:
            raise ValueError(f"unknown event {event!r}; known: {', '.join(EVENT_NAMES)}")
        self._subscribers[event].append((owner, callback))
        self.active = True

    def unsubscribe_owner(self, owner: str) -> None:
        for name, subs in self._subscribers.items():
            self._subscribers[name] = [s for s in subs if s[0] != owner]
        self.active = any(self._subscribers.values())

    def emit(self, event: str, queue_name: str, item) -> None:
        for owner, callback in self._subscribers[event]:
            try:
                callback(event, queue_name, item)
            except Exception:
                log.exception("event subscriber of %s failed on %s", owner or "?", event)
