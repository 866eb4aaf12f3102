"""Job posts with presque's ``delayed`` (Unix seconds) and a ``priority`` (0..9), and a
post to an alias: passed to the operations layer, as the data port's ``set`` options."""

import time

import pytest

from http_helpers import start_http_server, wait_until


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    data = tmp_path_factory.mktemp("http_schedule") / "data"
    server = start_http_server(data, {"max_wait_ms": 5000},
                               extra_toml='[aliases.fan]\ndestinations = ["fan_a", "fan_b"]\n')
    yield server
    server.stop()


def take(api, queue):
    reply = api.post(f"/q/{queue}/take")
    return reply.json() if reply.status_code == 200 else None


def test_delayed_job_is_not_handed_out_before_its_time(api):
    due = int(time.time()) + 2
    posted = api.post(f"/q/later?delayed={due}", json={"n": 1})

    assert 201 == posted.status_code, posted.text
    assert take(api, "later") is None
    assert 1 == api.get("/stats/later").json()["queues"]["later"]["delayed"]
    wait_until(lambda: take(api, "later") == {"n": 1}, timeout=10, what="the job to come due")
    assert time.time() >= due


def test_batch_with_delayed_in_the_past_is_served_at_once(api):
    posted = api.post(f"/qb/pastq?delayed={int(time.time()) - 10}", json={"jobs": [1, 2]})

    assert 201 == posted.status_code, posted.text
    assert [1, 2] == [take(api, "pastq"), take(api, "pastq")]


def test_priority_is_served_most_urgent_first(api):
    api.post("/q/prio", json="default")
    api.post("/q/prio?priority=9", json="low")
    api.post("/qb/prio?priority=0", json={"jobs": ["urgent"]})

    assert ["urgent", "default", "low"] == [take(api, "prio") for _ in range(3)]


@pytest.mark.parametrize("query, error", [
    ("priority=10", "priority must be at most 9"),
    ("priority=x", "priority must be an integer"),
    ("delayed=-5", "delayed must be at least 0"),
    (f"delayed={int(time.time()) + 20 * 365 * 86400}", "delay must be at most"),
])
def test_bad_delayed_or_priority_is_a_400_and_nothing_is_queued(api, query, error):
    reply = api.post(f"/q/badopts?{query}", json=1)

    assert 400 == reply.status_code
    assert error in reply.json()["error"]
    assert take(api, "badopts") is None


def test_a_post_to_an_alias_reaches_every_destination(api):
    posted = api.post("/q/fan", json={"to": "both"})

    assert 201 == posted.status_code, posted.text
    assert {"to": "both"} == take(api, "fan_a") == take(api, "fan_b")
    assert take(api, "fan") is None
