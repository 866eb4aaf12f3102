"""The routes behind the dashboard, over real HTTP against a real server: the history ring
(and that it survives ``erqctl reload``), the consumers view, browsing items, the head
job's delete and move, and the retry of error records."""

import json
import threading

from erqpy.client.envelope import Job

from http_helpers import wait_until


def points(server, **params):
    return server.get("/history", params=params).json()


def test_history_counts_traffic_and_survives_a_reload(http_server):
    """Traffic shows as rates and depth; after erqctl reload the old points are still there."""
    server = http_server()
    client = server.srv.client(default_noreply=False)
    wait_until(lambda: len(points(server)["t"]) >= 2, timeout=10, what="two history points")
    for n in range(30):
        client.set("hist", f"{n}".encode())
    wait_until(lambda: sum(points(server)["in"]) > 0, timeout=10, what="the burst in the history")
    before = points(server)
    queue_before = points(server, queue="hist")

    reload = server.srv.ctl("reload")
    assert 0 == reload.returncode, reload.stdout + reload.stderr
    wait_until(lambda: points(server)["t"][-1] > before["t"][-1], timeout=10, what="a point after the reload")
    after = points(server)

    assert 30 == before["depth"][-1]
    assert sum(before["in"]) > 0
    assert 30 == [depth for depth in queue_before["depth"] if depth is not None][-1]
    assert set(before["t"]) <= set(after["t"]) | {before["t"][0]}  # the ring kept its points
    assert before["t"][-1] in after["t"]
    assert 400 == server.get("/history", params={"window": "1y"}).status_code


def test_consumers_lists_open_reads_and_blocked_readers(http_server):
    """A memcache connection holding a reliable read, and a reader blocked in get/t."""
    server = http_server()
    holder = server.srv.raw()
    holder.call(b"set busy 0 0 1\r\nx\r\n")
    assert b"VALUE busy" in holder.call(b"get busy/open\r\n", b"END\r\n")
    waiter = server.srv.raw()
    waiter.call(b"set idle 0 0 1\r\nx\r\n")
    waiter.call(b"get idle\r\n", b"END\r\n")  # a reader waits in the line of a queue that exists

    def wait_in_line():
        try:
            waiter.call(b"get idle/t=8000\r\n", b"END\r\n", timeout=15)
        except OSError:
            pass  # closed by the test once it has seen the reader

    blocked = threading.Thread(target=wait_in_line)
    blocked.start()
    early = server.srv.raw()

    def wait_for_missing_queue():
        try:
            early.call(b"get not-yet/t=8000\r\n", b"END\r\n", timeout=15)
        except OSError:
            pass

    early_reader = threading.Thread(target=wait_for_missing_queue)
    early_reader.start()
    try:
        wait_until(lambda: len(server.get("/consumers").json()["blocked"]) == 2, timeout=10, what="the blocked readers")
        view = server.get("/consumers").json()
        local_port = holder.sock.getsockname()[1]
    finally:
        for sock in (holder, waiter, early):
            sock.close()
        blocked.join(timeout=15)
        early_reader.join(timeout=15)

    [held] = view["holders"]
    assert "memcache" == held["kind"] and 1 == held["open_reads"]
    assert [{"queue": "busy", "count": 1}] == [{k: r[k] for k in ("queue", "count")} for r in held["queues"]]
    assert f"127.0.0.1:{local_port}" == held["address"]
    line, missing = view["blocked"]
    assert "idle" == line["queue"] and 1 == line["count"] and line["exists"] is True
    assert "not-yet" == missing["queue"] and missing["exists"] is False
    assert line["readers"][0]["address"].startswith("127.0.0.1:")
    assert line["readers"][0]["waiting_ms"] >= 0


def test_items_page_and_head_job_actions(http_server):
    """Paging through items, the settings in force, delete and move of the head only."""
    server = http_server(extra_toml="[queues.paged]\nmax_items = 500\n")
    for n in range(25):
        server.enqueue("paged", {"n": n})
    first = server.get("/queues/paged/items", params={"limit": 10}).json()
    second = server.get("/queues/paged/items", params={"offset": 10, "limit": 10}).json()
    head_id = first["items"][0]["item_id"]
    not_head = server.delete(f"/queues/paged/items/{first['items'][1]['item_id']}")
    deleted = server.delete(f"/queues/paged/items/{head_id}")
    moved = server.post(f"/queues/paged/items/{head_id + 1}/move", json={"to": "elsewhere"})

    assert [{"n": n} for n in range(10)] == [item["job"] for item in first["items"]]
    assert [{"n": n} for n in range(10, 20)] == [item["job"] for item in second["items"]]
    assert 25 == first["total"] and 500 == first["settings"]["max_items"]
    assert 409 == not_head.status_code
    assert 200 == deleted.status_code and 200 == moved.status_code, (deleted.text, moved.text)
    assert 23 == server.depth("paged") and 1 == server.depth("elsewhere")
    assert b'{"n": 1}' == server.srv.client().get("elsewhere")
    assert 400 == server.get("/queues/paged/items", params={"offset": 990, "limit": 20}).status_code


