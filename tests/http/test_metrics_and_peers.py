"""``GET /metrics`` in Prometheus text format, and the peer proxy behind the dashboard's
several-servers view."""

import re
import socket

import pytest

from http_helpers import wait_until

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_]\w*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')


def parse_metrics(text: str) -> dict:
    """{(name, labels text): value}; fails on any line that is not valid exposition format."""
    samples = {}
    declared = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            declared.add(line.split()[2])
            continue
        if line.startswith("# HELP ") or not line:
            continue
        match = SAMPLE.match(line)
        assert match, f"not exposition format: {line!r}"
        name, labels, value = match.group(1), match.group(2) or "", match.group(3)
        assert name in declared or name.rsplit("_", 1)[0] in declared, f"undeclared {name}"
        samples[(name, labels)] = float(value)
    return samples


def test_metrics_report_queue_depth_open_reads_and_connections(api):
    """Depth, open reads (memcache and HTTP), paused and connections match the server."""
    client = api.srv.client(default_noreply=False)
    for n in range(3):
        client.set("metq", str(n).encode())
    raw = api.srv.raw()
    assert raw.call(b"get metq/open\r\n", b"END\r\n").startswith(b"VALUE")
    api.post("/q/metq/take?reserve=1")
    api.post("/control/metq", json={"paused": True})

    reply = api.get("/metrics")
    samples = parse_metrics(reply.text)
    api.post("/control/metq", json={"paused": False})
    raw.close()

    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert 1 == samples[("erqpy_queue_items", '{queue="metq"}')]
    assert 2 == samples[("erqpy_queue_open_reads", '{queue="metq"}')]
    assert 1 == samples[("erqpy_queue_reservations", '{queue="metq"}')]
    assert 1 == samples[("erqpy_queue_paused", '{queue="metq"}')]
    assert 3 == samples[("erqpy_queue_enqueued_total", '{queue="metq"}')]
    assert samples[("erqpy_connections", "")] >= 2  # the pymemcache client and the raw socket
    assert samples[("erqpy_queue_journal_bytes", '{queue="metq"}')] > 0


def test_metrics_count_fsyncs_and_their_time(http_server):
    """fsync=always: each acknowledged write adds to the fsync summary."""
    server = http_server(args=("--fsync", "always"))
    before = parse_metrics(server.get("/metrics").text)

    for n in range(3):
        server.enqueue("fsyncq", n)
    after = parse_metrics(server.get("/metrics").text)

    assert after[("erqpy_fsync_seconds_count", "")] >= before[("erqpy_fsync_seconds_count", "")] + 1
    assert after[("erqpy_fsync_seconds_sum", "")] > 0


def test_metrics_rates_follow_traffic(api):
    """erqpy_queue_rate_in becomes positive after a burst of posts."""
    for n in range(20):
        api.enqueue("metrate", n)

    def rate():
        return parse_metrics(api.get("/metrics").text).get(("erqpy_queue_rate_in", '{queue="metrate"}'), 0)

    assert wait_until(lambda: rate() > 0, timeout=10)


def test_metric_labels_escape_quotes_and_backslashes(api):
    """A queue name with a quote and a backslash yields a valid, escaped label."""
    reply = api.post("/q/we%22ird%5Cname", json=1)
    assert 201 == reply.status_code

    samples = parse_metrics(api.get("/metrics").text)

    assert 1 == samples[("erqpy_queue_items", '{queue="we\\"ird\\\\name"}')]


def test_http_request_counts_by_status(api):
    """erqpy_http_requests_total counts answers by code."""
    api.post("/q/metcount-empty/take")
    samples = parse_metrics(api.get("/metrics").text)

    assert samples[("erqpy_http_requests_total", '{code="404"}')] >= 1
    assert samples[("erqpy_http_requests_total", '{code="200"}')] >= 1


# -- peers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_peer_proxy_reaches_another_server_with_its_token(http_server):
    """Server A (with a token of its own) lists server B and forwards to it, adding B's
    token; B's data changes."""
    b = http_server({"token": "b-token"})
    a = http_server({"token": "a-token", "servers": [{"url": b.base, "name": "bee", "token": "b-token"}]})

    peers = a.get("/peers").json()
    stats = a.get("/peers/0/stats").json()
    posted = a.post("/peers/0/q/remote", json={"via": "a"}, headers={"Authorization": "Bearer a-token"})

    assert {"servers": [{"index": 0, "name": "bee", "url": b.base}]} == peers
    assert b.get("/stats").json()["server"]["pid"] == stats["server"]["pid"]
    assert 201 == posted.status_code
    assert {"via": "a"} == b.post("/q/remote/take", headers={"Authorization": "Bearer b-token"}).json()
    assert "remote" not in a.get("/queues").json()["queues"]


def test_a_peer_token_is_refused_on_a_server_without_auth(http_server):
    """A dashboard with no auth of its own would lend B's token to anyone: the [http]
    table is refused and the API does not start, so B can only be changed with B's token."""
    b = http_server({"token": "b-token"})

    with pytest.raises(RuntimeError) as refused:
        http_server({"servers": [b.base, {"url": b.base, "name": "bee", "token": "b-token"}]})

    assert "http.servers[1] has a token but this server has no token" in str(refused.value)


def test_peer_proxy_passes_errors_through_and_reports_unreachable_peers(http_server):
    """B's 404 comes back as 404; an unknown index is 404; a dead peer is 502."""
    b = http_server()
    dead = f"http://127.0.0.1:{free_port()}"
    a = http_server({"servers": [b.base, dead]})

    not_found = a.get("/peers/0/j/nothing-here")
    no_peer = a.get("/peers/7/stats")
    unreachable = a.get("/peers/1/stats")
    nested = a.get("/peers/0/peers")

    assert (404, {"error": "no such queue"}) == (not_found.status_code, not_found.json())
    assert (404, {"error": "no such peer"}) == (no_peer.status_code, no_peer.json())
    assert 502 == unreachable.status_code and "unreachable" in unreachable.json()["error"]
    assert 400 == nested.status_code


def test_peer_proxy_changes_are_protected_by_the_local_token(http_server):
    """Changing a peer through /peers needs this server's own token."""
    b = http_server()
    a = http_server({"token": "a-token", "servers": [b.base]})

    anonymous = a.post("/peers/0/q/guarded", json=1)
    reading = a.get("/peers/0/stats")
    allowed = a.post("/peers/0/q/guarded", json=1, headers={"Authorization": "Bearer a-token"})

    assert (401, 200, 201) == (anonymous.status_code, reading.status_code, allowed.status_code)
    assert 1 == b.depth("guarded")


def test_dashboard_lists_every_configured_server(http_server):
    """The page's configuration names this server and each peer with its proxy base."""
    b = http_server()
    a = http_server({"servers": [{"url": b.base, "name": "second"}]})

    page = a.get("/").text

    assert '"name":"second","base":"/peers/0"' in page
