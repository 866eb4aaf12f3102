"""Handlers that the ``erqpy consume`` tests run in a real subprocess.

Each appends one line per action to the file named by ``ERQPY_TEST_EVENTS``:
``<event> <payload as JSON> <attempt> <pid>``.  One ``os.write`` on an O_APPEND file per
line keeps lines whole when several processes or threads write at once.
"""

import json
import os
import time

from erqpy.client.consumer import Worker


def _event(name, job, extra=""):
    line = f"{name} {json.dumps(job.payload, separators=(',', ':'))} {job.attempt} {os.getpid()}"
    if extra:
        line += f" {extra}"
    fd = os.open(os.environ["ERQPY_TEST_EVENTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def record(job):
    _event("done", job)


def slow(job):
    """Sleeps ERQPY_TEST_SLEEP seconds between 'started' and 'finished'."""
    _event("started", job)
    time.sleep(float(os.environ.get("ERQPY_TEST_SLEEP", "0")))
    _event("finished", job)


def always_fail(job):
    _event("attempt", job)
    raise RuntimeError(f"boom {job.payload}")


class FlakyWorker(Worker):
    """Fails the first two attempts, then succeeds."""

    def work(self, job):
        _event("attempt", job)
        if job.attempt < 3:
            raise RuntimeError("not yet")
        _event("done", job)


class FailingWorker(Worker):
    def work(self, job):
        _event("attempt", job)
        raise ValueError(f"bad job {job.payload}")

    def fail(self, job, error):
        _event("fail", job, str(error).replace(" ", "_"))


def fail_raw(job):
    """Fails every attempt of a bare (non-envelope) item, logging its type and bytes."""
    data = job.payload
    shown = f"{type(data).__name__}:{data.hex() if isinstance(data, bytes) else data}"
    line = f"raw {shown} {job.attempt} {os.getpid()}\n"
    fd = os.open(os.environ["ERQPY_TEST_EVENTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    raise RuntimeError("raw boom")


def die_on_poison(job):
    """A job that kills its worker (as an OOM kill or a segfault does): no failure is
    reported, the server only sees the connection go."""
    _event("attempt", job)
    if job.payload == "poison":
        os.kill(os.getpid(), 9)
    _event("done", job)


def noop(job):
    """Does nothing: for counting what a consumer takes, from the queues' stats."""


def die_once(job):
    """Kills its own process on the first job it sees (os._exit, no cleanup, as a crash
    in C code): ERQPY_TEST_MARKER is created first, so the job's next delivery succeeds."""
    _event("attempt", job)
    marker = os.environ["ERQPY_TEST_MARKER"]
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        _event("done", job)
        return
    os.close(fd)
    os._exit(3)
