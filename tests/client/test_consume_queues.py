"""``erqpy consume high,default,low``: several queues in strict or weighted order with one
blocking wait across them, and ``--processes N`` (prefork).  Real subprocesses against a
real server; the handlers (``consume_handlers.py``) log what they did."""

import os
import signal
import time
from collections import Counter

import pytest

from erqpy.client import Client
from erqpy.client.producer import Producer

from clienthelpers import server_spec, wait_until
from test_consume_cli import queue_state


def put_jobs(server, queue, count, label=None):
    with Producer([server_spec(server)]) as producer:
        producer.put_many(queue, [("job", f"{label or queue}-{n}") for n in range(count)], batch=500)


def server_stat(server, name):
    return Client([server_spec(server)]).stats()[server_spec(server)][name]


def test_strict_order_serves_a_queue_only_while_the_ones_before_are_empty(server, consumers, events):
    for queue in ("sthigh", "stdefault", "stlow"):
        put_jobs(server, queue, 4)

    proc = consumers("sthigh,stdefault,stlow", [server], "--handler", "consume_handlers:record",
                     "--max-jobs", "12")

    assert 0 == proc.wait()
    done = [payload.strip('"') for payload in events.payloads("done")]
    expected = [f"{q}-{n}" for q in ("sthigh", "stdefault", "stlow") for n in range(4)]
    assert expected == done


def test_weights_share_10000_jobs_within_five_percent(server, consumers):
    """--weights 6,3,1 while every queue has jobs: of 10,000 jobs taken, 60 %, 30 % and
    10 % (each within 5 points) come from high, default and low."""
    queues = ("wthigh", "wtdefault", "wtlow")
    for queue in queues:
        put_jobs(server, queue, 10_000)

    started = time.monotonic()
    proc = consumers(",".join(queues), [server], "--handler", "consume_handlers:noop",
                     "--weights", "6,3,1", "--max-jobs", "10000")
    assert 0 == proc.wait(timeout=240)

    taken = [10_000 - queue_state([server], queue)[0] for queue in queues]
    assert 10_000 == sum(taken)
    shares = [count / 10_000 for count in taken]
    for share, expected in zip(shares, (0.6, 0.3, 0.1), strict=True):
        assert abs(share - expected) <= 0.05, (shares, time.monotonic() - started)


def test_one_blocking_wait_across_the_queues_wakes_at_once(server, consumers, events):
    """An idle consumer of three queues makes one blocking read (no polling of each queue:
    the server's cmd_get hardly moves), and a job on the third queue is handled at once."""
    queues = ("bwa", "bwb", "bwc")
    for queue in queues:
        put_jobs(server, queue, 1, label="warm")
    proc = consumers(",".join(queues), [server], "--handler", "consume_handlers:record",
                     "--wait", "4")
    wait_until(lambda: len(events.payloads("done")) == 3, what="the warm-up jobs")
    time.sleep(0.5)
    before = server_stat(server, "cmd_get")
    time.sleep(1.5)
    idle_gets = server_stat(server, "cmd_get") - before

    started = time.monotonic()
    put_jobs(server, "bwc", 1, label="late")
    wait_until(lambda: '"late-0"' in events.payloads("done"), timeout=10, what="the late job")
    latency = time.monotonic() - started

    assert idle_gets <= 1
    assert latency < 1.0
    assert server_stat(server, "cmd_get") - before <= 3
    proc.signal(signal.SIGTERM)
    assert 0 == proc.wait()


def test_a_child_that_kills_itself_is_replaced_and_its_job_comes_back(server, consumers, events, tmp_path):
    put_jobs(server, "pfcrash", 1)
    proc = consumers("pfcrash", [server], "--handler", "consume_handlers:die_once", "--processes", "2",
                     env={"ERQPY_TEST_MARKER": str(tmp_path / "died")})

    wait_until(lambda: events.payloads("done"), what="the job's second delivery")
    wait_until(lambda: "a new one starts" in proc.log() and proc.log().count("started (pid") >= 3,
               what="the dead child to be replaced")
    attempts = events.events("attempt")
    assert 2 == len(attempts)
    assert attempts[0][3] != attempts[1][3]  # the job ran again in another process
    assert ['"pfcrash-0"'] == events.payloads("done")
    # Confirmed in the round trip of the child's next read, just after the handler's "done".
    wait_until(lambda: queue_state([server], "pfcrash") == (0, 0), what="the job to be confirmed")

    proc.signal(signal.SIGTERM)
    assert 0 == proc.wait()


def test_sigterm_to_the_parent_lets_each_child_finish_its_job_once(server, consumers, events):
    """Three children, each with a job in hand: SIGTERM to the parent finishes the three
    jobs, each exactly once, reads nothing more, and every process exits."""
    put_jobs(server, "pfterm", 6)
    proc = consumers("pfterm", [server], "--handler", "consume_handlers:slow", "--processes", "3",
                     env={"ERQPY_TEST_SLEEP": "2"})
    wait_until(lambda: len(events.payloads("started")) == 3, what="three jobs in hand")
    children = {event[3] for event in events.events("started")}
    assert 3 == len(children)

    proc.signal(signal.SIGTERM)

    assert 0 == proc.wait()
    started, finished = events.payloads("started"), events.payloads("finished")
    assert sorted(started) == sorted(finished)
    assert 3 == len(finished) == len(set(finished))
    assert Counter(finished) == Counter(started)
    assert (3, 0) == queue_state([server], "pfterm")
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)


def test_a_child_that_reaches_max_jobs_is_replaced_by_a_fresh_process(server, consumers, events):
    put_jobs(server, "pfrecycle", 6)
    proc = consumers("pfrecycle", [server], "--handler", "consume_handlers:record", "--processes", "2",
                     "--max-jobs", "2")

    wait_until(lambda: len(events.payloads("done")) == 6, what="the six jobs")
    pids = {event[3] for event in events.events("done")}
    assert len(pids) >= 3  # each process handled at most two
    assert all(count <= 2 for count in Counter(e[3] for e in events.events("done")).values())
    assert 6 == len(set(events.payloads("done")))

    proc.signal(signal.SIGTERM)
    assert 0 == proc.wait()
    assert (0, 0) == queue_state([server], "pfrecycle")
