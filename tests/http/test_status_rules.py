"""The server status rules hold alike on every front end (memcache, HTTP, erqctl), since
one operations layer enforces them: READONLY refuses writes (flush_expired and
flush_all_expired among them: they remove journaled items), QUIESCENT refuses reads too,
and neither refuses the settling of reads already handed out.  One server with HTTP on;
each test restores UP."""

import contextlib

import pytest

from http_helpers import start_http_server


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    server = start_http_server(tmp_path_factory.mktemp("status") / "data")
    yield server
    server.stop()


@contextlib.contextmanager
def status(server, name):
    server.srv.ctl("set-status", name, check=True)
    try:
        yield
    finally:
        server.srv.ctl("set-status", "up", check=True)


def stored(raw, queue, data, exptime=0):
    raw.send(b"set %s 0 %d %d\r\n%s\r\n" % (queue.encode(), exptime, len(data), data))
    assert b"STORED\r\n" == raw.line()


def depths(server):
    return server.get("/queues").json()["queues"]


def memcache_writes(queue):
    return [
        b"set %s 0 0 1\r\nx\r\n" % queue,
        b"delete %s\r\n" % queue,
        b"flush %s\r\n" % queue,
        b"flush_all\r\n",
        b"flush_expired %s\r\n" % queue,
        b"flush_all_expired\r\n",
    ]


def http_writes(queue):
    return [
        ("POST", f"/q/{queue}", {"json": 1}),
        ("PUT", f"/q/{queue}", {"json": 1}),
        ("POST", f"/qb/{queue}", {"json": {"jobs": [1]}}),
        ("DELETE", f"/q/{queue}", {}),
        ("DELETE", f"/queues/{queue}", {}),
    ]


@pytest.mark.parametrize("name", ["readonly", "quiescent"])
def test_every_front_end_refuses_writes_unless_up(both, name):
    queue = f"sr_w_{name}"
    raw = both.srv.raw()
    stored(raw, queue, b"1")
    stored(raw, queue, b"2")
    before = depths(both)

    with status(both, name):
        memcache = [raw.call(line) for line in memcache_writes(queue.encode())]
        http = [both.request(method, path, **kw) for method, path, kw in http_writes(queue)]
        control = [both.srv.ctl(*args) for args in (("flush", queue), ("delete", queue, "--yes"))]
        during = depths(both)

    refusal = f"server is {name}"
    assert [b"SERVER_ERROR %s\r\n" % refusal.encode()] * 6 == memcache
    assert [(503, {"error": refusal})] * 5 == [(r.status_code, r.json()) for r in http]
    assert all(r.returncode != 0 and refusal in r.stderr for r in control), control
    assert (before, 2) == (during, during[queue])
    raw.close()


def test_readonly_serves_every_kind_of_read(both):
    raw = both.srv.raw()
    for data in (b"1", b"2", b"3", b"4"):  # JSON too, for the HTTP reads
        stored(raw, "sr_r", data)
    both.srv.ctl("set-status", "readonly", check=True)
    try:
        peeked = raw.call(b"get sr_r/peek\r\n", b"END\r\n")
        plain = raw.call(b"get sr_r\r\n", b"END\r\n")
        opened = raw.call(b"get sr_r/open\r\n", b"END\r\n")
        closed = raw.call(b"get sr_r/close\r\n", b"END\r\n")
        taken = both.post("/q/sr_r/take")
        reserved = both.post("/q/sr_r/take?reserve=1")
        confirmed = both.post(f"/q/sr_r/confirm/{reserved.json()['id']}")
    finally:
        both.srv.ctl("set-status", "up", check=True)

    assert b"VALUE sr_r/peek 0 1\r\n1\r\nEND\r\n" == peeked
    assert b"VALUE sr_r 0 1\r\n1\r\nEND\r\n" == plain
    assert b"VALUE sr_r/open 0 1\r\n2\r\nEND\r\n" == opened
    assert b"END\r\n" == closed
    assert (200, 3) == (taken.status_code, taken.json())
    assert (200, 4) == (reserved.status_code, reserved.json()["job"])
    assert 200 == confirmed.status_code
    assert 0 == depths(both)["sr_r"]
    raw.close()


def test_quiescent_refuses_reads_but_settles_reads_already_out(both):
    raw = both.srv.raw()
    for data in (b"a", b"b", b"c"):
        stored(raw, "sr_q", data)
    assert raw.call(b"get sr_q/open\r\n", b"END\r\n").startswith(b"VALUE ")
    reservation = both.post("/q/sr_q/take?reserve=1").json()["id"]
    with status(both, "quiescent"):
        memcache = [raw.call(line) for line in (
            b"get sr_q\r\n", b"get sr_q/peek\r\n", b"get sr_q/t=50\r\n", b"gets sr_q\r\n",
            b"monitor sr_q 1\r\n",
        )]
        http = [both.post(path) for path in ("/q/sr_q/take", "/q/sr_q/take?wait=50", "/qb/sr_q/take")]
        closed = raw.call(b"get sr_q/close\r\n")
        confirmed = both.post(f"/q/sr_q/confirm/{reservation}")
        during = depths(both)["sr_q"]

    assert [b"SERVER_ERROR server is quiescent\r\n"] * 5 == memcache
    assert [(503, {"error": "server is quiescent"})] * 3 == [(r.status_code, r.json()) for r in http]
    assert b"END\r\n" == closed
    assert 200 == confirmed.status_code
    assert 1 == during
    assert b"VALUE sr_q 0 1\r\nc\r\nEND\r\n" == raw.call(b"get sr_q\r\n", b"END\r\n")
    raw.close()


def test_every_front_end_reports_the_same_depth(both):
    """memcache stats, erqctl, HTTP /queues, /j and /stats: one depth, counting the items
    read behind on disk as well as those in memory."""
    raw = both.srv.raw()
    for n in range(5):
        stored(raw, "sr_depth", b"%d" % n)
    assert raw.call(b"get sr_depth/open\r\n", b"END\r\n").startswith(b"VALUE ")

    stats = raw.call(b"stats\r\n", b"END\r\n")
    memcache = int(stats.split(b"STAT queue_sr_depth_items ")[1].split(b"\r\n")[0])
    control = dict(line.split() for line in both.srv.ctl("queues", check=True).stdout.splitlines())
    http_list = depths(both)["sr_depth"]
    http_info = both.get("/j/sr_depth").json()["job_count"]
    http_stats = both.get("/stats/sr_depth").json()["size"]

    assert [4] * 5 == [memcache, int(control["sr_depth"]), http_list, http_info, http_stats]
    raw.close()
