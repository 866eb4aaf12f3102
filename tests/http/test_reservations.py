"""Reliable reads over HTTP: ``GET /q/NAME?reserve=1``, then confirm or abort by id; an
unconfirmed reservation returns to the queue after its lease, a reload or a crash."""


from http_helpers import wait_until


def reserve(server, queue, **params):
    query = "&".join(f"{k}={v}" for k, v in {"reserve": 1, **params}.items())
    reply = server.post(f"/q/{queue}/take?{query}")
    assert 200 == reply.status_code, reply.text
    return reply.json()


def test_reserve_returns_the_job_and_an_id_and_hides_the_job(api):
    """A reserved job is out of the queue (not fetchable) but not gone."""
    api.enqueue("res1", {"work": 1})

    reply = api.post("/q/res1/take?reserve=1")
    body = reply.json()
    other = api.post("/q/res1/take")
    info = api.get("/j/res1").json()["stats"]

    assert {"work": 1} == body["job"]
    assert "res1" == body["queue"]
    assert body["id"] == reply.headers["X-Erqpy-Reservation"]
    assert 30000 == body["lease_ms"]
    assert 404 == other.status_code
    assert (0, 1, 1) == (info["items"], info["open_transactions"], info["reservations"])


def test_confirm_removes_the_job_for_good(api):
    """Confirm answers 200 once; the job never comes back; a second confirm is a 404."""
    api.enqueue("res2", {"work": 2})
    rid = reserve(api, "res2")["id"]

    confirmed = api.post(f"/q/res2/confirm/{rid}")
    again = api.post(f"/q/res2/confirm/{rid}")

    assert (200, {"queue": "res2", "id": rid, "confirmed": True}) == (confirmed.status_code, confirmed.json())
    assert 404 == again.status_code
    assert "no such reservation" in again.json()["error"]
    assert 0 == api.get("/j/res2").json()["stats"]["open_transactions"]
    assert 404 == api.post("/q/res2/take").status_code


def test_abort_puts_the_job_back_at_the_head(api):
    """An aborted job is the next one fetched, ahead of jobs posted after it."""
    api.enqueue("res3", {"n": 1})
    api.enqueue("res3", {"n": 2})
    rid = reserve(api, "res3")["id"]

    aborted = api.post(f"/q/res3/abort/{rid}")

    assert (200, {"queue": "res3", "id": rid, "aborted": True}) == (aborted.status_code, aborted.json())
    assert {"n": 1} == api.post("/q/res3/take").json()
    assert {"n": 2} == api.post("/q/res3/take").json()


def test_an_unconfirmed_reservation_returns_after_its_lease(api):
    """lease=300 ms: the job is back in the queue soon after, and the id is dead."""
    api.enqueue("res4", {"lease": True})
    rid = reserve(api, "res4", lease=300)["id"]

    assert wait_until(lambda: api.depth("res4") == 1, timeout=10)
    late = api.post(f"/q/res4/confirm/{rid}")

    assert 404 == late.status_code
    assert {"lease": True} == api.post("/q/res4/take").json()


def test_confirm_on_the_wrong_queue_or_an_unknown_id_is_a_404(api):
    """An id belongs to its queue; made-up ids are unknown."""
    api.enqueue("res5", 1)
    api.enqueue("res5-other", 1)
    rid = reserve(api, "res5")["id"]

    wrong_queue = api.post(f"/q/res5-other/confirm/{rid}")
    made_up = api.post("/q/res5/abort/nonsense")
    no_queue = api.post(f"/q/res5-missing/confirm/{rid}")

    assert 404 == wrong_queue.status_code
    assert 404 == made_up.status_code
    assert (404, {"error": "no such queue"}) == (no_queue.status_code, no_queue.json())
    assert 200 == api.post(f"/q/res5/confirm/{rid}").status_code


