"""Enqueue and dequeue over HTTP (``/q`` and ``/qb``), against a real server, including
how HTTP and memcache clients see each other's items."""

import base64
import socket
import threading
import time

from http_helpers import wait_until


def test_post_then_get_returns_the_job_exactly_as_posted(api):
    """A posted JSON job comes back byte for byte, as application/json, and only once."""
    body = b'{"task": "resize", "sizes": [1, 2, 3], "unicode": "\xc3\xa9"}'

    posted = api.post("/q/basic", data=body, headers={"Content-Type": "application/json"})
    fetched = api.post("/q/basic/take")
    again = api.post("/q/basic/take")

    assert (201, {"queue": "basic", "queued": 1}) == (posted.status_code, posted.json())
    assert (200, body) == (fetched.status_code, fetched.content)
    assert "application/json" == fetched.headers["Content-Type"]
    assert (404, {"error": "no job"}) == (again.status_code, again.json())


def test_jobs_come_out_in_the_order_they_went_in(api):
    """FIFO over HTTP."""
    for n in range(5):
        api.enqueue("fifo", {"n": n})

    got = [api.post("/q/fifo/take").json()["n"] for _ in range(5)]

    assert [0, 1, 2, 3, 4] == got


def test_put_enqueues_like_post(api):
    """PUT /q/NAME (presque's re-insert of a failed job) enqueues the job."""
    reply = api.put("/q/putq", json={"retry": 1})

    assert 201 == reply.status_code
    assert {"retry": 1} == api.post("/q/putq/take").json()


def test_post_without_json_content_type_is_refused_with_415(api):
    """presque's rule: a job must be sent as application/json."""
    reply = api.post("/q/ctype", data=b'{"a": 1}', headers={"Content-Type": "text/plain"})

    assert (415, {"error": "content-type must be set to application/json"}) == (reply.status_code, reply.json())
    assert 404 == api.get("/j/ctype").status_code  # a refused post creates no queue


def test_post_of_invalid_json_is_refused_with_400(api):
    """A body that is not JSON is refused and nothing is queued."""
    reply = api.post("/q/badjson", data=b"{not json", headers={"Content-Type": "application/json"})

    assert (400, {"error": "job is not valid JSON"}) == (reply.status_code, reply.json())
    assert 404 == api.get("/j/badjson").status_code


def test_post_of_nan_is_refused_because_it_is_not_json(api):
    """NaN is accepted by Python's parser but is not JSON; it is refused."""
    reply = api.post("/q/nanq", data=b"NaN", headers={"Content-Type": "application/json"})

    assert 400 == reply.status_code


def test_post_with_an_empty_body_says_the_job_is_missing(api):
    """An empty body gets presque's message."""
    reply = api.post("/q/emptybody", data=b"", headers={"Content-Type": "application/json"})

    assert (400, {"error": "job is missing"}) == (reply.status_code, reply.json())


def test_presque_uniq_is_refused_not_ignored(api):
    """An option erqpy does not implement is refused so no client relies on it silently."""
    uniq = api.post("/q/opts?uniq=abc", json={"a": 1})

    assert (400, {"error": "uniq is not supported"}) == (uniq.status_code, uniq.json())


def test_bad_queue_name_is_a_400(api):
    """A name with a dot (a file name on disk) is refused on every route."""
    for method, path in (("POST", "/q/a.b/take"), ("POST", "/q/a.b"), ("GET", "/j/a~b"), ("DELETE", "/q/a.b"),
                         ("POST", "/qb/+x/take")):
        reply = api.request(method, path, json={"a": 1})
        assert (400, {"error": "bad queue name"}) == (reply.status_code, reply.json()), (method, path)


def test_job_over_max_item_size_is_a_413(api):
    """[queues.small] max_item_size = 64: a bigger job is refused."""
    reply = api.post("/q/small", json={"pad": "x" * 100})

    assert 413 == reply.status_code
    assert "max_item_size" in reply.json()["error"]


def test_full_queue_is_a_507_and_keeps_what_it_had(api):
    """[queues.small] max_items = 2: the third job is refused."""
    api.delete("/q/small")
    api.enqueue("small", 1)
    api.enqueue("small", 2)

    reply = api.post("/q/small", json=3)

    assert (507, {"error": "queue is full"}) == (reply.status_code, reply.json())
    assert 2 == api.depth("small")
    api.delete("/q/small")