def test_a_moved_job_keeps_its_priority_level(http_server):
    server = http_server()
    raw = server.srv.raw()
    assert b"STORED\r\n" == raw.call(b"set src/pri=1 0 0 6\r\nurgent\r\n")
    assert b"STORED\r\n" == raw.call(b"set dst 0 0 6\r\nnormal\r\n")
    [head] = server.get("/queues/src/items").json()["items"]
    moved = server.post(f"/queues/src/items/{head['item_id']}/move", json={"to": "dst"})
    order = [raw.call(b"get dst\r\n", b"END\r\n") for _ in range(2)]
    raw.close()

    assert 1 == head["priority"] and 200 == moved.status_code
    assert [b"urgent", b"normal"] == [reply.split(b"\r\n")[1] for reply in order]  # level 1 first


def error_record(origin: str, n: int) -> bytes:
    job = Job(origin, "resize", {"n": n}, meta={"id": f"j{n}", "enqueued_at": 1.7e9, "attempt": 3})
    trace = f"Traceback (most recent call last):\n  File \"w.py\", line {n}\nValueError: bad image {n}\n"
    return json.dumps(job.error_record(ValueError(f"bad image {n}"), trace, 3)).encode()


def test_retry_puts_error_records_back_on_their_origin_queue(http_server):
    server = http_server()
    client = server.srv.client(default_noreply=False)
    for n in range(3):
        client.set("images_errors", error_record("images", n))
    head = server.get("/queues/images_errors/items").json()["items"][0]
    one = server.post("/queues/images_errors/retry", json={"item_id": head["item_id"]}).json()
    rest = server.post("/queues/images_errors/retry", json={"all": True}).json()
    back = [json.loads(client.get("images")) for _ in range(3)]

    assert "ValueError: bad image 0" == head["job"]["meta"]["error"]
    assert [{"item_id": head["item_id"], "to": "images"}] == one["retried"]
    assert 2 == len(rest["retried"]) and 0 == rest["remaining"]
    assert [0, 1, 2] == [record["payload"]["n"] for record in back]
    assert all(record["meta"]["attempt"] == 1 for record in back)


def test_series_rates_from_counters_with_gaps_and_restarts():
    """The ring's arithmetic on plain samples: rates over each step, a queue's null where
    it was not tracked, a counter that restarted (queue re-created) never negative."""
    from erqpy_http import history

    data = {}
    ring = history._ring(data)["tiers"]["5m"]
    # (time, (put, taken, expired, failed, depth, open, connections), {queue: (put, taken, depth, open)})
    ring.extend([
        (100.0, (0, 0, 0, 0, 0, 0, 1), {"a": (0, 0, 0, 0)}),
        (101.0, (10, 4, 0, 2, 6, 1, 2), {"a": (10, 4, 6, 1)}),
        (103.0, (30, 4, 2, 2, 24, 0, 2), {}),
        (104.0, (31, 5, 2, 2, 24, 0, 2), {"a": (1, 0, 1, 0)}),
        (105.0, (31, 5, 2, 2, 24, 0, 2), {"a": (0, 0, 1, 0)}),
    ])
    server = history.series(data, "5m")
    queue = history.series(data, "5m", "a")

    assert [101.0, 103.0, 104.0, 105.0] == server["t"]
    assert [10.0, 10.0, 1.0, 0.0] == server["in"]
    assert [4.0, 0.0, 1.0, 0.0] == server["out"]
    assert [0.0, 1.0, 0.0, 0.0] == server["expired"] and 2.0 == server["failed"][0]
    assert [6, 24, 24, 24] == server["depth"] and [2, 2, 2, 2] == server["connections"]
    assert [10.0, None, None, 0.0] == queue["in"]  # not tracked at 103: no rate either side
    assert [6, None, 1, 1] == queue["depth"]
    try:
        history.series(data, "1w")
    except ValueError as exc:
        assert "5m, 1h, 24h" in str(exc)
    else:
        raise AssertionError("an unknown window was accepted")


def test_consumers_lists_a_websocket_consumer_and_its_held_jobs(http_server):
    """A /ws/q consumer holding two jobs is a holder of kind websocket, at its address;
    gone once its socket closes (its jobs are back on the queue)."""
    from contextlib import closing

    from ws_helpers import fill, receive_type, subscribed

    server = http_server()
    fill(server, "wsheld", 3)
    with closing(subscribed(server, "wsheld", prefetch=2)) as sock:
        jobs = [receive_type(sock, "job") for _ in range(2)]
        wait_until(lambda: any(h["kind"] == "websocket" for h in server.get("/consumers").json()["holders"]),
                   timeout=10, what="the WebSocket consumer in the view")
        [held] = [h for h in server.get("/consumers").json()["holders"] if h["kind"] == "websocket"]
        local = sock.sock.getsockname()
    assert 2 == len(jobs) and 2 == held["open_reads"]
    assert [{"queue": "wsheld", "count": 2}] == [{k: r[k] for k in ("queue", "count")} for r in held["queues"]]
    assert f"{local[0]}:{local[1]}" == held["address"]
    wait_until(lambda: not server.get("/consumers").json()["holders"], timeout=10,
               what="the consumer to leave the view when its socket closed")
