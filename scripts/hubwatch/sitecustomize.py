"""Which code holds the event loop: loaded into a server started with this directory on
``PYTHONPATH`` and ``HUBWATCH=FILE`` (``scripts/bench_stall --hub-watch FILE``).

gevent's monitor thread (``GEVENT_MONITOR_THREAD_ENABLE``) reports a greenlet that runs
too long, but not work done in the loop's own callbacks, where erqpy serves most
requests (``erqpy/server/loop_serving.py``).  This watches the loop itself: a timer of
the loop beats every millisecond, and a thread of its own looks every millisecond;
when the beat is late by more than ``HUBWATCH_MS`` (5), whatever the loop runs
(callbacks, watchers, greenlets), it writes the main thread's stack once for that
stall.  The stack is taken with ``sys._current_frames()``, which needs the GIL: while the
main thread runs Python it is taken at the main thread's next system call (or after the
interpreter's 5 ms switch interval), so a stack in ``os.write`` or ``os.pread`` names
where a stall ended, not always what held the loop.  Beside it, what the main thread did
in the stall, from ``/proc/self/task/TID/schedstat`` (the figures of the last look that
found the loop on time): ms on a CPU, ms runnable but waiting for one, and the rest,
asleep (in the kernel waiting for I/O or a lock, or waiting for the GIL).  Mostly on a
CPU means Python (or the kernel) was busy on the loop; mostly asleep, a wait.  The on-CPU
figure is an upper bound: the watch thread itself needs the GIL to take the calm figures,
so while the main thread holds it they can be older than the stall.

The watch stops after ``HUBWATCH_SECONDS`` (7200).  Nothing of this is loaded by a
server started without ``HUBWATCH``; it is a measuring
tool, never part of erqpy.
"""

import os

if os.environ.get("HUBWATCH"):
    import _thread
    import sys
    import threading
    import time
    import traceback

    _sleep = time.sleep  # the real ones: gevent patches these after this runs
    _start_thread = _thread.start_new_thread
    _main = threading.get_ident()
    _schedstat = "/proc/self/task/%d/schedstat" % threading.get_native_id()
    _out = open(os.environ["HUBWATCH"], "a")
    _limit = float(os.environ.get("HUBWATCH_MS", "5")) / 1000
    _beat = {"at": None, "count": 0, "reported": -1}
    #: The watch ends after this long (a bounded loop, as every loop here is).
    _seconds = float(os.environ.get("HUBWATCH_SECONDS", "7200"))

    def _sched() -> tuple:
        """The main thread's ns on a CPU and ns runnable without one, so far."""
        try:
            with open(_schedstat) as f:
                on_cpu, waiting, _slices = f.read().split()
            return int(on_cpu), int(waiting)
        except OSError:
            return 0, 0

    def _watch() -> None:
        calm = _sched()  # at the last look that found the loop on time
        for _ in range(int(_seconds * 1000)):
            _sleep(0.001)
            at = _beat["at"]
            if at is None or _beat["reported"] == _beat["count"]:
                calm = _sched()
                continue
            late = time.perf_counter() - at
            if late <= _limit:
                calm = _sched()
                continue
            _beat["reported"] = _beat["count"]
            frame = sys._current_frames().get(_main)
            stack = "".join(traceback.format_stack(frame)[-16:]) if frame is not None else ""
            now = _sched()
            on_cpu, runnable = (now[0] - calm[0]) / 1e6, (now[1] - calm[1]) / 1e6
            _out.write("=== %.6f hub busy %.1f ms (on cpu %.1f, runnable %.1f, asleep %.1f)\n%s" % (
                time.time(), late * 1000, on_cpu, runnable, max(late * 1000 - on_cpu - runnable, 0), stack))
            _out.flush()

    def _install() -> None:
        import gevent.hub

        run = gevent.hub.Hub.run

        def watched_run(hub):
            timer = hub.loop.timer(0.001, 0.001)

            def beat():
                _beat["count"] += 1
                _beat["at"] = time.perf_counter()

            timer.start(beat)
            _start_thread(_watch, ())
            return run(hub)

        gevent.hub.Hub.run = watched_run

    _install()
