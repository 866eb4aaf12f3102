"""The consumer runner behind ``erqpy consume``: reliable reads, a handler per job, retries
with backoff, an errors queue, a job budget and a graceful stop.  Made for supervisord.

Per job: open a reliable read, call the handler.  Success: the item is confirmed (in the
same round trip as the next read).  An exception: the job is put back on its queue as a
retry envelope (``envelope.Job.retry_envelope``: ``meta.attempt`` + 1, due ``backoff``
seconds later, doubling each time) and only then is the original confirmed, so the attempt
count lives on the server and survives whatever happens to this process.  The retry is a
delayed item (``set q/delay=``): no reader sees it, and no consumer holds it, until it is
due.  A retry read before its ``meta.retry_at`` all the same (put by a consumer whose
server took no delay, or clocks apart) is given back with the rest of its delay (``get
q/abort/delay=``), unchanged, so it keeps its attempt count; only a server that refuses
delays (engine mode) makes its reader hold it until due.  After ``retries`` retries
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

import logging
import signal
import sys
import threading
import time
import traceback

from erqpy.client.client import Client
from erqpy.client.errors import NoServerAvailable, NotStored, QueueClientError, ReadLost, RequestRefused
from erqpy.client.envelope import Job
from erqpy.client.queue_order import QueueOrder
from erqpy.client.workers import FunctionWorker, JobBudget, Worker, load_handler

__all__ = ["Consumer", "FunctionWorker", "JobBudget", "Worker", "load_handler", "configure_logging"]

log = logging.getLogger("erqpy.consume")

#: What happened to one job.
DONE = "done"              # handled; to be confirmed
FAILED = "failed"          # moved to the errors queue; to be confirmed
GIVEN_BACK = "given back"  # aborted: back at the head of its queue
RETRY_PUT = "retry put"    # its next attempt is on the queue; to be confirmed


class AttemptsExhausted(Exception):
    """A job arrived with ``meta.attempt`` beyond this consumer's ``retries`` + 1 (the
    retries were lowered since it was put back); it is not run again."""


class Consumer:
    """Consumes ``queue`` (a name, or a list of names) with ``worker_factory()`` workers;
    ``run()`` returns an exit status.

    Several queues: each read takes the head of the first of them that has one, in the
    order given (strict), or with ``weights`` in a weighted random order drawn per read
    (``queue_order``); one blocking read waits on all of them (``Client.next_of``).
    ``wait``: seconds one read blocks for; also how long a stop request can take to be
    noticed by an idle thread.  ``retries``: extra attempts after the first failure.
    ``max_deliveries``: deliveries of one attempt that end with its worker gone before the
    server moves the job to the dead-letter queue (default ``retries`` + 1; 0: unbounded).
    ``backoff``: seconds before the first retry, doubling up to ``max_backoff``.
    ``errors_queue``: where failed jobs go (default ``<queue>_errors`` of each job's queue).
    ``retry_after``, ``retry_max``: how soon a server that failed is tried again, doubling
    from the first to the second while it keeps failing (``erqpy.client.Client``).
    """

    def __init__(self, queue, worker_factory, *, servers=("127.0.0.1:22133",), max_jobs=None,
                 concurrency=1, wait=2.0, retries=3, backoff=1.0, max_backoff=60.0,
                 errors_queue=None, retry_after=0.1, retry_max=None, client_options=None,
                 max_deliveries=None, weights=None, rng=None):
        self.queues = [queue] if isinstance(queue, str) else list(queue)
        self.queue = self.queues[0]
        self.order = QueueOrder(self.queues, weights, rng)
        self._errors_queue = errors_queue
        self.errors_queue = errors_queue or f"{self.queue}_errors"
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
        # Retries wait on the server (a delayed put, a give-back with a delay) until a
        # server refuses delays (engine mode); then the reader holds a retry until due.
        self.server_delays = True

    def errors_queue_for(self, queue):
        return self._errors_queue or f"{queue}_errors"

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
        log.info("consuming %s (%s) from %s (concurrency %d, max jobs %s, errors to %s)",
                 ",".join(self.queues), self.order.describe(),
                 ",".join(self.servers) if not isinstance(self.servers, str) else self.servers,
                 self.concurrency, self.budget.limit, self._errors_queue or "<queue>_errors")
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
        log.info("exiting: %d jobs done, %d moved to %s", self.done, self.failed,
                 self._errors_queue or "<queue>_errors")
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
        worker = self.worker_factory()
        client = Client(self.servers, **self.client_options)
        held = None  # the queue of the item this thread holds open, if any
        settled = True  # the item held open (if any) is handled and may be confirmed
        try:
            while not self.stopping.is_set() and self.budget.take():
                previous = None if held is None else client.holding(held)
                try:
                    # Confirms the previous job and reads the next in one round trip.
                    item = self._next(client)
                except ReadLost as exc:
                    log.warning("%s", exc)
                    self.budget.give_back()
                    continue
                except NoServerAvailable as exc:
                    self.budget.give_back()
                    log.warning("%s", exc)
                    self.stopping.wait(min(client.retry_in(), self.wait))
                    continue
                finally:
                    held = None
                if previous is not None:
                    log.debug("confirmed item %d of %s on %s", previous.id, previous.queue, previous.server)
                if item is None:
                    self.budget.give_back()
                    continue
                if self.stopping.is_set():  # read while a stop came: not started, given back
                    client.abort(item.queue)
                    self.budget.give_back()
                    log.info("stop requested: item %d of %s given back unstarted", item.id, item.queue)
                    break
                held = item.queue
                log.debug("reserved item %d of %s from %s", item.id, item.queue, item.server)
                settled = False
                outcome = self._handle(client, worker, item)
                settled = True
                if outcome in (GIVEN_BACK, RETRY_PUT):  # not a finished job
                    self.budget.give_back()
            item = None if held is None else client.holding(held)
            if item is not None:
                try:
                    client.finish(held)
                    log.debug("confirmed item %d of %s on %s", item.id, held, item.server)
                except ReadLost as exc:
                    log.warning("%s", exc)
        finally:
            if not settled and held is not None and client.holding(held) is not None:
                client.abort(held)  # never confirm a job whose handling did not finish
            client.close()

    def _next(self, client):
        if len(self.queues) == 1:
            return client.next(self.queue, wait=self.wait, max_deliveries=self.max_deliveries)
        return client.next_of(self.order.next(), wait=self.wait, reader=self.order.reader,
                              max_deliveries=self.max_deliveries)

    def _handle(self, client, worker, item):
        queue = item.queue
        job = Job.from_item(item)
        if job.attempt > self.attempts:
            error: Exception = AttemptsExhausted(f"attempt {job.attempt} is past the {self.attempts} allowed")
            return self._give_up(client, worker, queue, job, error, None)
        if not self._wait_until_due(client, queue, job):
            return GIVEN_BACK
        while True:
            attempt = job.attempt
            started = time.monotonic()
            try:
                worker.work(job)
            except Exception as exc:
                error, trace = exc, traceback.format_exc()
                if attempt >= self.attempts:
                    return self._give_up(client, worker, queue, job, error, trace)
                delay = min(self.backoff * (2 ** (attempt - 1)), self.max_backoff)
                log.warning("job %s (%s) failed on attempt %d of %d: %s: %s; retrying in %.2f s",
                            job.id, job.name, attempt, self.attempts, type(exc).__name__, exc, delay)
                if self._put_retry(client, queue, job, delay, error):
                    return RETRY_PUT
                # The retry could not be stored: run it here, holding the item, as the
                # count then lives only in this process.
                job.attempt = attempt + 1
                if self.stopping.wait(delay):
                    client.abort(queue)
                    log.info("stop requested during backoff: job %s given back to %s", job.id, queue)
                    return GIVEN_BACK
                continue
            log.debug("handled job %s (%s) in %.1f ms on attempt %d", job.id, job.name,
                      (time.monotonic() - started) * 1000, attempt)
            with self._count_lock:
                self.done += 1
            return DONE

    def _put_retry(self, client, queue, job, delay, error):
        """Put the job's next attempt on its queue, due in ``delay`` seconds.  The original
        is confirmed afterwards, so a crash in between leaves two copies, never none."""
        envelope = job.retry_envelope(job.attempt + 1, time.time() + delay, error)
        try:
            server = self._put_later(client, queue, envelope, delay)
        except (NoServerAvailable, NotStored, QueueClientError, TypeError, ValueError) as exc:
            log.warning("job %s: could not put attempt %d back on %s (%s); retrying in place",
                        job.id, job.attempt + 1, queue, exc)
            return False
        log.debug("job %s: attempt %d put on %s, due in %.2f s", job.id, job.attempt + 1, server, delay)
        return True

    def _put_later(self, client, queue, envelope, delay):
        """Put the retry as a delayed item (``set q/delay=``): no consumer holds it while
        it waits.  A server that refuses delays gets it as a plain item, which its reader
        holds until ``meta.retry_at`` (``_wait_until_due``)."""
        if self.server_delays and delay > 0:
            try:
                return client.put(queue, envelope, delay=delay)
            except (NoServerAvailable, RequestRefused) as exc:
                server = client.put(queue, envelope)  # an outage fails this one too
                log.info("the server refused a delayed put (%s): retries are held until due", exc)
                self.server_delays = False
                return server
        return client.put(queue, envelope)

    def _wait_until_due(self, client, queue, job):
        """Hold a retry until its ``retry_at`` (at most ``max_backoff``, whatever the clocks
        say).  False when a stop came first: the item is then given back as it is."""
        retry_at = job.retry_at
        if retry_at is None:
            return True
        remaining = min(retry_at - time.time(), self.max_backoff)
        if remaining <= 0:
            return True
        if self.server_delays:
            # Early (put without a delay, or clocks apart): back to the server until due,
            # unchanged, so its envelope keeps the attempt count.
            if client.abort(queue, delay=remaining):
                log.info("job %s (%s): attempt %d of %d is due in %.2f s: given back until then",
                         job.id, job.name, job.attempt, self.attempts, remaining)
                return False
            self.server_delays = False  # refused: given back now, held when it comes again
            return False
        log.info("job %s (%s): attempt %d of %d is due in %.2f s", job.id, job.name, job.attempt,
                 self.attempts, remaining)
        if self.stopping.wait(remaining):
            client.abort(queue)
            log.info("stop requested during backoff: job %s given back to %s with its attempt %d",
                     job.id, queue, job.attempt)
            return False
        return True

    def _give_up(self, client, worker, queue, job, error, trace):
        record = job.error_record(error, trace, self.attempts)
        errors_queue = self.errors_queue_for(queue)
        try:
            server = client.put(errors_queue, record)
        except (NoServerAvailable, NotStored, QueueClientError) as exc:
            log.error("job %s failed %d times but could not be moved to %s (%s): given back to %s",
                      job.id, self.attempts, errors_queue, exc, queue)
            client.abort(queue)
            # The job comes straight back to some consumer; pause so that a broken errors
            # queue does not turn into a busy loop of failing attempts.
            self.stopping.wait(min(max(self.backoff, 1.0), self.max_backoff))
            return GIVEN_BACK
        log.error("job %s (%s) failed %d times, moved to %s on %s: %s: %s", job.id, job.name,
                  self.attempts, errors_queue, server, type(error).__name__, error)
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
