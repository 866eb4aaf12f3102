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
in the stall, counted from the beat it missed: ms on a CPU (the thread's own CPU clock,
read at the beat by the main thread and at the report by ``clock_gettime`` of
``pthread_getcpuclockid``, exact to the microsecond), ms runnable but waiting for a CPU
(the run delay of ``/proc/self/task/TID/schedstat``, which the kernel adds up each time the
thread gets a CPU back), and the rest, asleep (in the kernel waiting for I/O or a lock,
or waiting for the GIL).  Mostly on a CPU means Python (or the kernel, for the thread)
was busy on the loop; mostly asleep, a wait.  With ``HUBWATCH_KERNEL=1`` (and root), each
look while the stall lasts also takes the main thread's kernel stack
(``/proc/self/task/TID/stack``, empty while it runs) and writes its innermost frames on a
``--- kernel`` line: where a thread asleep in the kernel waits (a page lock, a request
of the block layer, the GIL's futex).  It costs: the watch thread holds the GIL for each
look, and the main thread waits for it (a 10 M drain: 139 s with it, 112 s without, a run each), so a
futex wait it finds may be the watch itself; off by default.  (schedstat's own CPU figure is not used: it
is brought up to date only at a scheduler tick or a switch, so a 3 ms busy loop could
read as 0 ms.)

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
    _schedstat_fd = os.open("/proc/self/task/%d/schedstat" % threading.get_native_id(), os.O_RDONLY)
    _main_cpu_clock = time.pthread_getcpuclockid(_main)
    _out = open(os.environ["HUBWATCH"], "a")
    _limit = float(os.environ.get("HUBWATCH_MS", "5")) / 1000
    #: Written by the main thread at each beat, in one store so that the watch reads one
    #: beat's figures: (count, when, its CPU time, its run delay).
    _beat = {"last": (0, None, 0.0, 0), "reported": -1}
    #: The watch ends after this long (a bounded loop, as every loop here is).
    _seconds = float(os.environ.get("HUBWATCH_SECONDS", "7200"))

    def _run_delay() -> int:
        """The main thread's ns runnable without a CPU so far (its schedstat run delay)."""
        try:
            return int(os.pread(_schedstat_fd, 128, 0).split()[1])
        except (OSError, IndexError, ValueError):
            return 0

    _kernel_stack_path = "/proc/self/task/%d/stack" % threading.get_native_id()
    #: Kernel stacks written per stall at most (a long stall is looked at every ms).
    _kernel_samples_per_stall = 40 if os.environ.get("HUBWATCH_KERNEL") == "1" else 0

    def _kernel_stack() -> str:
        """The main thread's innermost kernel frames, innermost first ("" while it runs,
        or where the kernel does not show them)."""
        try:
            with open(_kernel_stack_path) as f:
                frames = [line.split()[-1].split("+")[0] for line in f]
        except (OSError, IndexError):
            return ""
        frames = [name for name in frames if name not in ("__schedule", "schedule", "schedule_timeout",
                                                           "io_schedule", "schedule_preempt_disabled")]
        return " <- ".join(frames[:6])

    def _watch() -> None:
        samples = 0
        for _ in range(int(_seconds * 1000)):
            _sleep(0.001)
            count, at, cpu_at_beat, run_delay_at_beat = _beat["last"]
            if at is None:
                continue
            if _beat["reported"] == count:  # a stall already reported: is it still on?
                if samples < _kernel_samples_per_stall and time.perf_counter() - at > _limit:
                    samples += 1
                    stack = _kernel_stack()
                    if stack:
                        _out.write("--- kernel %.1f ms: %s\n" % ((time.perf_counter() - at) * 1000, stack))
                continue
            late = time.perf_counter() - at
            if late <= _limit:
                continue
            _beat["reported"] = count
            samples = 0
            kernel = _kernel_stack() if _kernel_samples_per_stall else ""
            frame = sys._current_frames().get(_main)
            stack = "".join(traceback.format_stack(frame)[-16:]) if frame is not None else ""
            on_cpu = (time.clock_gettime(_main_cpu_clock) - cpu_at_beat) * 1000
            runnable = (_run_delay() - run_delay_at_beat) / 1e6
            late = (time.perf_counter() - at) * 1000  # to the same moment as the figures
            _out.write("=== %.6f hub busy %.1f ms (on cpu %.1f, runnable %.1f, asleep %.1f)\n%s" % (
                time.time(), late, on_cpu, runnable, max(late - on_cpu - runnable, 0), stack))
            if kernel:
                _out.write("--- kernel %.1f ms: %s\n" % (late, kernel))
            _out.flush()

    def _install() -> None:
        import gevent.hub

        run = gevent.hub.Hub.run

        def watched_run(hub):
            timer = hub.loop.timer(0.001, 0.001)

            def beat():
                _beat["last"] = (_beat["last"][0] + 1, time.perf_counter(), time.thread_time(), _run_delay())

            timer.start(beat)
            _start_thread(_watch, ())
            return run(hub)

        gevent.hub.Hub.run = watched_run

    _install()

if os.environ.get("HUBWATCH_ITER"):

    def _install_iteration_watch() -> None:
        import gevent.hub

        run = gevent.hub.Hub.run

        def iteration_watched_run(hub):
            import iterwatch  # beside this file, on PYTHONPATH

            iterwatch.install(hub, os.environ["HUBWATCH_ITER"], float(os.environ.get("HUBWATCH_ITER_MS", "10")),
                              float(os.environ.get("HUBWATCH_GC_MS", "5")))
            return run(hub)

        gevent.hub.Hub.run = iteration_watched_run

    _install_iteration_watch()
