"""Which code holds the event loop: loaded into a server started with this directory on
``PYTHONPATH`` and ``HUBWATCH=FILE`` (``scripts/bench_stall --hub-watch FILE``).

gevent's monitor thread (``GEVENT_MONITOR_THREAD_ENABLE``) reports a greenlet that runs
too long, but not work done in the loop's own callbacks, where erqpy serves most
requests (``erqpy/server/loop_serving.py``).  This watches the loop itself: a timer of
the loop beats every millisecond, and a thread of its own looks every millisecond;
when the beat is late by more than ``HUBWATCH_MS`` (5), whatever the loop runs
(callbacks, watchers, greenlets), it writes the main thread's stack once for that
stall.  A stack taken in a system call (``os.write``) means the kernel held the loop
there, or the call waited for the GIL to come back.

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
    _out = open(os.environ["HUBWATCH"], "a")
    _limit = float(os.environ.get("HUBWATCH_MS", "5")) / 1000
    _beat = {"at": None, "count": 0, "reported": -1}
    #: The watch ends after this long (a bounded loop, as every loop here is).
    _seconds = float(os.environ.get("HUBWATCH_SECONDS", "7200"))

    def _watch() -> None:
        for _ in range(int(_seconds * 1000)):
            _sleep(0.001)
            at = _beat["at"]
            if at is None or _beat["reported"] == _beat["count"]:
                continue
            late = time.perf_counter() - at
            if late > _limit:
                _beat["reported"] = _beat["count"]
                frame = sys._current_frames().get(_main)
                stack = "".join(traceback.format_stack(frame)[-16:]) if frame is not None else ""
                _out.write("=== %.6f hub busy %.1f ms\n%s" % (time.time(), late * 1000, stack))
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
