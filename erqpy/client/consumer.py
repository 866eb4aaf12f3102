"""The consumer runner behind ``erqpy consume``: reliable reads, a handler per job, retries
with backoff, an errors queue, a job budget and a graceful stop.  Made for supervisord.

Per job: open a reliable read, call the handler.  Success: the item is confirmed (in the
same round trip as the next read).  An exception: the job is put back on its queue as a
retry envelope (``envelope.Job.retry_envelope``: ``meta.attempt`` + 1, due ``backoff``
seconds later, doubling each time) and only then is the original confirmed, so the attempt
count lives on the server and survives whatever happens to this process.  Whichever
consumer reads the retry holds it until it is due, then runs it.  After ``retries`` retries
the job goes to ``<queue>_errors`` with the error and is confirmed.  If that put fails the
item is given back instead, so no job is ever dropped.

The count moves on when an attempt *fails*: a process killed in the middle of an attempt
(SIGKILL, OOM, a crash in C code) gives its item back with the attempt it was running,
which then runs again under the same number.  Those deliveries are bounded by the server,
which counts each item's deliveries durably: every read asks for ``max_deliveries``
(default ``retries`` + 1), and an item already handed out that often, each time to a
worker that never settled it, is moved by the server to the queue's dead-letter queue
(``<queue>_errors`` unless the queue sets ``dead_letter_to``) instead of killing one more
worker.  So a job runs at most (``retries`` + 1) x ``max_deliveries`` times, whatever
happens to the workers (as Sidekiq bounds failures by its retries and crashes by its
poison-pill count).

SIGTERM or SIGINT: the job in hand is finished (a job waiting out a backoff is given back
with its attempt count), nothing new is read, and the process exits 0.  ``max_jobs``: exit
0 after exactly that many jobs (done or moved to the errors queue), for a supervisor to
restart a fresh process.  If the process dies instead, the server gives its open read
back: the job is delivered again (at-least-once).

Handlers: a function ``handle(job)``, or a ``Worker`` subclass with ``work(job)`` and an
optional ``fail(job, error)``.  With ``concurrency`` above 1, each thread has its own
connection and its own ``Worker`` instance; a plain function is shared.
"""

import importlib
import logging
import os
import signal
import sys
import threading
import time
import traceback

from erqpy.client.client import Client
from erqpy.client.errors import NoServerAvailable, NotStored, QueueClientError, ReadLost
from erqpy.client.envelope import Job

log = logging.getLogger("erqpy.consume")

#: What happened to one job.
DONE = "done"              # handled; to be confirmed
FAILED = "failed"          # moved to the errors queue; to be confirmed
GIVEN_BACK = "given back"  # aborted: back at the head of its queue
RETRY_PUT = "retry put"    # its next attempt is on the queue; to be confirmed


class AttemptsExhausted(Exception):
    """A job arrived with ``meta.attempt`` beyond this consumer's ``retries`` + 1 (the
    retries were lowered since it was put back); it is not run again."""


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


