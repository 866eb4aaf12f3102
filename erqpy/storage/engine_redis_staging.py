"""Blocking reads in engine mode: ``BLMOVE`` into a per-node staging list.

A queue with blocked readers on this node has one stager greenlet.  It blocks in
``BLMOVE items staged:NODE:N LEFT RIGHT`` on a connection of its own; Redis serves
blocked clients oldest first, so the nodes take turns in the order their stagers
blocked, and an item written on any node reaches a waiting reader at once (no polling).
The staged item is not handed over: the oldest local waiter is notified and takes it
with TAKE, which looks at this node's staging list before the head (the waiter
protocol of server/waiters.py, unchanged).  A waiter that has gone passes the turn on;
with no waiter left the staged items go back to the head (UNSTAGE), and so they do when
the stager ends.  A node that dies with items staged has them given back by the reaper
of another node, with its open reads (GIVE_BACK).

The stager starts when a reader joins the line (``WaiterLine``) and ends once the line is
empty.  One connection per queue with local blocked readers is held while it blocks.
"""

import logging
from collections import deque

import gevent
import gevent.monkey
from gevent.event import Event

from erqpy.errors import Unavailable

log = logging.getLogger("erqpy.engine")

#: Seconds one BLMOVE blocks before the stager looks at its line of waiters again (below
#: the client's socket timeout).
BLOCK_SECONDS = 1.0
#: Seconds the stager waits for the notified reader to take the staged item before it
#: stages the next one anyway (a reader that took nothing passes its turn on).
HAND_OVER_WAIT = 1.0


class WaiterLine(deque):
    """A queue's line of local waiters that starts the queue's stager when a reader joins
    (or takes its turn back after losing a race)."""

    def __init__(self, on_join, waiting=()):
        super().__init__(waiting)
        self.on_join = on_join

    def append(self, waiter) -> None:
        super().append(waiter)
        self.on_join()

    def appendleft(self, waiter) -> None:
        super().appendleft(waiter)
        self.on_join()


class Stager:
    """The stager of one queue on this node (``queue`` is its RedisQueue)."""

    def __init__(self, queue, engine, poll_interval: float):
        self.queue = queue
        self.engine = engine
        self.poll_interval = poll_interval  # while paused, between looks at the flag
        self.greenlet = None
        self.moved = Event()  # a staged item was taken or given back

    def ensure(self) -> None:
        if self.greenlet is None or self.greenlet.dead:
            self.greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self.greenlet is not None:
            self.greenlet.kill(timeout=2)
            self.greenlet = None

    def _run(self) -> None:
        queue = self.queue
        try:
            while queue.waiters and not queue.deleted:
                try:
                    self._stage_one()
                except Unavailable as exc:
                    log.warning("engine stager of %s: %s", queue.name, exc)
                    gevent.sleep(1.0)
        finally:
            self.unstage()

    def _stage_one(self) -> None:
        queue = self.queue
        if queue.paused:
            gevent.sleep(self.poll_interval)
            return
        engine = self.engine
        source, target = queue.keys.items, queue.keys.staged(engine.node_id)
        if gevent.monkey.is_module_patched("socket"):
            staged = engine.call(engine.client.blmove, source, target, BLOCK_SECONDS, "LEFT", "RIGHT")
        else:
            # Without gevent's patching (a test process using the collection directly) a
            # blocking command would stall every greenlet: look every poll_interval.
            staged = engine.call(engine.client.lmove, source, target, "LEFT", "RIGHT")
            if staged is None:
                gevent.sleep(self.poll_interval)
        if staged is None:
            return
        if not queue.waiters:
            self.unstage()
            return
        self.moved.clear()
        queue.waiters.popleft().notify()
        self.moved.wait(HAND_OVER_WAIT)

    def unstage(self) -> int:
        """This node's staged items of the queue back to the head; how many."""
        keys = self.queue.keys
        try:
            moved = self.engine.call(self.engine.scripts.unstage,
                                     keys=[keys.staged(self.engine.node_id), keys.items, keys.meta])
        except Unavailable as exc:
            # The lease expires if Redis stays away, and the reaper gives them back.
            log.warning("engine: staged items of %s not given back yet: %s", self.queue.name, exc)
            return 0
        finally:
            self.moved.set()
        return moved
