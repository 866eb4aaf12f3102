"""``erqctl nodes`` and the HTTP plugin's ``GET /nodes``: the live engine-mode nodes on
one real redis-server, their leases and the open reads each holds; a journaled server
says it has no nodes."""

import json

from tests.conftest import wait_until
from tests.engine.test_engine_server import LEASE_TTL, engine_config
from tests.http.http_helpers import start_http_server


def nodes_json(server) -> dict:
    result = server.ctl("--json", "nodes", check=True)
    return json.loads(result.stdout)


def test_erqctl_nodes_lists_each_live_node_with_its_open_reads(make_server, tmp_path, redis_primary, key_prefix):
    a, b = (make_server("--config", engine_config(tmp_path, name, redis_primary, key_prefix)) for name in "ab")
    a.raw().call(b"set jobs 0 0 3\r\none\r\n")
    holder = a.raw()
    assert b"VALUE jobs/open 0 3\r\none\r\nEND\r\n" == holder.call(b"get jobs/open\r\n", b"END\r\n")

    seen_by_b = nodes_json(b)

    assert seen_by_b["engine"] is True
    by_pid = {node["pid"]: node for node in seen_by_b["nodes"]}
    assert {a.proc.pid, b.proc.pid} == set(by_pid)
    assert (1, 0) == (by_pid[a.proc.pid]["open_reads"], by_pid[b.proc.pid]["open_reads"])
    assert (False, True) == (by_pid[a.proc.pid]["self"], by_pid[b.proc.pid]["self"])
    assert all(0 < node["lease_ms_left"] <= LEASE_TTL * 1000 for node in seen_by_b["nodes"])
    human = b.ctl("nodes", check=True).stdout
    assert "(this node)" in human and str(a.proc.pid) in human

    a.kill9()
    wait_until(lambda: [node["pid"] for node in nodes_json(b)["nodes"]] == [b.proc.pid], timeout=LEASE_TTL * 10,
               what="the killed node to leave the list")


def test_erqctl_nodes_on_a_journaled_server_says_there_are_none(server):
    result = server.ctl("nodes", check=True)

    assert "not in engine mode" in result.stdout
    assert {"engine": False, "nodes": [], "ok": True} == nodes_json(server)


def test_http_nodes_lists_the_live_nodes(tmp_path, redis_primary, key_prefix):
    storage = f'[storage]\nbackend = "redis"\nurl = "{redis_primary.url}"\nprefix = "{key_prefix}"\n'
    node = start_http_server(tmp_path / "data", extra_toml=storage)
    try:
        reply = node.get("/nodes")
        assert 200 == reply.status_code
        body = reply.json()
        assert body["engine"] is True
        assert [node.srv.proc.pid] == [entry["pid"] for entry in body["nodes"]]
        assert body["nodes"][0]["self"] is True and 0 == body["nodes"][0]["open_reads"]
    finally:
        node.srv.stop()
