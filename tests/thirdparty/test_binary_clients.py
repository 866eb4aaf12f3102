"""Real binary-protocol clients against real erqpy servers (issue 15 item 3): Ruby's
dalli 3.0 (Debian), Node's memjs (npm) and Python's bmemcached (PyPI) each run the
producer/consumer flow (``binary_flow_dalli.rb``, ``binary_flow_memjs.js``,
``binary_clients.bmemcached_flow``: FIFO, flags and serialisation, a blocking get with a
key option, reliable reads closed and dropped by a disconnect, abort, peek, multi-get,
delete, stats, two servers), and each step's result is checked here, on what the client
saw and on what the servers hold."""

import pytest
from binary_clients import bmemcached_flow, dalli_flow, memjs_flow, two_servers  # noqa: F401 (a fixture)

from tests.protocol.proto_helpers import parse_stats

FLOWS = {"dalli": dalli_flow, "memjs": memjs_flow, "bmemcached": bmemcached_flow}
#: The flag each client stores with a serialised object: dalli's Marshal flag, the
#: flow's JSON flag for memjs, bmemcached's pickle flag.
OBJECT_FLAGS = {"dalli": 1, "memjs": 2, "bmemcached": 1}


@pytest.fixture(scope="module", params=sorted(FLOWS))
def flow(request, two_servers):  # noqa: F811 (the fixture imported above)
    """One client's flow, run once per module; (client name, what it saw, prefix)."""
    name = request.param
    prefix = f"bin_{name}"
    return name, FLOWS[name](two_servers, prefix), prefix


def text_get(srv, key: str) -> bytes:
    raw = srv.raw()
    try:
        return raw.call(b"get %s\r\n" % key.encode(), b"END\r\n")
    finally:
        raw.close()


def server_stats(srv) -> dict:
    raw = srv.raw()
    try:
        return parse_stats(raw.call(b"stats\r\n", b"END\r\n"))
    finally:
        raw.close()


def test_items_come_out_in_the_order_they_went_in(flow):
    _name, seen, _prefix = flow
    assert ["a", "b", "c", None] == seen["fifo"]


def test_a_serialised_object_round_trips_with_its_flags_stored(flow, two_servers):  # noqa: F811
    name, seen, prefix = flow
    assert seen["object"] is True
    header = text_get(two_servers[0], f"{prefix}_flags").split(b"\r\n", 1)[0]
    assert b"VALUE %s_flags %d" % (prefix.encode(), OBJECT_FLAGS[name]) == header.rsplit(b" ", 1)[0]


def test_a_blocking_get_with_a_key_option_waits_for_the_item(flow):
    _name, seen, _prefix = flow
    assert "late" == seen["blocking"]["value"]
    assert 250 <= seen["blocking"]["waited_ms"] < 3000


def test_a_reliable_read_closed_is_gone(flow):
    _name, seen, _prefix = flow
    assert ["x", None, None] == seen["close"]


def test_a_reliable_read_dropped_by_a_disconnect_goes_back(flow):
    _name, seen, _prefix = flow
    assert ["y", "y"] == seen["disconnect"]


def test_an_aborted_read_goes_back_to_the_head(flow):
    _name, seen, _prefix = flow
    assert ["z", None, "z"] == seen["abort"]


def test_a_peek_leaves_the_item(flow):
    _name, seen, _prefix = flow
    assert ["p", "p", None] == seen["peek"]


def test_a_multi_get_returns_the_heads_of_the_queues_that_have_one(flow):
    _name, seen, prefix = flow
    assert {f"{prefix}_m1": "1", f"{prefix}_m2": "2"} == seen["multi"]


def test_delete_removes_the_queue(flow, two_servers):  # noqa: F811
    _name, seen, prefix = flow
    assert [True, None] == seen["delete"]
    assert f"queue_{prefix}_del_items" not in server_stats(two_servers[0])


def test_stats_show_the_queue_depth(flow):
    _name, seen, _prefix = flow
    assert "2" == seen["stats_items"]


def test_two_servers_share_the_queues_and_every_item_comes_back(flow, two_servers):  # noqa: F811
    _name, seen, prefix = flow
    names = [f"{prefix}_two{i}" for i in range(1, 21)]
    assert names == seen["two_servers"]
    # Each server held some of the queues: their total_items say where the sets went.
    held = [sum(1 for key in server_stats(srv) if key.startswith(f"queue_{prefix}_two") and key.endswith("_total_items"))
            for srv in two_servers]
    assert 20 == sum(held) and all(held), held
