"""What ``erqpy consume`` runs and counts: handlers (a function or a ``Worker``), how a
``--handler module:name`` is loaded, and the job budget of ``--max-jobs``."""

import importlib
import os
import sys
import threading


class Worker:
    """Subclass and implement ``work``; ``--handler module:YourWorker`` runs it."""

    def work(self, job):
        """Handle one ``erqpy.envelope.Job``; raise to fail this attempt."""
        raise NotImplementedError

    def fail(self, job, error):
        """Called once when the job is given up and moved to the errors queue."""


class FunctionWorker(Worker):
    """Wraps a plain ``handle(job)`` function."""

    def __init__(self, function):
        self.function = function

    def work(self, job):
        self.function(job)

    def __repr__(self):
        return f"FunctionWorker({getattr(self.function, '__qualname__', self.function)!r})"


def load_handler(spec):
    """``"package.module:name"`` -> a factory returning a ``Worker`` for each thread.

    ``name`` may be a function, a ``Worker`` subclass (one instance per thread) or a
    ``Worker`` instance (shared).  The current directory is importable, as with gunicorn.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"handler {spec!r} must look like module:function")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    target = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if isinstance(target, type) and issubclass(target, Worker):
        return target
    if isinstance(target, Worker):
        return lambda: target
    if callable(target):
        worker = FunctionWorker(target)
        return lambda: worker
    raise TypeError(f"handler {spec!r} is neither a function nor a Worker")


class JobBudget:
    """At most ``limit`` jobs over every thread (None: no limit).  A thread takes a slot
    before it reads and gives it back when nothing came, so exactly ``limit`` jobs run."""

    def __init__(self, limit):
        self.limit = limit
        self.taken = 0
        self._lock = threading.Lock()

    def take(self):
        with self._lock:
            if self.limit is not None and self.taken >= self.limit:
                return False
            self.taken += 1
            return True

    def give_back(self):
        with self._lock:
            self.taken -= 1
