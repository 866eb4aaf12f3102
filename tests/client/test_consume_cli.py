"""``erqpy consume`` as supervisord runs it: a real subprocess against real servers, with
handlers from ``consume_handlers.py`` that log each action to a file."""

import json
import random
import signal
from collections import Counter

import pytest

from erqpy.client import Client
from erqpy.client.producer import Producer

from clienthelpers import server_spec, wait_until


def put_jobs(servers, queue, count):
    """Jobs 0..count-1, in batches of 5 spread over the servers by a seeded writer."""
    with Producer([server_spec(s) for s in servers], rng=random.Random(5)) as producer:
        producer.put_many(queue, [("job", n) for n in range(count)], batch=5)


def queue_state(servers, queue):
    """(items waiting, due or delayed, open reads) summed over the servers."""
    items = opened = 0
    for fields in Client([server_spec(s) for s in servers]).stats().values():
        items += fields.get(f"queue_{queue}_items", 0) + fields.get(f"queue_{queue}_delayed", 0)
        opened += fields.get(f"queue_{queue}_open_transactions", 0)
    return items, opened


def test_max_jobs_exits_after_exactly_n_jobs(server, consumers, events):
    """--max-jobs 4 handles four jobs, confirms them, and exits 0 leaving the rest."""
    put_jobs([server], "maxq", 10)

    proc = consumers("maxq", [server], "--handler", "consume_handlers:record", "--max-jobs", "4")

    assert 0 == proc.wait()
    assert ["0", "1", "2", "3"] == events.payloads("done")
    assert (6, 0) == queue_state([server], "maxq")


def test_max_jobs_is_exact_with_several_threads(server, consumers, events):
    """With --concurrency 4, --max-jobs 5 still means five jobs in total."""
    put_jobs([server], "maxc", 20)

    proc = consumers("maxc", [server], "--handler", "consume_handlers:record", "--max-jobs", "5",
                     "--concurrency", "4")

    assert 0 == proc.wait()
    assert 5 == len(events.payloads("done"))
    assert (15, 0) == queue_state([server], "maxc")


def test_worker_killed_mid_job_gets_its_job_redelivered(server, consumers, events):
    """SIGKILL during a job: the server gives the open read back, and the next consumer
    handles that same job."""
    put_jobs([server], "crashq", 1)
    first = consumers("crashq", [server], "--handler", "consume_handlers:slow",
                      env={"ERQPY_TEST_SLEEP": "60"})
    wait_until(lambda: events.payloads("started"), what="the first consumer to start the job")

    first.signal(signal.SIGKILL)
    first.wait()
    second = consumers("crashq", [server], "--handler", "consume_handlers:slow", "--max-jobs", "1",
                       env={"ERQPY_TEST_SLEEP": "0"})

    assert 0 == second.wait()
    assert ["0", "0"] == events.payloads("started")
    assert ["0"] == events.payloads("finished")
    assert (0, 0) == queue_state([server], "crashq")


def test_sigterm_during_a_job_finishes_it_and_exits_cleanly(server, consumers, events):
    """SIGTERM mid-job: the job runs to its end and is confirmed, nothing else is read,
    and the process exits 0."""
    put_jobs([server], "termq", 3)
    proc = consumers("termq", [server], "--handler", "consume_handlers:slow",
                     env={"ERQPY_TEST_SLEEP": "1.5"})
    wait_until(lambda: events.payloads("started"), what="the job to start")

    proc.signal(signal.SIGTERM)

    assert 0 == proc.wait(timeout=30)
    assert ["0"] == events.payloads("started")
    assert ["0"] == events.payloads("finished")
    assert (2, 0) == queue_state([server], "termq")
    remaining = Client([server_spec(server)])
    assert [1, 2] == [remaining.get("termq")["payload"], remaining.get("termq")["payload"]]


def test_idle_consumer_stops_on_sigterm(server, consumers, events):
    """An idle consumer blocked in a read exits 0 on SIGTERM within its wait."""
    proc = consumers("idleq", [server], "--handler", "consume_handlers:record", "--wait", "1")
    wait_until(lambda: "consuming idleq" in proc.log(), what="the consumer to start")

    proc.signal(signal.SIGTERM)

    assert 0 == proc.wait(timeout=30)
    assert [] == events.events()


