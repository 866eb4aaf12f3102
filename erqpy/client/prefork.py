"""``erqpy consume --processes N``: a parent that forks N consumer processes and keeps
them running, for handlers that need more than one CPU (threads share one interpreter).

The parent reads no jobs and holds no connection; each child is a whole consumer (its
own connections, its own threads with ``--concurrency``).  A child that dies (a crash, a
handler that kills its process, an OOM kill) is replaced after a backoff that doubles
while the children of its slot keep dying young (``restart_delay`` up to
``max_restart_delay``); the server has already given the dead child's open read back.
A child that exits 0 by itself (``--max-jobs`` reached) is replaced at once: a fresh
process, as gunicorn's ``max_requests``.  SIGTERM or SIGINT to the parent is passed to
every child as SIGTERM, so each finishes the job in hand and exits; the parent exits
once all have, 0 if every child exited cleanly, else 1.
"""

import ctypes
import logging
import os
import signal
import threading
import time

log = logging.getLogger("erqpy.consume")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

PR_SET_PDEATHSIG = 1  # prctl(2)

#: A child that ran this long before dying resets its slot's backoff.
HEALTHY_AFTER = 10.0


class _Slot:
    __slots__ = ("number", "pid", "started", "crashes", "start_at")

    def __init__(self, number):
        self.number = number
        self.pid = 0
        self.started = 0.0
        self.crashes = 0  # deaths in a row of children that died young
        self.start_at = 0.0  # when to start the next child (monotonic)


class Prefork:
    """``run_child()`` is what each child runs (after the fork) and returns its exit
    status; ``run()`` is the parent's loop and returns the parent's."""

    def __init__(self, processes, run_child, *, restart_delay=0.5, max_restart_delay=30.0,
                 poll_interval=0.05):
        self.slots = [_Slot(n) for n in range(1, processes + 1)]
        self.run_child = run_child
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.poll_interval = poll_interval
        self.stopping = threading.Event()
        self.unclean = False
        self.parent = os.getpid()

    def stop(self, *_signal_args):
        if not self.stopping.is_set():
            log.info("stop requested: each child finishes its job in hand")
        self.stopping.set()
        for slot in self.slots:
            if slot.pid:
                _signal(slot.pid, signal.SIGTERM)

    def run(self) -> int:
        previous = {signum: signal.signal(signum, self.stop) for signum in STOP_SIGNALS}
        log.info("prefork: %d child processes", len(self.slots))
        try:
            while True:
                if not self.stopping.is_set():
                    now = time.monotonic()
                    for slot in self.slots:
                        if not slot.pid and slot.start_at <= now:
                            self._start(slot)
                self._reap()
                if self.stopping.is_set() and not any(slot.pid for slot in self.slots):
                    break
                time.sleep(self.poll_interval)  # a stop signal's handler runs during it
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        log.info("prefork: every child has exited")
        return 1 if self.unclean else 0

    def _start(self, slot):
        # Stop signals stay blocked across the fork: the child must not run the parent's
        # handler (which signals "its" children) before it has its own.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                self._child()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        slot.pid = pid
        slot.started = time.monotonic()
        log.info("prefork: child %d started (pid %d)", slot.number, pid)
        if self.stopping.is_set():  # a stop came while forking
            _signal(pid, signal.SIGTERM)

    def _child(self):
        status = 1
        try:
            for signum in STOP_SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            _stop_when_orphaned(self.parent)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            status = self.run_child()
        except BaseException:
            log.exception("child crashed")
        finally:
            logging.shutdown()
            os._exit(status)

    def _reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            slot.pid = 0
            code = os.waitstatus_to_exitcode(status)
            if code == 0:
                slot.crashes = 0
                slot.start_at = 0.0
                log.info("prefork: child %d (pid %d) exited", slot.number, pid)
                continue
            if self.stopping.is_set():
                self.unclean = True
            if time.monotonic() - slot.started >= HEALTHY_AFTER:
                slot.crashes = 0
            delay = min(self.restart_delay * 2 ** slot.crashes, self.max_restart_delay)
            slot.crashes += 1
            slot.start_at = time.monotonic() + delay
            how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
            log.warning("prefork: child %d (pid %d) %s; a new one starts in %.2f s",
                        slot.number, pid, how, delay)


def _stop_when_orphaned(parent):
    """A parent killed outright (SIGKILL) cannot pass a stop on: ask Linux to send the
    child SIGTERM when the parent dies, so it finishes its job and exits rather than
    running on unsupervised.  Elsewhere the child keeps running until stopped."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


def _signal(pid, signum):
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