def test_batch_reserve_and_batch_confirm(api):
    """GET /qb?reserve=1 gives ids; POST /qb/NAME/confirm settles them and reports unknown ids."""
    api.post("/qb/res6", json={"jobs": ["a", "b", "c"]})

    batch = api.post("/qb/res6/take?batch_size=2&reserve=1").json()
    ids = [entry["id"] for entry in batch]
    settled = api.post("/qb/res6/confirm", json={"ids": ids + ["unknown-id"]})
    rest = api.post("/qb/res6/take?reserve=1").json()
    aborted = api.post("/qb/res6/abort", json={"ids": [rest[0]["id"]]})

    assert ["a", "b"] == [entry["job"] for entry in batch]
    assert {"queue": "res6", "confirmed": ids, "unknown": ["unknown-id"]} == settled.json()
    assert {"queue": "res6", "aborted": [rest[0]["id"]], "unknown": []} == aborted.json()
    assert "c" == api.post("/q/res6/take").json()


def test_batch_settle_needs_a_list_of_ids(api):
    """ids must be a non-empty array of strings."""
    api.enqueue("res7", 1)
    for body in ({"ids": []}, {"ids": [1]}, {"id": "x"}, ["x"]):
        reply = api.post("/qb/res7/confirm", json=body)
        assert 400 == reply.status_code, body


def test_reserving_on_a_paused_queue_is_a_409(api):
    """A paused queue gives no jobs, reserved or not."""
    api.enqueue("res8", 1)
    api.post("/control/res8", json={"paused": True})

    reply = api.post("/q/res8/take?reserve=1")
    api.post("/control/res8", json={"paused": False})

    assert (409, {"error": "queue is paused"}) == (reply.status_code, reply.json())


def test_too_many_reservations_is_a_429(http_server):
    """max_reservations = 2: a third reservation is refused until one is settled."""
    server = http_server({"max_reservations": 2})
    server.post("/qb/cap", json={"jobs": [1, 2, 3]})
    first = reserve(server, "cap")["id"]
    reserve(server, "cap")

    refused = server.post("/q/cap/take?reserve=1")
    server.post(f"/q/cap/confirm/{first}")
    allowed = server.post("/q/cap/take?reserve=1")

    assert 429 == refused.status_code
    assert "max_reservations" in refused.json()["error"]
    assert 200 == allowed.status_code


def test_deleting_the_queue_ends_its_reservations(api):
    """After DELETE /queues/NAME, its reservation ids are unknown."""
    api.enqueue("res9", 1)
    rid = reserve(api, "res9")["id"]

    api.delete("/queues/res9")
    api.enqueue("res9", 2)  # a new queue with the same name
    reply = api.post(f"/q/res9/confirm/{rid}")

    assert 404 == reply.status_code
    assert 1 == api.depth("res9")


def test_reservations_survive_a_code_reload(http_server):
    """erqctl reload swaps the plugin's code; a reservation made before is confirmed after."""
    server = http_server()
    server.enqueue("reload-res", {"keep": 1})
    rid = reserve(server, "reload-res")["id"]

    result = server.srv.ctl("reload", check=True)
    confirmed = server.post(f"/q/reload-res/confirm/{rid}")

    assert "generation" in result.stdout
    assert 200 == confirmed.status_code
    assert 0 == server.get("/j/reload-res").json()["stats"]["open_transactions"]


def test_a_reserved_job_comes_back_after_a_crash(http_server):
    """SIGKILL while a job is reserved: after restart it is in the queue again (at least once)."""
    server = http_server()
    server.enqueue("crash-res", {"important": True})
    reserve(server, "crash-res")

    server.crash_and_start()

    assert {"important": True} == server.post("/q/crash-res/take").json()


def test_a_confirmed_job_stays_gone_after_a_crash(http_server):
    """SIGKILL after a confirm: the job does not come back."""
    server = http_server(args=("--fsync", "always"))
    server.enqueue("crash-done", {"done": True})
    rid = reserve(server, "crash-done")["id"]
    assert 200 == server.post(f"/q/crash-done/confirm/{rid}").status_code

    server.crash_and_start()

    assert 404 == server.post("/q/crash-done/take").status_code


def test_lease_of_a_batch_reservation_is_honoured(api):
    """Each job of a reserved batch has the lease asked for and comes back after it."""
    api.post("/qb/res10", json={"jobs": [1, 2]})

    api.post("/qb/res10/take?reserve=1&lease=200")

    assert wait_until(lambda: api.depth("res10") == 2, timeout=10)
    assert [1, 2] == [api.post("/q/res10/take").json(), api.post("/q/res10/take").json()]
