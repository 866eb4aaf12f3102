"""Framing over a real connection: split requests, pipelining, binary and large items."""

import time

import pytest

from proto_helpers import get, nodelay, set_cmd, value

import erqpy

VERSION = b"VERSION 2.4.1 erqpy-%s\r\n" % erqpy.__version__.encode()


def conversation(queue: str):
    """A multi-command request stream and the exact reply it must get, on a new queue.

    It ends by deleting the queue, so that it can be replayed on one connection and give
    the same replies (including the ``gets`` cas values, which restart with the queue).
    """
    k = queue.encode()
    request = (
        b"set %s 3 0 5\r\nhe\r\nl\r\n" % k  # the block holds a CRLF
        + b"set %s 0 0 0 noreply\r\n\r\n" % k
        + b"set  %s   0 0 2\r\n\x00\n\r\n" % k  # runs of spaces; NUL and LF in the block
        + b"get %s\r\n" % k
        + b"gets %s %s\r\n" % (k, k)
        + b"get %s/peek\n" % k  # a bare LF ends a line
        + b"set %s 0 0 3\r\nabc\r\n" % k
        + b"get %s/open\r\n" % k
        + b"get %s/close\r\n" % k
        + b"version\r\n"
        + b"bogus words\r\n"
        + b"add %s 0 0 2\r\nxy\r\n" % k
        + b"delete %s\r\n" % k
    )
    reply = (
        b"STORED\r\n"
        + b"STORED\r\n"
        + b"VALUE %s 3 5\r\nhe\r\nl\r\nEND\r\n" % k
        + b"VALUE %s 0 0 2\r\n\r\nVALUE %s 0 2 3\r\n\x00\n\r\nEND\r\n" % (k, k)
        + b"END\r\n"
        + b"STORED\r\n"
        + b"VALUE %s/open 0 3\r\nabc\r\nEND\r\n" % k
        + b"END\r\n"
        + VERSION
        + b"ERROR\r\n"
        + b"ERROR\r\n"
        + b"DELETED\r\n"
    )
    return request, reply


def test_conversation_sent_whole_gets_the_expected_replies(shared_server, q):
    """The reference conversation, sent in one piece, gets exactly its expected replies."""
    request, expected = conversation(q)
    client = shared_server.raw()

    client.send(request)

    assert expected == client.read_until(b"DELETED\r\n")
    client.close()


def test_requests_split_at_every_byte_boundary_get_identical_replies(shared_server, q):
    """For every split point, sending the stream in two pieces gives the same replies."""
    request, expected = conversation(q)
    client = nodelay(shared_server.raw())

    replies = []
    for cut in range(1, len(request)):
        client.send(request[:cut])
        time.sleep(0.001)  # let the first piece arrive (and be parsed) on its own
        client.send(request[cut:])
        replies.append(client.read_until(b"DELETED\r\n"))

    assert [] == [cut for cut, reply in enumerate(replies, 1) if reply != expected]
    client.close()


def test_requests_sent_one_byte_at_a_time_get_identical_replies(shared_server, q):
    """Sending the stream one byte per packet gives the same replies."""
    request, expected = conversation(q)
    client = nodelay(shared_server.raw())

    for byte in request:
        client.send(bytes([byte]))

    assert expected == client.read_until(b"DELETED\r\n")
    client.close()


def test_pipelined_requests_are_answered_in_order(shared_server, q):
    """Hundreds of mixed requests sent at once are answered one by one, in order."""
    client = shared_server.raw()
    count = 300
    stream = b"".join(set_cmd(q, b"item%d" % n) + b"version\r\n" for n in range(count))
    stream += b"".join(b"get %s\r\n" % q.encode() for _ in range(count))

    client.send(stream)

    for n in range(count):
        assert b"STORED\r\n" + VERSION == client.read_until(b"STORED\r\n") + client.line()
    replies = [client.read_until(b"END\r\n") for _ in range(count)]
    assert [value(q, b"item%d" % n) + b"END\r\n" for n in range(count)] == replies
    client.close()


def test_pipelined_requests_split_across_many_sends(shared_server, q):
    """A pipelined stream cut into odd-sized packets is answered exactly as when whole."""
    client = nodelay(shared_server.raw())
    request, expected = conversation(q)
    stream = request * 20

    for start in range(0, len(stream), 37):
        client.send(stream[start : start + 37])

    assert [expected] * 20 == [client.read_until(b"DELETED\r\n") for _ in range(20)]
    client.close()


