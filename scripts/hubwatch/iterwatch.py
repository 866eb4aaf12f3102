"""What one turn of the event loop spent its time on: loaded by ``sitecustomize`` in a
server started with ``HUBWATCH_ITER=FILE`` (``scripts/bench_stall --iter-watch FILE``).

The beat of ``sitecustomize`` says that the loop was held and where the hold ended; this
says what the turn held it with.  A check watcher of the highest priority marks the end
of each poll and a prepare watcher of the lowest the start of the next, so the time
between them is the turn's busy part.  Inside it, the time is split by who ran: each
greenlet switch (``greenlet.settrace``) ends a stretch of the hub or of a greenlet,
each collection (``gc.callbacks``) is timed by generation, and a few of erqpy's entry
points are timed where they run (serving a connection from the loop's callback, the
journal's grouped write, a refill from read-behind).  A turn over ``HUBWATCH_ITER_MS``
(10) is written as one line: its length, the main thread's CPU in it (its own CPU
clock), and its parts, longest first.  Parts overlap (a refill runs inside a serve), and
time in none of them is the loop's own work and what was not wrapped.  A collection over
``HUBWATCH_GC_MS`` (5) gets a line of its own: what it collected, the counts it left, and
whether a snapshot's copy was alive.

No thread: the cost is a few microseconds per switch and per wrapped call, on the loop.
A measuring tool, never part of erqpy.
"""

import gc
import time

import greenlet

#: Turns at least this long are written.
_ITER_MS = 10.0
#: Collections at least this long are written too, each on a line of its own.
_GC_MS = 5.0


def install(hub, path: str, limit_ms: float = _ITER_MS, gc_limit_ms: float = _GC_MS) -> None:
    from erqpy.storage.snapshot import RunCopy

    out = open(path, "a")
    clock = time.perf_counter
    cpu_clock = time.thread_time
    parts: dict = {}  # name -> [count, seconds, longest]
    turn = {"start": None, "cpu": 0.0, "stretch_from": 0.0}

    def add(name: str, seconds: float) -> None:
        entry = parts.get(name)
        if entry is None:
            parts[name] = [1, seconds, seconds]
        else:
            entry[0] += 1
            entry[1] += seconds
            if seconds > entry[2]:
                entry[2] = seconds

    def polled() -> None:
        now = clock()
        turn["start"] = turn["stretch_from"] = now
        turn["cpu"] = cpu_clock()
        parts.clear()

    def about_to_poll() -> None:
        start = turn["start"]
        if start is None:
            return
        turn["start"] = None
        now = clock()
        busy = (now - start) * 1000
        if busy < limit_ms:
            return
        add("hub" if greenlet.getcurrent() is hub else "greenlets", now - turn["stretch_from"])
        cpu = (cpu_clock() - turn["cpu"]) * 1000
        listed = sorted(parts.items(), key=lambda kv: -kv[1][1])
        out.write("%.6f turn %.1f ms (on cpu %.1f): %s\n" % (
            time.time(), busy, cpu, "; ".join(
                "%s %dx %.1f ms (longest %.1f)" % (name, count, total * 1000, longest * 1000)
                for name, (count, total, longest) in listed)))
        out.flush()

    def switched(event, args) -> None:
        if event not in ("switch", "throw") or turn["start"] is None:
            return
        origin, _target = args
        now = clock()
        add("hub" if origin is hub else "greenlets", now - turn["stretch_from"])
        turn["stretch_from"] = now

    collecting = {"since": 0.0}

    def collection(phase: str, info: dict) -> None:
        if phase == "start":
            collecting["since"] = clock()
            return
        took = clock() - collecting["since"]
        if turn["start"] is not None:
            add("gc%d" % info["generation"], took)
        if took * 1000 >= gc_limit_ms:
            # What a long one did: the garbage it freed (cycles found; 0 means a walk), the
            # counts it left, and whether a snapshot's copy was alive (gcpolicy waits then).
            out.write("%.6f gc%d %.1f ms: collected %d, uncollectable %d; counts after %s; "
                      "snapshot copies alive %d\n" % (
                          time.time(), info["generation"], took * 1000, info["collected"],
                          info["uncollectable"], gc.get_count(), RunCopy.alive))
            out.flush()

    def timed(cls, name: str, label: str) -> None:
        real = getattr(cls, name)

        def timed_call(*args, **kwargs):
            started = clock()
            try:
                return real(*args, **kwargs)
            finally:
                add(label, clock() - started)

        setattr(cls, name, timed_call)

    from erqpy.server.loop_serving import LoopServing
    from erqpy.storage.queuefiles import QueueFiles
    from erqpy.storage.syncer import Syncer

    timed(LoopServing, "_on_readable", "serve from the loop")
    timed(Syncer, "write_pending", "journal group write")
    timed(QueueFiles, "_refill", "refill")
    greenlet.settrace(switched)
    gc.callbacks.append(collection)
    check = hub.loop.check()
    check.priority = hub.loop.MAXPRI
    check.start(polled)
    prepare = hub.loop.prepare()
    prepare.priority = hub.loop.MINPRI
    prepare.start(about_to_poll)
    hub._iterwatch = (check, prepare)  # kept alive with the hub
