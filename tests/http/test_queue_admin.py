"""Queue management over HTTP: flush, delete, info, pause and resume, stats, errors, and
reloading code through the API."""

import os
import re
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from http_helpers import wait_until


def test_delete_on_q_flushes_and_keeps_the_queue(api):
    """DELETE /q/NAME removes the waiting jobs; the queue itself stays."""
    for n in range(3):
        api.enqueue("flushme", n)

    reply = api.delete("/q/flushme")

    assert (200, {"queue": "flushme", "flushed": 3}) == (reply.status_code, reply.json())
    assert 0 == api.depth("flushme")


def test_flush_leaves_reservations_alone(api):
    """Flushing removes waiting jobs only; a reserved job can still be aborted back."""
    api.enqueue("flushres", "held")
    api.enqueue("flushres", "waiting")
    rid = api.post("/q/flushres/take?reserve=1").json()["id"]

    api.delete("/q/flushres")
    api.post(f"/q/flushres/abort/{rid}")

    assert "held" == api.post("/q/flushres/take").json()


def test_delete_queue_removes_it_and_its_journal(api):
    """DELETE /queues/NAME: the queue, its journal and its stats go."""
    api.enqueue("deleteme", 1)
    journal = api.srv.data_dir / "deleteme.journal"
    assert journal.exists()

    reply = api.delete("/queues/deleteme")

    assert (200, {"deleted": "deleteme"}) == (reply.status_code, reply.json())
    assert 404 == api.get("/j/deleteme").status_code
    assert "deleteme" not in api.get("/queues").json()["queues"]
    assert not journal.exists()


def test_flush_and_delete_of_an_unknown_queue_are_404(api):
    """Neither creates the queue it names."""
    flush = api.delete("/q/never-made")
    delete = api.delete("/queues/never-made")

    assert (404, {"error": "no such queue"}) == (flush.status_code, flush.json())
    assert (404, {"error": "no such queue"}) == (delete.status_code, delete.json())
    assert 404 == api.get("/j/never-made").status_code


def test_queue_info_has_presques_fields_and_erqpys(api):
    """GET /j/NAME: job_count, job_processed, job_failed, and the stats."""
    api.post("/qb/info", json={"jobs": [1, 2, 3]})
    api.post("/q/info/take")
    rid = api.post("/q/info/take?reserve=1").json()["id"]
    api.post(f"/q/info/abort/{rid}")

    body = api.get("/j/info").json()

    assert "info" == body["queue_name"]
    assert 2 == body["job_count"]
    assert 2 == body["job_processed"]  # one plain fetch, one reserved fetch
    assert 1 == body["job_failed"]  # the aborted reservation
    assert 2 == body["stats"]["items"]
    assert body["stats"]["logsize"] > 0
    assert "head" not in body
    alias = api.get("/queues/info").json()
    assert (body["queue_name"], body["job_count"], body["job_failed"]) == (
        alias["queue_name"], alias["job_count"], alias["job_failed"])


def test_peek_shows_head_items_without_removing_them(api):
    """GET /j/NAME?peek=N previews the first N items; they stay queued."""
    api.post("/qb/peekq", json={"jobs": [{"n": 1}, {"n": 2}, {"n": 3}]})

    head = api.get("/j/peekq?peek=2").json()["head"]

    assert ['{"n":1}', '{"n":2}'] == [item["preview"] for item in head]
    assert [False, False] == [item["truncated"] for item in head]
    assert 3 == api.depth("peekq")


def test_queue_list(api):
    """GET /queues maps names to depths."""
    api.enqueue("listed", 1)

    queues = api.get("/queues").json()["queues"]

    assert 1 == queues["listed"]