def test_ttl_expires_a_job(api):
    """?ttl=1: the job is gone after a second."""
    api.post("/q/ttlq?ttl=1", json={"short": True})
    api.enqueue("ttlq-keep", {"long": True})

    time.sleep(1.3)

    assert 404 == api.post("/q/ttlq/take").status_code
    assert 200 == api.post("/q/ttlq-keep/take").status_code


def test_http_job_is_readable_by_a_memcache_client(api):
    """What HTTP posts, a pymemcache get returns: the same JSON text."""
    api.post("/q/interop1", data=b'{"from": "http"}', headers={"Content-Type": "application/json"})
    client = api.srv.client()

    assert b'{"from": "http"}' == client.get("interop1")


def test_memcache_items_are_fetched_over_http(api):
    """A JSON item set by pymemcache is a job; a binary one comes as octet-stream."""
    client = api.srv.client(default_noreply=False)
    client.set("interop2", b'{"from": "memcache"}')
    client.set("interop2", b"\xff\x00binary")

    first = api.post("/q/interop2/take")
    second = api.post("/q/interop2/take")

    assert ({"from": "memcache"}, "application/json") == (first.json(), first.headers["Content-Type"])
    assert (b"\xff\x00binary", "application/octet-stream") == (second.content, second.headers["Content-Type"])


def test_batch_post_then_batch_fetch(api):
    """POST /qb with {"jobs": [...]} then GET /qb?batch_size=N returns envelopes in order."""
    posted = api.post("/qb/batch", json={"jobs": [{"n": 1}, {"n": 2}, {"n": 3}]})
    first = api.post("/qb/batch/take?batch_size=2")
    rest = api.post("/qb/batch/take?batch_size=10")
    empty = api.post("/qb/batch/take")

    assert (201, {"queue": "batch", "queued": 3}) == (posted.status_code, posted.json())
    assert [{"job": {"n": 1}}, {"job": {"n": 2}}] == first.json()
    assert [{"job": {"n": 3}}] == rest.json()
    assert (404, {"error": "no job"}) == (empty.status_code, empty.json())


def test_batch_fetch_gives_binary_items_as_base64(api):
    """A non-JSON memcache item appears in a batch as data_base64."""
    api.srv.client(default_noreply=False).set("batchbin", b"\x00\x01\x02")

    reply = api.post("/qb/batchbin/take")

    assert [{"data_base64": base64.b64encode(b"\x00\x01\x02").decode()}] == reply.json()


def test_batch_post_errors(api):
    """jobs must be a non-empty array within max_batch; the body must be JSON."""
    not_array = api.post("/qb/batcherr", json={"jobs": "x"})
    empty = api.post("/qb/batcherr", json={"jobs": []})
    too_many = api.post("/qb/batcherr", json={"jobs": list(range(51))})
    missing = api.post("/qb/batcherr", data=b"", headers={"Content-Type": "application/json"})
    wrong_type = api.post("/qb/batcherr", data=b"jobs", headers={"Content-Type": "text/plain"})

    assert 400 == not_array.status_code
    assert 400 == empty.status_code
    assert (400, {"error": "at most 50 jobs per batch"}) == (too_many.status_code, too_many.json())
    assert (400, {"error": "jobs are missing"}) == (missing.status_code, missing.json())
    assert 415 == wrong_type.status_code
    assert 404 == api.get("/j/batcherr").status_code


def test_batch_post_into_a_full_queue_says_how_many_went_in(api):
    """[queues.small] max_items = 2: a batch of 3 stores 2 and answers 507 with queued = 2."""
    api.delete("/q/small")

    reply = api.post("/qb/small", json={"jobs": [1, 2, 3]})

    assert (507, {"error": "queue is full", "queued": 2}) == (reply.status_code, reply.json())
    assert 2 == api.depth("small")
    api.delete("/q/small")


def test_bad_numbers_in_the_query_are_400(api):
    """wait, batch_size, lease and ttl must be integers in range."""
    for path in ("/q/nums/take?wait=soon", "/q/nums/take?wait=-1", "/qb/nums/take?batch_size=0",
                 "/q/nums/take?reserve=1&lease=0", "/q/nums/take?reserve=maybe"):
        reply = api.post(path)
        assert 400 == reply.status_code, path
        assert "error" in reply.json()
    assert 400 == api.post("/q/nums?ttl=x", json=1).status_code


