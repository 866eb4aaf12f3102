"""A job's attempt count survives whatever happens to the consumer between attempts, so
``--retries`` bounds a poison job: ``erqpy consume`` puts each retry back on the queue with
``meta.attempt`` + 1 before it confirms the failed delivery."""

import signal

import pytest
from pymemcache.client.base import Client as MemcacheClient

from erqpy.client import Client
from erqpy.client.producer import Producer

from clienthelpers import server_spec, wait_until
from test_consume_cli import put_jobs, queue_state

def stored_items(server, queue):
    """Items ever put on ``queue`` (its total_items stat)."""
    fields = Client([server_spec(server)]).stats()[server_spec(server)]
    return fields.get(f"queue_{queue}_total_items", 0)


# The backoff is the window in which each consumer is stopped: wide enough for a loaded
# machine, as the retry waits on the server and the idle consumer reads it once it is due.
POISON_ARGS = ("--handler", "consume_handlers:always_fail", "--retries", "2", "--backoff", "4")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_poison_job_stopped_in_every_backoff_ends_in_errors_after_retries_plus_one(
        server, consumers, events, signum):
    """Stop the consumer while it waits out each backoff (SIGTERM gives the job back,
    SIGKILL lets the server take it back): each new consumer runs the next attempt, not
    attempt 1 again, and after exactly 3 attempts (--retries 2) the job is in poisonq_errors."""
    put_jobs([server], "poisonq", 1)
    for attempt in (1, 2):
        proc = consumers("poisonq", [server], *POISON_ARGS)
        wait_until(lambda: len(events.events("attempt")) == attempt and "retrying in" in proc.log(),
                   timeout=30, what=f"the backoff after attempt {attempt}")
        if signum == signal.SIGKILL:  # not in the instant between the failure and the put
            wait_until(lambda: stored_items(server, "poisonq") == 1 + attempt, timeout=30,
                       what="the retry to be stored")
            # ... nor between the put and the confirm of the failed delivery (the next read's).
            wait_until(lambda: queue_state([server], "poisonq") == (1, 0), timeout=30,
                       what="the failed delivery to be confirmed")
        proc.signal(signum)
        code = proc.wait()
        assert (0 if signum == signal.SIGTERM else -signal.SIGKILL) == code, proc.log()
        assert (1, 0) == queue_state([server], "poisonq")

    last = consumers("poisonq", [server], *POISON_ARGS, "--max-jobs", "1")

    assert 0 == last.wait()
    assert [("0", "1"), ("0", "2"), ("0", "3")] == [e[1:3] for e in events.events("attempt")]
    record = Client([server_spec(server)]).get("poisonq_errors")
    assert (0, 3, 1) == (record["payload"], record["meta"]["attempts"], record["meta"]["attempt"])
    assert "RuntimeError: boom 0" == record["meta"]["error"]
    assert (0, 0) == queue_state([server], "poisonq")


def test_a_bare_item_keeps_its_bytes_and_its_count_across_retries(server, consumers, events):
    """An item that is not an envelope (here bytes that are not UTF-8, put by a stock
    client) is wrapped for its retry and unwrapped for the handler: every attempt sees
    the same bytes, and the count survives a SIGTERM during the backoff."""
    raw = bytes([0xFF, 0x00, 0x80]) + b"job"
    stock = MemcacheClient(("127.0.0.1", server.port), default_noreply=False)
    assert stock.set("bareq", raw)
    args = ("--handler", "consume_handlers:fail_raw", "--retries", "1", "--backoff", "2")
    first = consumers("bareq", [server], *args)
    wait_until(lambda: "retrying in" in first.log(), timeout=30, what="the backoff")
    first.signal(signal.SIGTERM)
    assert 0 == first.wait()

    second = consumers("bareq", [server], *args, "--max-jobs", "1")

    assert 0 == second.wait()
    shown = f"bytes:{raw.hex()}"
    assert [("raw", shown, "1"), ("raw", shown, "2")] == [e[:3] for e in events.events("raw")]
    record = Client([server_spec(server)]).get("bareq_errors")
    assert ("base64", 2) == (record["meta"]["payload_encoding"], record["meta"]["attempts"])
    assert (0, 0) == queue_state([server], "bareq")


