"""erqpy.client.Client against one real server: values, reliable reads, blocking reads."""

import threading
import time

import pytest

from erqpy.client import (
    FLAG_JSON,
    FLAG_RAW,
    FLAG_ZLIB,
    Client,
    JsonSerde,
    QueueClientError,
    RawSerde,
    ReadLost,
)

from clienthelpers import server_spec


@pytest.fixture
def client(server):
    c = Client([server_spec(server)], timeout=5.0)
    yield c
    c.close()


def test_values_round_trip_with_their_type(client):
    """Dicts, lists, strings, numbers and bytes come back as they were put."""
    values = [{"user": 42, "tags": ["a", "b"]}, [1, 2], "héllo", 7, b"\x00raw\xff"]
    for value in values:
        client.put("types", value)

    assert values == [client.get("types") for _ in values]


def test_flags_on_the_wire_say_json_or_raw(client, raw):
    """JSON values travel with flags 6 (PHP's JSON type) and bytes with flags 0."""
    client.put("wire", {"a": 1})
    client.put("wire", b"abc")

    assert b'VALUE wire 6 7\r\n{"a":1}\r\nEND\r\n' == raw.call(b"get wire\r\n", b"END\r\n")
    assert b"VALUE wire 0 3\r\nabc\r\nEND\r\n" == raw.call(b"get wire\r\n", b"END\r\n")
    assert (FLAG_JSON, FLAG_RAW) == (6, 0)


def test_compression_only_when_asked(server, raw):
    """A serde with compress_over zlib-compresses long values and sets FLAG_ZLIB."""
    plain = Client([server_spec(server)])
    packed = Client([server_spec(server)], serde=JsonSerde(compress_over=100))
    text = "x" * 5000

    plain.put("zip", text)
    packed.put("zip", text)

    assert f"VALUE zip {FLAG_JSON} 5002".encode() == raw.call(b"get zip\r\n", b"END\r\n").split(b"\r\n")[0]
    header = raw.call(b"gets zip/peek\r\n", b"END\r\n").split(b"\r\n")[0].split()
    assert FLAG_JSON | FLAG_ZLIB == int(header[2])
    assert int(header[3]) < 200
    assert text == packed.get("zip")


def test_raw_serde_refuses_non_bytes(server):
    """RawSerde stores bytes only and hands bytes back."""
    raw_client = Client([server_spec(server)], serde=RawSerde())
    raw_client.put("rawq", b"\x01\x02")

    with pytest.raises(TypeError):
        raw_client.put("rawq", {"not": "bytes"})
    assert b"\x01\x02" == raw_client.get("rawq")


def test_reserve_confirms_on_normal_exit(server, client):
    """An item reserved and left normally is gone, even after the client disconnects."""
    client.put("jobs", {"n": 1})

    with client.reserve("jobs", wait=1) as item:
        assert {"n": 1} == item.data
    client.close()

    assert None is Client([server_spec(server)]).get("jobs")


def test_reserve_gives_the_item_back_on_an_exception(client):
    """An exception inside the block aborts the read: the item is at the head again."""
    client.put("jobs", "first")
    client.put("jobs", "second")

    with pytest.raises(KeyError):
        with client.reserve("jobs") as item:
            assert "first" == item.data
            raise KeyError("handler failed")

    assert ["first", "second"] == [client.get("jobs"), client.get("jobs")]


def test_reserve_on_an_empty_queue_yields_none(client):
    """reserve() yields None when nothing arrives within the wait."""
    with client.reserve("empty", wait=0.2) as item:
        assert item is None
    assert None is client.holding("empty")


def test_next_confirms_the_previous_item_and_opens_the_next(server, client):
    """next() confirms what is open and opens the following item; finish() ends the run."""
    for n in range(3):
        client.put("stream", n)

    seen = [client.next("stream").data]
    seen.append(client.next("stream").data)
    seen.append(client.next("stream").data)
    assert client.finish("stream") is True
    client.close()

    assert [0, 1, 2] == seen
    assert 0 == Client([server_spec(server)]).queue_size("stream")


def test_abort_returns_the_item_to_the_head(client):
    """abort() gives the open item back; the next read gets it again."""
    client.put("aborted", "a")
    client.put("aborted", "b")

    item = client.open("aborted")
    assert client.abort("aborted") is True

    assert ("a", "a") == (item.data, client.get("aborted"))


def test_a_dropped_connection_gives_the_item_back_and_finish_says_so(server, client):
    """When the connection holding an open read ends, finish() raises ReadLost and the
    server has put the item back."""
    client.put("lost", "job")
    item = client.open("lost")
    client.servers[0].mc.close()  # the connection ends, as when a network link drops

    with pytest.raises(ReadLost):
        client.finish("lost")
    assert "job" == item.data
    assert "job" == Client([server_spec(server)]).get("lost", wait=2)


def test_plain_get_while_holding_an_open_read_is_refused_locally(client):
    """A plain get on a queue this client holds open is refused before it reaches the
    server, so the open read survives."""
    client.put("held", "x")
    item = client.open("held")

    with pytest.raises(QueueClientError):
        client.get("held")
    assert item is client.holding("held")
    assert client.finish("held") is True


def test_blocking_get_longer_than_the_socket_timeout(server):
    """A read waiting 2 s on a client whose socket timeout is 0.5 s does not time out: the
    timeout is derived from the wait."""
    client = Client([server_spec(server)], timeout=0.5)
    producer = Client([server_spec(server)])
    timer = threading.Timer(1.2, lambda: producer.put("late", "arrived"))
    timer.start()
    try:
        assert "arrived" == client.get("late", wait=4)
    finally:
        timer.cancel()
    started = time.monotonic()
    assert None is client.get("late", wait=1.5)
    assert time.monotonic() - started >= 1.4


def test_peek_flush_delete_and_stats(client):
    """peek leaves the item, flush empties the queue, stats count it, delete removes it."""
    client.put("admin", "one")
    client.put("admin", "two")

    assert "one" == client.peek("admin")
    assert 2 == client.queue_size("admin")
    assert 1 == client.flush("admin")
    assert 0 == client.queue_size("admin")
    assert 1 == client.delete("admin")
    assert "queue_admin_items" not in next(iter(client.stats().values()))


def test_put_many_pipelines_in_order(client):
    """put_many stores every value, in order, in batches."""
    assert 250 == client.put_many("batch", list(range(250)), batch=64)

    assert list(range(250)) == [client.get("batch") for _ in range(250)]
    assert None is client.get("batch")


def test_bad_queue_names_are_refused(client):
    """Names with '/' or whitespace would be read as options or split: refused locally."""
    for name in ["a/b", "two words", ""]:
        with pytest.raises(ValueError):
            client.put(name, 1)