def test_binary_payload_with_crlf_and_nul_round_trips(shared_server, q):
    """A block holding every byte value, CRLFs, NULs and a fake END is returned intact."""
    client = shared_server.raw()
    payload = bytes(range(256)) * 4 + b"\r\nEND\r\n\x00\x00\r\nVALUE x 0 1\r\n"

    assert b"STORED\r\n" == client.call(set_cmd(q, payload, flags=1))
    client.send(b"get %s\r\n" % q.encode())

    assert value(q, payload, 1) + b"END\r\n" == client.read_exactly(len(value(q, payload, 1)) + 5)
    client.close()


def test_one_megabyte_items_round_trip(shared_server, q):
    """Several 1 MB items, sent in one write, come back intact and in order."""
    client = shared_server.raw()
    items = [bytes([n]) * (1024 * 1024) for n in (1, 2, 3)]

    client.send(b"".join(set_cmd(q, item) for item in items))
    assert [b"STORED\r\n"] * 3 == [client.line() for _ in items]
    client.send(b"get %s\r\n" % q.encode() * 3)

    for item in items:
        expected = value(q, item) + b"END\r\n"
        assert expected == client.read_exactly(len(expected), timeout=30)
    client.close()


SMALL_LIMIT_CONFIG = """
[queues.default]
max_item_size = 1000

[queues.roomy]
max_item_size = 5000
"""


@pytest.fixture(scope="module")
def small_items_server(tmp_path_factory):
    """A server whose default item limit is 1000 bytes (5000 on queue `roomy`)."""
    from tests.conftest import ErqServer

    base = tmp_path_factory.mktemp("small_items")
    config = base / "erqpy.toml"
    config.write_text(SMALL_LIMIT_CONFIG)
    srv = ErqServer(base / "data", ["--config", str(config)]).start()
    yield srv
    srv.stop()


def test_item_at_the_limit_is_stored(small_items_server, q):
    """An item of exactly max_item_size bytes is accepted."""
    client = small_items_server.raw()

    assert b"STORED\r\n" == client.call(set_cmd(q, b"x" * 1000))
    assert value(q, b"x" * 1000) + b"END\r\n" == get(client, q)
    client.close()


@pytest.mark.parametrize("size", [1001, 3000, 100_000])
def test_item_over_the_limit_is_not_stored_and_the_connection_stays_in_step(small_items_server, q, size):
    """An over-size block is read and dropped, replied NOT_STORED, and the next request is served."""
    client = small_items_server.raw()
    # The block looks like commands: if it were parsed as requests the replies would show it.
    block = (b"set %s 0 0 1\r\nX\r\n" % q.encode() * (size // 10 + 1))[:size]

    client.send(b"set %s 0 0 %d\r\n%s\r\nversion\r\n" % (q.encode(), size, block))

    assert b"NOT_STORED\r\n" == client.line()
    assert VERSION == client.line()
    assert b"END\r\n" == get(client, q)
    client.close()


def test_over_size_block_sent_in_small_pieces_is_skipped(small_items_server, q):
    """An over-size block trickling in over many packets is skipped, then the client is in step."""
    client = nodelay(small_items_server.raw())
    size = 200_000
    stream = b"set %s 0 0 %d\r\n" % (q.encode(), size) + b"g" * size + b"\r\n" + set_cmd(q, b"ok")

    for start in range(0, len(stream), 4096):
        client.send(stream[start : start + 4096])

    assert b"NOT_STORED\r\n" == client.line()
    assert b"STORED\r\n" == client.line()
    assert value(q, b"ok") + b"END\r\n" == get(client, q)
    client.close()


def test_over_size_set_with_noreply_is_silent(small_items_server, q):
    """`set ... noreply` of an over-size item sends nothing and stores nothing."""
    client = small_items_server.raw()

    client.send(set_cmd(q, b"z" * 2000, noreply=True) + b"version\r\n")

    assert VERSION == client.line()
    assert b"END\r\n" == get(client, q)
    client.close()


def test_per_queue_limit_allows_larger_items_on_that_queue(small_items_server, q):
    """A queue with its own larger max_item_size stores what the default refuses."""
    client = small_items_server.raw()

    assert b"STORED\r\n" == client.call(set_cmd("roomy", b"r" * 3000))
    assert b"NOT_STORED\r\n" == client.call(set_cmd(q, b"r" * 3000))

    assert value("roomy", b"r" * 3000) + b"END\r\n" == get(client, "roomy")
    client.close()
