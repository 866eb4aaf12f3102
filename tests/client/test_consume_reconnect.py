"""``erqpy consume`` and ``erqpy.client.Client`` when servers are not there yet, or restart:
a short retry delay that backs off, and logs that say why."""

import signal
import socket
import time
from types import SimpleNamespace

import pytest

from erqpy.client import Client, NoServerAvailable

from clienthelpers import server_spec, wait_until

#: Generous: the consumer should resume within about --retry-max (1 s here) plus one --wait.
RESUME_BOUND = 6.0


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def put_job(port, queue, payload):
    Client([f"127.0.0.1:{port}"]).put(queue, {"job": "j", "payload": payload, "meta": {"attempt": 1}})


def test_consumer_started_before_the_server_and_across_a_restart(make_server, consumers, events):
    """A consumer started before its server picks up work soon after the server comes up,
    and again soon after a SIGKILL and restart on the same port and data directory; the log
    names the real reason the server was skipped."""
    port = free_port()
    proc = consumers("earlyq", [SimpleNamespace(port=port)], "--wait", "0.5",
                     "--handler", "consume_handlers:record", "--retry-after", "0.05",
                     "--retry-max", "1")
    wait_until(lambda: "every server is marked dead" in proc.log(), what="the consumer to find no server")
    srv = make_server("--port", str(port))

    put_job(port, "earlyq", 1)
    stored = time.monotonic()
    wait_until(lambda: events.payloads("done") == ["1"], timeout=30, what="the first job")
    first_delay = time.monotonic() - stored

    srv.kill9()
    srv.start(extra_args=("--port", str(port)))
    put_job(port, "earlyq", 2)
    stored = time.monotonic()
    wait_until(lambda: events.payloads("done") == ["1", "2"], timeout=30, what="the job after the restart")
    second_delay = time.monotonic() - stored
    proc.signal(signal.SIGTERM)

    assert 0 == proc.wait()
    assert first_delay < RESUME_BOUND and second_delay < RESUME_BOUND, (first_delay, second_delay, proc.log())
    log = proc.log()
    assert "ConnectionRefusedError" in log
    assert "()" not in log, log


def test_confirm_that_fails_names_its_reason(make_server, consumers, events):
    """The server dies while a job runs: the failed confirm is logged with the error's
    class (it was `failed ()`), and the job is handled again once the server is back."""
    srv = make_server()
    port = srv.port
    put_job(port, "confq", 7)
    proc = consumers("confq", [srv], "--handler", "consume_handlers:slow", "--wait", "0.5",
                     env={"ERQPY_TEST_SLEEP": "1.5"})
    wait_until(lambda: events.payloads("started"), what="the job to start")

    srv.kill9()
    srv.start(extra_args=("--port", str(port)))
    wait_until(lambda: len(events.payloads("finished")) == 2, timeout=60, what="the job to be redelivered")
    proc.signal(signal.SIGTERM)

    assert 0 == proc.wait()
    lost = [line for line in proc.log().splitlines() if "will be delivered again" in line]
    assert lost, proc.log()
    assert "()" not in lost[0] and "Error" in lost[0], lost[0]


def test_client_backs_off_and_a_success_resets_it(make_server):
    """Every failure in a row doubles the time a dead server is skipped, up to retry_max;
    the error says which server failed and why.  Once it answers, it is live at once."""
    port = free_port()
    client = Client([f"127.0.0.1:{port}"], retry_after=0.2, retry_max=0.8)
    waits = []
    for _ in range(4):
        wait_until(lambda: client.live_servers(), timeout=10, what="the server to be tried again")
        with pytest.raises(NoServerAvailable) as excinfo:
            client.get("backq")  # fails on the refused connection, then finds no live server
        waits.append(client.retry_in())

    srv = make_server("--port", str(port))
    wait_until(lambda: client.live_servers(), timeout=10, what="the server to be tried again")
    assert client.put("backq", "x") == server_spec(srv)

    assert f"127.0.0.1:{port}: ConnectionRefusedError" in str(excinfo.value)
    # 0.2, 0.4, 0.8, 0.8 s; the elapsed time since each failure only shortens them.
    assert waits[0] <= 0.2 < waits[1] <= 0.4 < waits[2] <= 0.8 and 0.4 < waits[3] <= 0.8, waits
    assert [f"127.0.0.1:{port}"] == client.live_servers()
    assert 0 == client.retry_in()


def test_retry_after_above_retry_max_is_refused(server, consumers):
    """--retry-after longer than --retry-max is a usage error, not a silent cap."""
    proc = consumers("anyq", [server], "--handler", "consume_handlers:record",
                     "--retry-after", "3", "--retry-max", "1")

    assert 2 == proc.wait()
    assert "--retry-after" in proc.log() and "--retry-max" in proc.log()