def test_control_stop_and_start_as_presque(api):
    """POST /control/NAME {"status": "stop"} pauses; GET /control shows status 0; start resumes."""
    api.enqueue("ctl", 1)

    stopped = api.post("/control/ctl", json={"status": "stop"})
    status = api.get("/control/ctl").json()
    fetch = api.post("/q/ctl/take")
    started = api.post("/control/ctl", json={"status": "start"})

    assert {"queue": "ctl", "response": "updated", "status": 0, "paused": True} == stopped.json()
    assert {"queue": "ctl", "status": 0, "paused": True} == status
    assert (409, {"error": "queue is paused"}) == (fetch.status_code, fetch.json())
    assert {"queue": "ctl", "response": "updated", "status": 1, "paused": False} == started.json()
    assert 1 == api.post("/q/ctl/take").json()


def test_a_paused_queue_accepts_writes_and_memcache_gets_end(api):
    """Writes go in while paused; a memcache get returns nothing (END); stats show paused."""
    client = api.srv.client(default_noreply=False)
    api.post("/control/pausedq", json={"paused": True})

    api.enqueue("pausedq", {"a": 1})
    client.set("pausedq", b'{"b": 2}')
    memcache_get = client.get("pausedq")
    stats = api.get("/stats").json()["queues"]["pausedq"]
    api.post("/control/pausedq", json={"paused": False})

    assert memcache_get is None
    assert (2, True) == (stats["items"], stats["paused"])
    assert {"a": 1} == api.post("/q/pausedq/take").json()
    assert b'{"b": 2}' == client.get("pausedq")


def test_resume_wakes_a_blocked_memcache_reader(api):
    """A get/t= waiting on a paused queue with items gets one as soon as it is resumed."""
    api.enqueue("wakeq", {"wake": 1})
    api.post("/control/wakeq", json={"paused": True})
    raw = api.srv.raw()
    raw.send(b"get wakeq/t=8000\r\n")
    assert wait_until(lambda: api.get("/j/wakeq").json()["stats"]["waiters"] == 1)

    resumed_at = time.monotonic()
    api.post("/control/wakeq", json={"paused": False})
    reply = raw.read_until(b"END\r\n", timeout=10)
    raw.close()

    assert b'VALUE wakeq/t=8000 0 11\r\n{"wake": 1}\r\nEND\r\n' == reply
    assert time.monotonic() - resumed_at < 6  # woken, not ended by its 8 s timeout


def test_resume_wakes_a_blocked_http_reader(api):
    """A GET ?wait= on a paused queue returns the job once the queue is resumed."""
    api.enqueue("wakehttp", {"wake": 2})
    api.post("/control/wakehttp", json={"paused": True})
    result = {}
    reader = threading.Thread(target=lambda: result.update(reply=api.post("/q/wakehttp/take?wait=5000")))
    reader.start()
    assert wait_until(lambda: api.get("/j/wakehttp").json()["stats"]["waiters"] == 1)

    api.post("/control/wakehttp", json={"paused": False})
    reader.join(timeout=10)

    assert (200, {"wake": 2}) == (result["reply"].status_code, result["reply"].json())