def test_a_retry_that_cannot_be_put_back_is_retried_in_place(make_server, tmp_path, consumers, events):
    """When the queue refuses the retry (here: the retry envelope is over the queue's
    max_item_size, the job itself is not), the consumer keeps the item and retries it in
    place; the job still ends in the errors queue after 1 + --retries attempts."""
    config = tmp_path / "erqpy.toml"
    config.write_text('[queues."smallq"]\nmax_item_size = 160\n')
    server = make_server("--config", str(config))
    put_jobs([server], "smallq", 1)

    proc = consumers("smallq", [server], "--handler", "consume_handlers:always_fail",
                     "--retries", "2", "--backoff", "0.05", "--max-jobs", "1")

    assert 0 == proc.wait()
    assert [("0", "1"), ("0", "2"), ("0", "3")] == [e[1:3] for e in events.events("attempt")]
    assert 2 == proc.log().count("retrying in place")
    assert 3 == Client([server_spec(server)]).get("smallq_errors")["meta"]["attempts"]
    assert (0, 0) == queue_state([server], "smallq")


def test_a_job_that_kills_its_worker_is_bounded_by_the_queues_max_deliveries(
        make_server, tmp_path, consumers, events):
    """No attempt is ever reported, so the envelope's count cannot grow: the server counts
    the deliveries itself and, after max_deliveries, moves the job to jobs_errors; the
    next worker gets the next job instead of dying again."""
    config = tmp_path / "erqpy.toml"
    config.write_text("[queues.poisonq]\nmax_deliveries = 3\n")
    server = make_server("--config", str(config))
    with Producer([server_spec(server)]) as producer:
        producer.put("poisonq", "job", "poison")
    for _ in range(3):  # as supervisord would: restart the worker each time it dies
        proc = consumers("poisonq", [server], "--handler", "consume_handlers:die_on_poison")
        assert -signal.SIGKILL == proc.wait(), proc.log()
        wait_until(lambda: queue_state([server], "poisonq") == (1, 0), timeout=30,
                   what="the server to take the dead worker's job back")
    with Producer([server_spec(server)]) as producer:
        producer.put("poisonq", "job", "fine")

    last = consumers("poisonq", [server], "--handler", "consume_handlers:die_on_poison", "--max-jobs", "1")

    assert 0 == last.wait(), last.log()
    assert ['"poison"'] * 3 + ['"fine"'] == events.payloads("attempt")
    assert "poison" == Client([server_spec(server)]).get("poisonq_errors")["payload"]
    assert (0, 0) == queue_state([server], "poisonq")


def test_a_job_that_kills_its_worker_is_bounded_by_retries_alone(server, consumers, events):
    """Issue 10 item 9: no queue setting at all.  Each read asks the server for
    ``max_deliveries`` = retries + 1, so after two deaths with ``--retries 1`` the server
    moves the job to poisonq_errors and the next worker gets the next job."""
    with Producer([server_spec(server)]) as producer:
        producer.put("poisonq", "job", "poison")
    for _ in range(2):  # as supervisord would: restart the worker each time it dies
        proc = consumers("poisonq", [server], "--handler", "consume_handlers:die_on_poison",
                         "--retries", "1")
        assert -signal.SIGKILL == proc.wait(), proc.log()
        wait_until(lambda: queue_state([server], "poisonq") == (1, 0), timeout=30,
                   what="the server to take the dead worker's job back")
    with Producer([server_spec(server)]) as producer:
        producer.put("poisonq", "job", "fine")

    last = consumers("poisonq", [server], "--handler", "consume_handlers:die_on_poison",
                     "--retries", "1", "--max-jobs", "1")

    assert 0 == last.wait(), last.log()
    assert ['"poison"'] * 2 + ['"fine"'] == events.payloads("attempt")
    assert "poison" == Client([server_spec(server)]).get("poisonq_errors")["payload"]
    assert (0, 0) == queue_state([server], "poisonq")


def test_max_deliveries_zero_lets_a_job_kill_workers_without_bound(server, consumers, events):
    with Producer([server_spec(server)]) as producer:
        producer.put("poisonq", "job", "poison")
    for _ in range(3):
        proc = consumers("poisonq", [server], "--handler", "consume_handlers:die_on_poison",
                         "--retries", "0", "--max-deliveries", "0")
        assert -signal.SIGKILL == proc.wait(), proc.log()
        wait_until(lambda: queue_state([server], "poisonq") == (1, 0), timeout=30,
                   what="the server to take the dead worker's job back")

    assert ['"poison"'] * 3 == events.payloads("attempt")
