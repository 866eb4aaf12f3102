"""A real meta-protocol client, ``meta-memcache`` from PyPI, as a queue client of erqpy:
the producer/consumer flow of issue 15 (FIFO, flags and serialisation, blocking get, reliable
reads closed and dropped by a disconnect, abort, peek, multi-get, delete, stats, two
servers) with the client's own high-level calls; Kestrel's options ride in the key."""

import threading
import time

import pytest
from meta_client_helpers import MetaClient, queue_name

from tests.conftest import ErqServer, wait_until


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = tmp_path_factory.mktemp("meta_client")
    started = [ErqServer(base / f"data{index}").start() for index in range(2)]
    yield started
    for srv in started:
        srv.stop()


@pytest.fixture
def client(servers):
    return MetaClient(servers[0].address)


@pytest.fixture
def q(request):
    return queue_name(request.node.name)


def queue_field(client, srv, queue, field):
    fields = client.queue(srv.address, queue)
    assert fields is not None, f"no queue {queue}"
    return fields[field]


def test_items_come_out_in_the_order_they_went_in(client, q):
    for index in range(5):
        assert client.cache.set(q, f"job {index}".encode(), ttl=0)

    assert [f"job {index}".encode() for index in range(5)] == [client.cache.get(q) for _ in range(5)]
    assert client.cache.get(q) is None


def test_values_keep_their_type_through_the_item_flags(servers, client, q):
    """meta-memcache serialises by type and says which in the client flags (``F``)."""
    values = [b"raw bytes", "text", 42, {"job": "resize", "sizes": [1, 2]}]
    for value in values:
        assert client.cache.set(q, value, ttl=0)

    assert values == [client.cache.get(q) for _ in values]


def test_a_ttl_expires_the_item(client, q):
    assert client.cache.set(q, b"stale", ttl=1)
    assert client.cache.set(q, b"fresh", ttl=600)
    time.sleep(1.1)  # past the first item's TTL: expiry is a matter of time

    assert b"fresh" == client.cache.get(q)


def test_a_get_with_a_wait_option_blocks_until_a_producer_sets(servers, client, q):
    producer = MetaClient(servers[0].address)
    assert producer.cache.set(q, b"warm up", ttl=0) and b"warm up" == producer.cache.get(q)

    def produce():
        wait_until(lambda: queue_field(producer, servers[0], q, "waiters") == 1, what="the blocked get")
        producer.cache.set(q, b"late job", ttl=0)

    thread = threading.Thread(target=produce)
    thread.start()
    started = time.monotonic()
    got = client.cache.get(f"{q}/t=8000")
    thread.join(timeout=20)

    assert b"late job" == got
    assert time.monotonic() - started < 8
    assert client.cache.get(f"{q}/t=100") is None  # and a wait that runs out is a miss


def test_a_reliable_read_is_confirmed_by_close(servers, client, q):
    client.cache.set(q, b"work", ttl=0)

    assert b"work" == client.cache.get(f"{q}/open")
    assert 1 == queue_field(client, servers[0], q, "open_transactions")
    client.cache.get(f"{q}/close")

    assert 0 == queue_field(client, servers[0], q, "open_transactions")
    assert 0 == queue_field(client, servers[0], q, "items")


def test_a_reliable_read_comes_back_when_the_consumer_drops(servers, client, q):
    consumer = MetaClient(servers[0].address)
    client.cache.set(q, b"do not lose me", ttl=0)
    assert b"do not lose me" == consumer.cache.get(f"{q}/open")

    consumer.drop_connections()
    wait_until(lambda: queue_field(client, servers[0], q, "open_transactions") == 0, what="the give-back")

    assert b"do not lose me" == client.cache.get(q)


def test_abort_gives_the_read_back_to_the_head(client, q):
    client.cache.set(q, b"first", ttl=0)
    client.cache.set(q, b"second", ttl=0)
    assert b"first" == client.cache.get(f"{q}/open")

    client.cache.get(f"{q}/abort")

    assert [b"first", b"second"] == [client.cache.get(q), client.cache.get(q)]


def test_close_open_confirms_one_read_and_opens_the_next(servers, client, q):
    for job in (b"a", b"b"):
        client.cache.set(q, job, ttl=0)
    assert b"a" == client.cache.get(f"{q}/open")

    assert b"b" == client.cache.get(f"{q}/close/open")
    client.cache.get(f"{q}/close")

    assert 0 == queue_field(client, servers[0], q, "items")
    assert 0 == queue_field(client, servers[0], q, "open_transactions")


def test_peek_leaves_the_item_in_the_queue(servers, client, q):
    client.cache.set(q, b"look", ttl=0)

    assert b"look" == client.cache.get(f"{q}/peek")
    assert b"look" == client.cache.get(f"{q}/peek")

    assert 1 == queue_field(client, servers[0], q, "items")
    assert b"look" == client.cache.get(q)


def test_multi_get_takes_one_item_from_each_queue(client, q):
    names = [f"{q}_{index}" for index in range(3)]
    for name in names[:2]:
        client.cache.set(name, name.encode(), ttl=0)

    got = client.cache.multi_get(names)

    assert {names[0]: names[0].encode(), names[1]: names[1].encode(), names[2]: None} == {
        key.key: value for key, value in got.items()}
    assert {} == {key.key: value for key, value in client.cache.multi_get(names).items() if value is not None}


def test_delete_removes_the_queue(servers, client, q):
    client.cache.set(q, b"x", ttl=0)
    assert 1 == queue_field(client, servers[0], q, "items")

    assert client.cache.delete(q)

    assert client.queue(servers[0].address, q) is None
    assert client.cache.get(q) is None


def test_stats_count_what_the_client_did(servers, client, q):
    before = client.stats(servers[0].address)
    client.cache.set(q, b"one", ttl=0)
    client.cache.set(q, b"two", ttl=0)
    client.cache.get(q)

    after = client.stats(servers[0].address)

    assert 2 == int(after["cmd_set"]) - int(before["cmd_set"])
    assert 1 == int(after["get_hits"]) - int(before["get_hits"])
    assert ("1", "2") == (after[f"queue_{q}_items"], after[f"queue_{q}_total_items"])


def test_two_servers_share_the_queues_by_the_client_s_hash(servers, q):
    both = MetaClient(servers[0].address, servers[1].address)
    names = [f"{q}_{index}" for index in range(40)]
    for name in names:
        assert both.cache.set(name, name.encode(), ttl=0)

    homes = [{name for name in names if both.queue(srv.address, name) is not None} for srv in servers]

    assert set(names) == homes[0] | homes[1] and not homes[0] & homes[1]
    assert homes[0] and homes[1], "the hash ring put every queue on one server"
    assert [name.encode() for name in names] == [both.cache.get(name) for name in names]