def test_failing_job_is_retried_with_backoff_then_moved_to_the_errors_queue(server, consumers, events):
    """A job that always fails is tried 1 + --retries times, then put on <queue>_errors with
    the error, and confirmed on its own queue."""
    put_jobs([server], "failq", 1)

    proc = consumers("failq", [server], "--handler", "consume_handlers:always_fail",
                     "--retries", "2", "--backoff", "0.05", "--max-jobs", "1")

    assert 0 == proc.wait()
    assert [("0", "1"), ("0", "2"), ("0", "3")] == [e[1:3] for e in events.events("attempt")]
    record = Client([server_spec(server)]).get("failq_errors")
    assert ("job", 0, 3) == (record["job"], record["payload"], record["meta"]["attempts"])
    assert "RuntimeError: boom 0" == record["meta"]["error"]
    assert "failq" == record["meta"]["queue"]
    assert (0, 0) == queue_state([server], "failq")


def test_worker_class_succeeds_after_retries(server, consumers, events):
    """A Worker subclass that fails twice is done on its third attempt; no error record."""
    put_jobs([server], "flakyq", 1)

    proc = consumers("flakyq", [server], "--handler", "consume_handlers:FlakyWorker",
                     "--backoff", "0.05", "--max-jobs", "1")

    assert 0 == proc.wait()
    assert [("0", "3")] == [e[1:3] for e in events.events("done")]
    assert None is Client([server_spec(server)]).get("flakyq_errors")


def test_worker_fail_hook_runs_once_when_the_job_is_given_up(server, consumers, events):
    """Worker.fail(job, error) is called once, after the last attempt."""
    put_jobs([server], "hookq", 1)

    proc = consumers("hookq", [server], "--handler", "consume_handlers:FailingWorker",
                     "--retries", "1", "--backoff", "0.05", "--max-jobs", "1",
                     "--errors-queue", "hook_failures")

    assert 0 == proc.wait()
    assert [("fail", "0", "2")] == [e[:3] for e in events.events("fail")]
    assert "bad_job_0" == events.events("fail")[0][4]
    assert "ValueError: bad job 0" == Client([server_spec(server)]).get("hook_failures")["meta"]["error"]


@pytest.mark.parametrize("server_count", [1, 3])
def test_same_consumer_against_one_and_three_servers(make_server, consumers, events, server_count):
    """The same command line consumes every job exactly once from one server or three."""
    servers = [make_server() for _ in range(server_count)]
    put_jobs(servers, "sameq", 30)

    proc = consumers("sameq", servers, "--handler", "consume_handlers:record", "--max-jobs", "30")

    assert 0 == proc.wait()
    assert [str(n) for n in range(30)] == sorted(events.payloads("done"), key=int)
    assert (0, 0) == queue_state(servers, "sameq")


def test_every_item_is_consumed_exactly_once_by_concurrent_consumers(three_servers, consumers, events):
    """Two processes of four threads each, on three servers: 300 jobs, each handled once."""
    put_jobs(three_servers, "onceq", 300)
    procs = [consumers("onceq", three_servers, "--handler", "consume_handlers:record",
                       "--concurrency", "4", "--wait", "0.5") for _ in range(2)]
    for proc in procs:  # a signal before its handlers are installed would just kill it
        wait_until(lambda: "consuming onceq" in proc.log(), what="the consumers to start")

    wait_until(lambda: len(events.payloads("done")) >= 300, timeout=90, what="300 jobs")
    for proc in procs:
        proc.signal(signal.SIGTERM)

    assert [0, 0] == [proc.wait() for proc in procs]
    counts = Counter(events.payloads("done"))
    assert {str(n): 1 for n in range(300)} == dict(counts)
    assert (0, 0) == queue_state(three_servers, "onceq")


