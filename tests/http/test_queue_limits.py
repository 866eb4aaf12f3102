"""The HTTP API and the queue limits of the data port: a take creates no queue, a POST
beyond max_queues or max_fanout_children gets 507 naming the setting."""

import os
import threading

from http_helpers import wait_until


def test_take_of_a_missing_queue_is_404_and_creates_nothing(http_server):
    server = http_server({"max_wait_ms": 5000})

    plain = server.post("/q/ghost/take")
    waited = server.post("/q/ghost/take?wait=50")
    batch = server.post("/qb/ghost/take?batch_size=5")

    assert [404, 404, 404] == [plain.status_code, waited.status_code, batch.status_code]
    assert 404 == server.get("/j/ghost").status_code
    assert not any(name.startswith("ghost") for name in os.listdir(server.srv.data_dir))


def test_waiting_take_of_a_missing_queue_is_served_by_the_post_that_creates_it(http_server):
    server = http_server({"max_wait_ms": 20000})
    result = {}

    def fetch():
        result["reply"] = server.post("/q/later/take?wait=15000", timeout=30)

    reader = threading.Thread(target=fetch)
    reader.start()
    probe = server.srv.raw()

    def waiting():
        return b"STAT awaited_waiters 1\r\n" in probe.call(b"stats\r\n", b"END\r\n")

    assert wait_until(waiting)
    server.enqueue("later", {"n": 1})
    reader.join(30)
    probe.close()

    assert (200, {"n": 1}) == (result["reply"].status_code, result["reply"].json())


def test_post_beyond_max_queues_is_507(http_server):
    server = http_server(extra_toml="[server]\nmax_queues = 1\n")
    server.enqueue("first", 1)

    refused = server.post("/q/second", json=2)

    assert 507 == refused.status_code
    assert "too many queues (max_queues is 1)" in refused.text
    assert 404 == server.get("/j/second").status_code


def test_post_to_a_child_beyond_max_fanout_children_is_507(http_server):
    server = http_server(extra_toml="[queues.m]\nmax_fanout_children = 1\n")
    server.enqueue("m+a", 1)

    refused = server.post("/q/m+b", json=2)

    assert 507 == refused.status_code
    assert "max_fanout_children is 1" in refused.text