def test_wait_returns_a_job_that_arrives_during_the_wait(api):
    """GET ?wait=ms blocks until a memcache client sets an item."""
    api.enqueue("waitq", 0)  # a GET creates no queue, and only a queue shows its waiters
    assert 200 == api.post("/q/waitq/take").status_code

    def later():
        wait_until(lambda: waiters(api, "waitq") == 1, what="the take to wait")
        api.srv.client(default_noreply=False).set("waitq", b'{"late": true}')

    setter = threading.Thread(target=later)
    setter.start()
    started = time.monotonic()
    reply = api.post("/q/waitq/take?wait=4000")
    elapsed = time.monotonic() - started
    setter.join()

    assert (200, {"late": True}) == (reply.status_code, reply.json())
    assert elapsed < 4.0


def test_wait_on_an_empty_queue_ends_with_404_after_the_wait(api):
    """Nothing arrives: 404 no job, after waiting (generously bounded)."""
    started = time.monotonic()
    reply = api.post("/q/waitempty/take?wait=300")
    elapsed = time.monotonic() - started

    assert (404, {"error": "no job"}) == (reply.status_code, reply.json())
    assert elapsed >= 0.29


def waiters(api, queue) -> int:
    reply = api.get(f"/j/{queue}")
    return reply.json()["stats"]["waiters"] if reply.status_code == 200 else 0


def test_a_client_that_gives_up_waiting_does_not_take_an_item(api):
    """A waiting HTTP client that disconnects leaves the line at once: the next item stays."""
    api.enqueue("gaveup", 0)  # a GET creates no queue, and only a queue shows its waiters
    assert 200 == api.post("/q/gaveup/take").status_code
    host, port = api.base[len("http://"):].split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"POST /q/gaveup/take?wait=5000 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
    assert wait_until(lambda: waiters(api, "gaveup") == 1)
    sock.close()
    closed = time.monotonic()
    assert wait_until(lambda: waiters(api, "gaveup") == 0, timeout=5)
    left_after = time.monotonic() - closed

    api.enqueue("gaveup", {"kept": True})

    assert 1 == api.depth("gaveup")
    assert left_after < 2.5  # well before its 5 s wait would have ended


def test_readonly_server_refuses_posts_and_quiescent_refuses_gets(api):
    """The server status (erqctl set-status) applies to HTTP as to the data port."""
    api.enqueue("statusq", 1)
    try:
        api.srv.ctl("set-status", "readonly", check=True)
        post = api.post("/q/statusq", json=2)
        get = api.post("/q/statusq/take")
        api.srv.ctl("set-status", "quiescent", check=True)
        quiet = api.post("/q/statusq/take")
    finally:
        api.srv.ctl("set-status", "up", check=True)

    assert (503, {"error": "server is readonly"}) == (post.status_code, post.json())
    assert (200, 1) == (get.status_code, get.json())
    assert (503, {"error": "server is quiescent"}) == (quiet.status_code, quiet.json())


def test_fanout_children_receive_http_posts(api):
    """A post to master m also feeds each existing child m+x, as a memcache set does."""
    api.post("/q/fan+audit/take")  # creates the child

    api.enqueue("fan", {"event": 1})

    assert {"event": 1} == api.post("/q/fan+audit/take").json()
    assert {"event": 1} == api.post("/q/fan/take").json()


def test_fsync_always_acknowledges_after_the_fsync(http_server):
    """Under fsync=always a 201 comes after the journal fsync, which /metrics counts."""
    server = http_server(args=("--fsync", "always"))
    before = server.get("/stats").json()["server"]["fsync_count"]

    server.enqueue("durable", {"safe": True})

    assert server.get("/stats").json()["server"]["fsync_count"] > before


def test_a_ttl_beyond_100_years_is_a_400_not_a_server_error(api):
    """Found by schemathesis: a huge ttl overflowed the journal's 64-bit expiry field."""
    reply = api.post("/q/hugettl?ttl=326075375861127553516306432", json=1)

    assert 400 == reply.status_code
    assert "ttl must be at most" in reply.json()["error"]


def test_a_body_over_max_body_is_refused_at_once_without_reading_it(http_server):
    """A declared 100 MB body against max_body = 2048: 413 and the connection closes,
    without waiting for the client to send the rest."""
    server = http_server({"max_body": 2048})
    host, port = server.base[len("http://"):].split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"POST /q/big HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100000000\r\n\r\n[[[[")
    reply = b""
    while True:
        chunk = sock.recv(65536)  # times out (fails) if the server waits for the body
        if not chunk:
            break
        reply += chunk
    sock.close()

    assert reply.startswith(b"HTTP/1.1 413 ")
    assert reply.endswith(b'{"error":"request body over 2048 bytes"}')
    assert 404 == server.get("/j/big").status_code