def test_consumer_skips_a_dead_server_and_gets_its_jobs_after_restart(three_servers, consumers, events):
    """With one of three servers down the consumer handles the jobs of the other two; when
    the dead one comes back on its port, its jobs are handled too, each once."""
    put_jobs(three_servers, "deadq", 60)
    victim = three_servers[0]
    victim_port = victim.port
    on_victim = queue_state([victim], "deadq")[0]
    victim.kill9()

    proc = consumers("deadq", three_servers, "--handler", "consume_handlers:record", "--wait", "0.5")
    wait_until(lambda: len(events.payloads("done")) >= 60 - on_victim, timeout=60,
               what="the live servers' jobs")
    victim.restart(extra_args=("--port", str(victim_port)))
    wait_until(lambda: len(events.payloads("done")) >= 60, timeout=60, what="the restarted server's jobs")
    proc.signal(signal.SIGTERM)

    assert 0 == proc.wait()
    assert 0 < on_victim < 60
    assert [str(n) for n in range(60)] == sorted(events.payloads("done"), key=int)
    assert (0, 0) == queue_state(three_servers, "deadq")


def test_namespace_option_consumes_the_namespaced_queue(server, consumers, events):
    """--namespace shop consumes shop:<queue>, where a namespaced Producer put the jobs."""
    with Producer([server_spec(server)], namespace="shop", tenant="acme") as producer:
        producer.put("orders", "ship", {"order": 7})

    proc = consumers("orders", [server], "--namespace", "shop", "--handler", "consume_handlers:record",
                     "--max-jobs", "1")

    assert 0 == proc.wait()
    assert [json.dumps({"order": 7}, separators=(",", ":"))] == events.payloads("done")


def test_debug_logs_every_action(server, consumers, events):
    """--debug logs the reserve, the handling and the confirmation of each job."""
    put_jobs([server], "debugq", 2)

    proc = consumers("debugq", [server], "--handler", "consume_handlers:record", "--max-jobs", "2",
                     "--debug")

    assert 0 == proc.wait()
    log = proc.log()
    assert (2, 2, 2) == (log.count("reserved item"), log.count("handled job"), log.count("confirmed item"))


def test_a_handler_that_cannot_be_loaded_is_a_clear_error(server, consumers, events):
    """A missing handler module exits non-zero and names the problem."""
    proc = consumers("anyq", [server], "--handler", "no_such_module:handle")

    assert 0 != proc.wait()
    assert "no_such_module" in proc.log()


def test_sigterm_during_backoff_gives_the_job_back_whole(server, consumers, events):
    """A job waiting out its backoff when SIGTERM comes is given back to its queue, not
    moved to the errors queue, and the process exits 0."""
    put_jobs([server], "backq", 1)
    proc = consumers("backq", [server], "--handler", "consume_handlers:always_fail",
                     "--retries", "5", "--backoff", "30")
    wait_until(lambda: events.payloads("attempt"), what="the first attempt")
    wait_until(lambda: "retrying in" in proc.log(), what="the backoff to start")

    proc.signal(signal.SIGTERM)

    assert 0 == proc.wait(timeout=30)
    assert ["0"] == events.payloads("attempt")
    assert (1, 0) == queue_state([server], "backq")
    assert None is Client([server_spec(server)]).get("backq_errors")


def test_a_job_that_cannot_reach_the_errors_queue_is_given_back(make_server, tmp_path, consumers, events):
    """When the errors queue refuses the record (here: items over 16 bytes), the failed job
    goes back to its own queue instead of being dropped."""
    config = tmp_path / "erqpy.toml"
    config.write_text('[queues."refq_errors"]\nmax_item_size = 16\n')
    server = make_server("--config", str(config))
    put_jobs([server], "refq", 1)
    proc = consumers("refq", [server], "--handler", "consume_handlers:always_fail",
                     "--retries", "0", "--backoff", "0.2")
    wait_until(lambda: "could not be moved" in proc.log(), what="the refused errors put")

    proc.signal(signal.SIGTERM)

    assert 0 == proc.wait(timeout=30)
    assert (1, 0) == queue_state([server], "refq")
    assert (0, 0) == queue_state([server], "refq_errors")