def test_control_errors(api):
    """Missing content, bad status words, wrong content type, and GET of an unknown queue."""
    missing = api.post("/control/ctlerr", data=b"", headers={"Content-Type": "application/json"})
    invalid = api.post("/control/ctlerr", json={"status": "sideways"})
    not_object = api.post("/control/ctlerr", json=["stop"])
    wrong_type = api.post("/control/ctlerr", data=b"status=stop",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    unknown = api.get("/control/ctlerr")

    assert (400, {"error": "content is missing"}) == (missing.status_code, missing.json())
    assert 400 == invalid.status_code and "invalid status" in invalid.json()["error"]
    assert 400 == not_object.status_code
    assert 415 == wrong_type.status_code
    assert (404, {"error": "no such queue"}) == (unknown.status_code, unknown.json())


def test_pause_persists_across_a_restart_and_a_crash(http_server):
    """Paused state is written to the data directory and loaded at start."""
    server = http_server()
    server.enqueue("persist", 1)
    server.post("/control/persist", json={"status": "stop"})
    assert os.path.exists(server.srv.data_dir / "paused.json")

    server.restart()
    after_restart = server.get("/control/persist").json()["paused"]
    server.crash_and_start()
    after_crash = server.get("/control/persist").json()["paused"]
    server.post("/control/persist", json={"status": "start"})
    server.restart()
    after_resume = server.get("/control/persist").json()["paused"]

    assert (True, True, False) == (after_restart, after_crash, after_resume)
    assert 1 == server.post("/q/persist/take").json()


def test_stats_and_status_are_aliases_with_per_queue_forms(api):
    """/stats, /status, /stats/ and /status/NAME answer the same shape."""
    api.enqueue("statsq", 1)

    stats = api.get("/stats").json()
    status = api.get("/status/").json()
    one = api.get("/status/statsq").json()

    assert {"server", "http", "queues"} <= set(stats)
    assert set(stats) == set(status)
    assert 1 == stats["queues"]["statsq"]["items"]
    assert ("statsq", 1, ["statsq"]) == (one["queue"], one["size"], list(one["queues"]))
    assert 404 == api.get("/stats/no-such-queue").status_code
    assert stats["server"]["version"] == status["server"]["version"]


def test_stats_show_rates_and_history(api):
    """After traffic, the sampled in-rate is positive and history lists per-interval rates."""
    for n in range(20):
        api.enqueue("rateq", n)

    def rate_seen():
        info = api.get("/j/rateq?history=1").json()["stats"]
        return info if any(r > 0 for r in info["history"]["in"]) else None

    info = wait_until(rate_seen, timeout=10)

    assert info is not None
    assert {"in", "out"} == set(info["history"])
    assert info["head_age_ms"] >= 0


def test_unknown_routes_and_methods_answer_json_errors(api):
    """404 and 405 are JSON too; 405 names the allowed methods."""
    missing = api.get("/nowhere")
    wrong = api.request("PATCH", "/q/x")

    assert (404, {"error": "not found"}) == (missing.status_code, missing.json())
    assert (405, "DELETE, GET, POST, PUT") == (wrong.status_code, wrong.headers["Allow"])
    assert "error" in wrong.json()


def test_reload_through_the_api_bumps_the_generation_and_keeps_serving(http_server):
    """POST /server/reload reloads code; the same port and keep-alive connection still work."""
    server = http_server()
    before = server.get("/stats").json()["server"]["handler_generation"]

    reply = server.post("/server/reload")
    after = server.get("/stats").json()["server"]["handler_generation"]
    server.enqueue("after-reload", 1)

    assert 200 == reply.status_code and reply.json()["ok"] is True
    assert before + 1 == after
    assert 1 == server.depth("after-reload")


def test_no_http_table_means_the_plugin_stays_off(make_server, tmp_path):
    """Without [http] the plugin is installed but serves nothing, and says so in the log."""
    srv = make_server()
    assert wait_until(lambda: "HTTP API stays off" in srv.log(), timeout=10)

    assert "erqpy-http listening" not in srv.log()


def test_a_bad_http_table_refuses_the_start(make_server, tmp_path):
    """An unknown key in [http] refuses the whole file, with its line (the server used to
    start without the HTTP API); more cases in tests/control/test_config_validation.py."""
    config = tmp_path / "bad.toml"
    config.write_text("[http]\nport = 0\nbogus = 1\n")

    with pytest.raises(RuntimeError) as refused:
        make_server("--config", str(config))

    assert f"{config}:3: unknown setting 'bogus' in [http]" in str(refused.value)


def test_a_public_bind_without_protection_is_refused(make_server, tmp_path):
    """host = 0.0.0.0 with no token, credentials or read_only: the file is refused."""
    config = tmp_path / "public.toml"
    config.write_text('[http]\nhost = "0.0.0.0"\nport = 0\n')

    with pytest.raises(RuntimeError) as refused:
        make_server("--config", str(config))

    assert f"{config}:2: http.host '0.0.0.0' is not a loopback address" in str(refused.value)


def test_removing_the_http_table_and_reloading_stops_the_listener(http_server):
    """Config reload without [http], then a code reload: the old listener is stopped."""
    server = http_server()
    config = next(arg for arg in server.srv.args if arg.endswith(".toml"))
    Path(config).write_text("# [http] removed\n")

    server.srv.ctl("reload", "--config", check=True)
    server.srv.ctl("reload", check=True)

    def refused():
        try:
            requests.get(server.url("/stats"), timeout=2)
        except requests.ConnectionError:
            return True
        return False

    assert wait_until(refused, timeout=15, interval=0.2)
    assert server.srv.client(default_noreply=False).set("still-serving", b"1") is True


def test_changing_the_http_port_moves_the_listener_on_reload(http_server, tmp_path):
    """A new port in [http] takes effect at the next code reload."""
    server = http_server()
    config = Path(next(arg for arg in server.srv.args if arg.endswith(".toml")))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        new_port = probe.getsockname()[1]
    config.write_text(f"[http]\nport = {new_port}\n")

    server.srv.ctl("reload", "--config", check=True)
    server.srv.ctl("reload", check=True)

    assert wait_until(lambda: f"listening on http://127.0.0.1:{new_port}/" in server.srv.log(), timeout=10)
    assert 200 == requests.get(f"http://127.0.0.1:{new_port}/stats", timeout=10).status_code


def test_shutdown_ends_a_waiting_http_fetch_promptly(http_server):
    """SIGTERM while a GET ?wait= blocks: the server exits cleanly, well before the wait."""
    server = http_server({"max_wait_ms": 60000})
    server.enqueue("shutdownq", 0)  # a GET creates no queue, and only a queue shows its waiters
    assert 200 == server.post("/q/shutdownq/take").status_code
    outcome = {}

    def fetch():
        try:
            outcome["status"] = server.post("/q/shutdownq/take?wait=30000", timeout=40).status_code
        except requests.RequestException as exc:
            outcome["error"] = type(exc).__name__

    reader = threading.Thread(target=fetch)
    reader.start()
    assert wait_until(lambda: server.get("/j/shutdownq").status_code == 200
                      and server.get("/j/shutdownq").json()["stats"]["waiters"] == 1)

    started = time.monotonic()
    code = server.srv.terminate(timeout=20)
    reader.join(timeout=20)

    assert 0 == code
    assert time.monotonic() - started < 15  # not held for the 30 s wait
    assert {"status": 404} == outcome  # the wait ended with "no job", not a dropped connection


def test_every_front_end_reports_the_whole_depth_under_read_behind(http_server):
    """max_memory_size = 1024 and 50 items of 100 bytes: most wait on disk.  /queues,
    /stats/NAME (size and items), /j, /metrics, the dashboard and memcache stats all say 50."""
    server = http_server(extra_toml="[queues.deep]\nmax_memory_size = 1024\n")
    client = server.srv.client(default_noreply=False)
    for n in range(50):
        assert client.set("deep", b"%03d" % n + b"x" * 97) is True
    memcache = int(client.stats()[b"queue_deep_items"])
    assert server.get("/stats/deep").json()["queues"]["deep"]["mem_items"] < 50  # read-behind is on

    listed = server.get("/queues").json()["queues"]["deep"]
    per_queue = server.get("/stats/deep").json()
    info = server.get("/j/deep").json()["job_count"]
    metric = re.search(r'^erqpy_queue_items\{queue="deep"\} (\S+)$', server.get("/metrics").text, re.MULTILINE)
    page = server.get("/").text
    row = re.search(r'<tr data-server="0" data-queue="deep"><td[^>]*>deep</td><td data-field="items" '
                    r'data-value="(\d+)"', page)

    assert 50 == memcache
    assert (50, 50, 50) == (listed, per_queue["size"], per_queue["queues"]["deep"]["items"])
    assert 50 == info
    assert 50 == float(metric.group(1))
    assert 50 == int(row.group(1))
