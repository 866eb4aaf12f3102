"""The command rows of PROTOCOL.md through a stock memcache client (pymemcache), with
``default_noreply`` both on (pymemcache's default: writes are fire-and-forget) and off."""

import threading

import pytest
from pymemcache.exceptions import MemcacheClientError, MemcacheUnknownCommandError

from proto_helpers import make_queue, wait_for_waiters

import erqpy


@pytest.fixture(params=[True, False], ids=["noreply", "reply"])
def mc(shared_server, request):
    client = shared_server.client(default_noreply=request.param)
    yield client
    client.close()


def test_set_get_keeps_order_and_flags(mc, q):
    """Items set through pymemcache come back in FIFO order, then the queue is empty."""
    assert mc.set(q, b"first") is True
    assert mc.set(q, b"second", flags=7) is True

    assert b"first" == mc.get(q)
    assert b"second" == mc.get(q)
    assert None is mc.get(q)


def test_flags_are_returned_to_the_client(shared_server, q):
    """A custom deserializer sees the flags that were set (differs from Kestrel)."""
    seen = []

    class Serde:
        def serialize(self, key, value):
            return value, 42

        def deserialize(self, key, value, flags):
            seen.append(flags)
            return value

    client = shared_server.client(serde=Serde(), default_noreply=False)

    assert client.set(q, b"x") is True
    assert b"x" == client.get(q)
    assert [42] == seen
    client.close()


def test_get_many_takes_one_item_per_key(mc, q):
    """get_many over two queues returns the head of each, keyed as requested."""
    other = q + "_b"
    mc.set(q, b"a1")
    mc.set(q, b"a2")
    mc.set(other, b"b1")

    assert {q: b"a1", other: b"b1"} == mc.get_many([q, other])
    assert {q: b"a2"} == mc.get_many([q, other])


def test_gets_returns_a_cas_value(mc, q):
    """gets returns the item with a cas token; two items have different tokens."""
    mc.set(q, b"one")
    mc.set(q, b"two")

    first = mc.gets(q)
    second = mc.gets(q)

    assert (b"one", b"two") == (first[0], second[0])
    assert first[1] != second[1] and first[1].isdigit()
    assert (None, None) == mc.gets(q)


def test_get_with_options_through_pymemcache(mc, q):
    """Keys with options (peek, open, close) work because VALUE echoes the key as sent."""
    mc.set(q, b"job1")
    mc.set(q, b"job2")

    assert b"job1" == mc.get(q + "/peek")
    assert b"job1" == mc.get(q + "/open")
    assert b"job2" == mc.get(q + "/close/open")
    assert None is mc.get(q + "/close")
    assert None is mc.get(q + "/t=1")


def test_blocking_get_through_pymemcache(shared_server, mc, q):
    """A pymemcache get with /t= waits for an item set from another client."""
    make_queue(shared_server, q)  # a blocked read of a missing queue shows in no stats
    result = []
    reader = shared_server.client(default_noreply=False)
    thread = threading.Thread(target=lambda: result.append(reader.get(q + "/t=10000")))
    thread.start()
    wait_for_waiters(shared_server, q, 1)

    mc.set(q, b"woken")
    thread.join(15)

    assert [b"woken"] == result
    reader.close()


def test_binary_payload_round_trips(mc, q):
    """Every byte value, with CRLF and NUL inside, survives a set/get."""
    payload = bytes(range(256)) + b"\r\n\x00\r\nEND\r\n"

    mc.set(q, payload)

    assert payload == mc.get(q)


def test_one_megabyte_item_round_trips(mc, q):
    """A 1 MB item is stored and returned intact."""
    payload = bytes(i % 251 for i in range(1024 * 1024))

    mc.set(q, payload)

    assert payload == mc.get(q)


def test_delete_removes_the_queue(mc, q):
    """delete through pymemcache removes the queue and its items."""
    mc.set(q, b"x")

    assert mc.delete(q) is True

    assert f"queue_{q}_items".encode() not in mc.stats()
    assert None is mc.get(q)


def test_flush_all_reply_is_understood(server):
    """pymemcache's flush_all accepts the OK reply (erqpy follows memcached here)."""
    for noreply in (False, True):
        client = server.client(default_noreply=noreply)
        client.set("a", b"1")
        client.set("b", b"2")

        assert client.flush_all() is True
        assert {} == client.get_many(["a", "b"])
        client.close()


def test_stats_and_version(mc):
    """stats parses into server fields; version names the package after the protocol level."""
    fields = mc.stats()

    assert b"2.4.1 erqpy-%s" % erqpy.__version__.encode() == mc.version()
    assert {b"pid", b"uptime", b"curr_connections", b"cmd_get", b"cmd_set"} <= set(fields)


def test_stats_show_queue_fields(mc, q):
    """A queue set through pymemcache appears in stats with its item count."""
    mc.set(q, b"x")
    mc.set(q, b"y")

    fields = mc.stats()

    assert 2 == fields[f"queue_{q}_items".encode()]


def test_unknown_storage_command_raises_and_the_client_recovers(shared_server, q):
    """pymemcache's add gets ERROR (unknown command); the next call still works."""
    client = shared_server.client(default_noreply=False)

    with pytest.raises(MemcacheUnknownCommandError):
        client.add(q, b"x")
    assert client.set(q, b"y") is True
    assert b"y" == client.get(q)
    client.close()


def test_bad_queue_name_is_a_client_error(shared_server):
    """A key that is not a valid queue name raises a client error in pymemcache."""
    client = shared_server.client(default_noreply=False)

    with pytest.raises(MemcacheClientError) as excinfo:
        client.get("bad.name")
    assert "bad queue name" in str(excinfo.value)
    assert client.version() == b"2.4.1 erqpy-%s" % erqpy.__version__.encode()
    client.close()


def test_a_client_error_makes_pymemcache_close_its_socket_and_its_open_reads_come_back(shared_server, q):
    """What the README warns about: the server keeps the connection after CLIENT_ERROR,
    but pymemcache closes its socket, so the read it held open goes back to the queue."""
    client = shared_server.client(default_noreply=False)
    client.set(q, b"held")
    assert b"held" == client.get(f"{q}/open")

    with pytest.raises(MemcacheClientError):
        client.get(q)  # a plain get while holding an open read: CLIENT_ERROR
    other = shared_server.client(default_noreply=False)

    assert None is client.sock
    assert b"held" == other.get(f"{q}/t=5000")
    other.close()
    client.close()


def test_quit_then_reconnect(mc, q):
    """pymemcache's quit closes the connection; the next call reconnects and works."""
    mc.set(q, b"x")
    mc.quit()

    assert b"x" == mc.get(q)
