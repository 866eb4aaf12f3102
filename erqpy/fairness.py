"""Letting other connections in during a long command.

A command that walks thousands of keys, queues or fanout children calls ``give_way()``
every so often.  ``gevent.sleep(0)`` is not enough: it reschedules the caller before
the event loop polls for I/O again (gevent batches up to 50 such callbacks), so a
client waiting on a socket could still wait ~100 ms.  A timer of any positive length
waits for the next loop iteration, which polls every socket first.  It is not
``gevent.sleep(seconds)``, which first brings the loop's clock (libev's ``now``) up to
date: the turns of the loop's callback and of a connection's greenlet are counted from
the poll by that clock (``loop_serving.LOOP_TURN_SECONDS``, ``connection.TURN_SECONDS``),
and a greenlet that gave way restarted the count for every connection after it.
"""

import time

import gevent
from gevent import getcurrent

#: Long enough to be a timer (the next loop iteration), short enough to cost nothing.
GIVE_WAY_SECONDS = 0.0001


def on_the_loop() -> bool:
    """True in the event loop's own callback (a connection served there,
    server/loop_serving), where nothing may wait: no sleep, no thread-pool result."""
    return getcurrent() is gevent.get_hub()


def turn_end(seconds: float) -> float:
    """The ``time.perf_counter()`` at which the loop's turn is ``seconds`` old, counted
    from its poll.  libev's ``now`` is wall-clock time, so only its age is taken from it
    (at most ``seconds``: a step of the wall clock costs one early end, never a late one)."""
    age = time.time() - gevent.get_hub().loop.now()
    return time.perf_counter() + seconds - min(max(age, 0.0), seconds)


def give_way() -> None:
    if on_the_loop():
        # The loop cannot wait on itself: batches run there are bounded by their own
        # turn instead.  Commands that give way are not run there on purpose; this
        # keeps one that slips through from failing.
        return
    hub = gevent.get_hub()
    with hub.loop.timer(GIVE_WAY_SECONDS) as timer:
        hub.wait(timer)


#: Values ``sum_giving_way`` adds between two turns of the other connections.
SUM_PER_TURN = 3000


def sum_giving_way(values) -> int:
    """``sum(values)``, giving way every ``SUM_PER_TURN`` values: a total over 10,000
    queues is 3-10 ms of attribute reads (each queue's objects are cold in the cache).
    ``values`` must not walk a dict that may change meanwhile: walk a list of it."""
    total = 0
    for index, value in enumerate(values, 1):
        total += value
        if index % SUM_PER_TURN == 0:
            give_way()
    return total
