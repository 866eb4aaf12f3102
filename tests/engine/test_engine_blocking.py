"""Blocking reads across engine-mode nodes (BLMOVE into a per-node staging list): two
``erqpy serve`` processes on one real redis-server, readers blocked on both, items
written through a third node.  Each node serves its readers in the order they blocked;
an item staged for a reader that has gone goes back to the head."""

from tests.conftest import queue_waiters, wait_until
from tests.engine.test_engine_server import engine_config

READERS_PER_NODE = 3


def nodes(make_server, tmp_path, redis_primary, key_prefix, names):
    return [make_server("--config", engine_config(tmp_path, name, redis_primary, key_prefix)) for name in names]


def test_blocked_readers_on_two_nodes_are_served_in_order_per_node(make_server, tmp_path, redis_primary,
                                                                    key_prefix):
    a, b, writer_node = nodes(make_server, tmp_path, redis_primary, key_prefix, "abw")
    writer = writer_node.raw()
    writer.call(b"set jobs 0 0 1\r\nx\r\n")
    assert b"VALUE jobs 0 1\r\nx\r\nEND\r\n" == writer.call(b"get jobs\r\n", b"END\r\n")
    readers = {a: [], b: []}
    for node in (a, b):
        for joined in range(1, READERS_PER_NODE + 1):
            reader = node.raw()
            reader.send(b"get jobs/t=20000\r\n")
            wait_until(lambda node=node, joined=joined: queue_waiters(node, "jobs") == joined,
                       what="the reader to block")
            readers[node].append(reader)

    sent = [b"item%d" % n for n in range(2 * READERS_PER_NODE)]
    for data in sent:
        assert b"STORED\r\n" == writer.call(b"set jobs 0 0 %d\r\n%s\r\n" % (len(data), data))

    got = {node: [reader.read_until(b"END\r\n", timeout=15).split(b"\r\n")[1] for reader in line]
           for node, line in readers.items()}
    assert sorted(sent) == sorted(got[a] + got[b])  # each item once, none lost
    for line in got.values():  # per node: the reader that blocked first got the older item
        assert sorted(line, key=lambda data: int(data[4:])) == line
    assert b"END\r\n" == writer.call(b"get jobs\r\n", b"END\r\n")


def test_an_item_staged_for_a_reader_that_left_goes_back_to_the_head(make_server, tmp_path, redis_primary,
                                                                     key_prefix):
    a, b = nodes(make_server, tmp_path, redis_primary, key_prefix, "ab")
    other = b.raw()
    other.call(b"set jobs 0 0 1\r\nx\r\n")
    other.call(b"get jobs\r\n", b"END\r\n")
    leaver = a.raw()
    leaver.send(b"get jobs/t=20000\r\n")
    wait_until(lambda: queue_waiters(a, "jobs") == 1, what="the reader to block on a")
    leaver.reset()
    wait_until(lambda: queue_waiters(a, "jobs") == 0, what="a to see the reader leave")

    # a's stager may still be blocked in BLMOVE for the reader that left: it takes the
    # item, finds no reader and gives it back.
    assert b"STORED\r\n" == other.call(b"set jobs 0 0 5\r\nfirst\r\n")
    assert b"STORED\r\n" == other.call(b"set jobs 0 0 6\r\nsecond\r\n")

    assert b"VALUE jobs 0 5\r\nfirst\r\nEND\r\n" == wait_until(
        lambda: (reply := other.call(b"get jobs\r\n", b"END\r\n")) != b"END\r\n" and reply, timeout=10,
        what="the item back at the head")
    assert b"VALUE jobs 0 6\r\nsecond\r\nEND\r\n" == other.call(b"get jobs\r\n", b"END\r\n")