class Consumer:
    """Consumes ``queue`` with ``worker_factory()`` workers; ``run()`` returns an exit status.

    ``wait``: seconds one read blocks for; also how long a stop request can take to be
    noticed by an idle thread.  ``retries``: extra attempts after the first failure.
    ``max_deliveries``: deliveries of one attempt that end with its worker gone before the
    server moves the job to the dead-letter queue (default ``retries`` + 1; 0: unbounded).
    ``backoff``: seconds before the first retry, doubling up to ``max_backoff``.
    ``retry_after``, ``retry_max``: how soon a server that failed is tried again, doubling
    from the first to the second while it keeps failing (``erqpy.client.Client``).
    """

    def __init__(self, queue, worker_factory, *, servers=("127.0.0.1:22133",), max_jobs=None,
                 concurrency=1, wait=2.0, retries=3, backoff=1.0, max_backoff=60.0,
                 errors_queue=None, retry_after=0.1, retry_max=None, client_options=None,
                 max_deliveries=None):
        self.queue = queue
        self.errors_queue = errors_queue or f"{queue}_errors"
        self.worker_factory = worker_factory
        self.servers = servers
        self.concurrency = concurrency
        self.wait = wait
        self.attempts = retries + 1
        # None: one delivery per allowed attempt; 0: no bound (Kestrel's behaviour).
        self.max_deliveries = self.attempts if max_deliveries is None else max_deliveries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.client_options = {"retry_after": retry_after, "retry_max": retry_max,
                               **(client_options or {})}
        self.budget = JobBudget(max_jobs)
        self.stopping = threading.Event()
        self.done = 0
        self.failed = 0
        self._count_lock = threading.Lock()
        self._crashed = False

    # -- the process ----------------------------------------------------------------------

    def stop(self, *_signal_args):
        if not self.stopping.is_set():
            log.info("stop requested: finishing the jobs in hand")
        self.stopping.set()

    def run(self):
        """Run until stopped or the job budget is spent; 0 on a clean exit, 1 if a worker
        thread crashed."""
        in_main = threading.current_thread() is threading.main_thread()
        previous = {}
        if in_main:
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, self.stop)
        log.info("consuming %s from %s (concurrency %d, max jobs %s, errors to %s)",
                 self.queue, ",".join(self.servers) if not isinstance(self.servers, str) else self.servers,
                 self.concurrency, self.budget.limit, self.errors_queue)
        threads = [threading.Thread(target=self._thread_main, name=f"worker-{n}", daemon=True)
                   for n in range(1, self.concurrency + 1)]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.25)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        log.info("exiting: %d jobs done, %d moved to %s", self.done, self.failed, self.errors_queue)
        return 1 if self._crashed else 0

    def _thread_main(self):
        try:
            self._loop()
        except BaseException:
            self._crashed = True
            self.stopping.set()  # the other threads finish their jobs and stop too
            log.exception("worker thread crashed")

    # -- one thread -----------------------------------------------------------------------

    def _loop(self):
        queue = self.queue
        worker = self.worker_factory()
        client = Client(self.servers, **self.client_options)
        settled = True  # the item held open (if any) is handled and may be confirmed
        try:
            while not self.stopping.is_set() and self.budget.take():
                previous = client.holding(queue)
                try:
                    # Confirms the previous job and reads the next in one round trip.
                    item = client.next(queue, wait=self.wait, max_deliveries=self.max_deliveries)
                except ReadLost as exc:
                    log.warning("%s", exc)
                    self.budget.give_back()
                    continue
                except NoServerAvailable as exc:
                    self.budget.give_back()
                    log.warning("%s", exc)
                    self.stopping.wait(min(client.retry_in(), self.wait))
                    continue
                if previous is not None:
                    log.debug("confirmed item %d of %s on %s", previous.id, queue, previous.server)
                if item is None:
                    self.budget.give_back()
                    continue
                log.debug("reserved item %d of %s from %s", item.id, queue, item.server)
                settled = False
                outcome = self._handle(client, worker, item)
                settled = True
                if outcome in (GIVEN_BACK, RETRY_PUT):  # not a finished job
                    self.budget.give_back()
            if client.holding(queue) is not None:
                item = client.holding(queue)
                try:
                    client.finish(queue)
                    log.debug("confirmed item %d of %s on %s", item.id, queue, item.server)
                except ReadLost as exc:
                    log.warning("%s", exc)
        finally:
            if not settled and client.holding(queue) is not None:
                client.abort(queue)  # never confirm a job whose handling did not finish
            client.close()

    def _handle(self, client, worker, item):
        job = Job.from_item(item)
        if job.attempt > self.attempts:
            error: Exception = AttemptsExhausted(f"attempt {job.attempt} is past the {self.attempts} allowed")
            return self._give_up(client, worker, job, error, None)
        if not self._wait_until_due(client, job):
            return GIVEN_BACK
        while True:
            attempt = job.attempt
            started = time.monotonic()
            try:
                worker.work(job)
            except Exception as exc:
                error, trace = exc, traceback.format_exc()
                if attempt >= self.attempts:
                    return self._give_up(client, worker, job, error, trace)
                delay = min(self.backoff * (2 ** (attempt - 1)), self.max_backoff)
                log.warning("job %s (%s) failed on attempt %d of %d: %s: %s; retrying in %.2f s",
                            job.id, job.name, attempt, self.attempts, type(exc).__name__, exc, delay)
                if self._put_retry(client, job, delay, error):
                    return RETRY_PUT
                # The retry could not be stored: run it here, holding the item, as the
                # count then lives only in this process.
                job.attempt = attempt + 1
                if self.stopping.wait(delay):
                    client.abort(self.queue)
                    log.info("stop requested during backoff: job %s given back to %s", job.id, self.queue)
                    return GIVEN_BACK
                continue
            log.debug("handled job %s (%s) in %.1f ms on attempt %d", job.id, job.name,
                      (time.monotonic() - started) * 1000, attempt)
            with self._count_lock:
                self.done += 1
            return DONE

    def _put_retry(self, client, job, delay, error):
        """Put the job's next attempt on its queue, due in ``delay`` seconds.  The original
        is confirmed afterwards, so a crash in between leaves two copies, never none."""
        envelope = job.retry_envelope(job.attempt + 1, time.time() + delay, error)
        try:
            server = client.put(self.queue, envelope)
        except (NoServerAvailable, NotStored, QueueClientError, TypeError, ValueError) as exc:
            log.warning("job %s: could not put attempt %d back on %s (%s); retrying in place",
                        job.id, job.attempt + 1, self.queue, exc)
            return False
        log.debug("job %s: attempt %d put on %s, due in %.2f s", job.id, job.attempt + 1, server, delay)
        return True

    def _wait_until_due(self, client, job):
        """Hold a retry until its ``retry_at`` (at most ``max_backoff``, whatever the clocks
        say).  False when a stop came first: the item is then given back as it is."""
        retry_at = job.retry_at
        if retry_at is None:
            return True
        remaining = min(retry_at - time.time(), self.max_backoff)
        if remaining <= 0:
            return True
        log.info("job %s (%s): attempt %d of %d is due in %.2f s", job.id, job.name, job.attempt,
                 self.attempts, remaining)
        if self.stopping.wait(remaining):
            client.abort(self.queue)
            log.info("stop requested during backoff: job %s given back to %s with its attempt %d",
                     job.id, self.queue, job.attempt)
            return False
        return True

    def _give_up(self, client, worker, job, error, trace):
        record = job.error_record(error, trace, self.attempts)
        try:
            server = client.put(self.errors_queue, record)
        except (NoServerAvailable, NotStored, QueueClientError) as exc:
            log.error("job %s failed %d times but could not be moved to %s (%s): given back to %s",
                      job.id, self.attempts, self.errors_queue, exc, self.queue)
            client.abort(self.queue)
            # The job comes straight back to some consumer; pause so that a broken errors
            # queue does not turn into a busy loop of failing attempts.
            self.stopping.wait(min(max(self.backoff, 1.0), self.max_backoff))
            return GIVEN_BACK
        log.error("job %s (%s) failed %d times, moved to %s on %s: %s: %s", job.id, job.name,
                  self.attempts, self.errors_queue, server, type(error).__name__, error)
        try:
            worker.fail(job, error)
        except Exception:
            log.exception("fail() of job %s raised", job.id)
        with self._count_lock:
            self.failed += 1
        return FAILED


def configure_logging(debug):
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s erqpy.consume[%(process)d] %(threadName)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    log.propagate = False
