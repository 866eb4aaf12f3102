"""Priorities (erqpy extension): ``set q/pri=<0..9>``, 0 the most urgent, 5 the default.
A read takes from the most urgent non-empty level, FIFO within a level; a reliable read
given back goes to the head of its own level; expiry applies per level."""

import time

import pymemcache.client.base
import pytest
from proto_helpers import get, parse_stats, put, queue_stat, value


def store(client, key: str, data: bytes, exptime: int = 0) -> None:
    line = b"set %s 0 %d %d\r\n%s\r\n" % (key.encode(), exptime, len(data), data)
    assert b"STORED\r\n" == client.call(line)


def take(client, key: str) -> bytes | None:
    reply = get(client, key)
    return None if reply == b"END\r\n" else reply.split(b"\r\n")[1]


def take_all(client, queue: str, limit: int = 100) -> list[bytes]:
    taken = []
    for _ in range(limit):
        data = take(client, queue)
        if data is None:
            break
        taken.append(data)
    return taken


def test_the_most_urgent_level_first_fifo_within_a_level(conn, q):
    store(conn, f"{q}/pri=9", b"low-1")
    put(conn, q, b"default-1")  # no /pri=: level 5
    store(conn, f"{q}/pri=0", b"urgent-1")
    store(conn, f"{q}/pri=5", b"default-2")
    store(conn, f"{q}/pri=9", b"low-2")
    store(conn, f"{q}/pri=0", b"urgent-2")
    store(conn, f"{q}/pri=3", b"three")

    assert [b"urgent-1", b"urgent-2", b"three", b"default-1", b"default-2", b"low-1", b"low-2"] == \
        take_all(conn, q)


def test_stats_count_every_level_in_items_and_each_non_empty_level(shared_server, conn, q):
    put(conn, q, b"a", b"b")
    store(conn, f"{q}/pri=1", b"c")
    store(conn, f"{q}/pri=8", b"d")
    fields = parse_stats(conn.call(b"stats\r\n", b"END\r\n"))
    assert "4" == fields[f"queue_{q}_items"]
    assert ("1", "2", "1") == (fields[f"queue_{q}_items_pri_1"], fields[f"queue_{q}_items_pri_5"],
                               fields[f"queue_{q}_items_pri_8"])
    assert f"queue_{q}_items_pri_0" not in fields
    take_all(conn, q)
    fields = parse_stats(conn.call(b"stats\r\n", b"END\r\n"))
    assert not [name for name in fields if name.startswith(f"queue_{q}_items_pri_")]


def test_an_aborted_read_goes_back_to_the_head_of_its_own_level(conn, q):
    store(conn, f"{q}/pri=2", b"two-a")
    store(conn, f"{q}/pri=2", b"two-b")
    store(conn, f"{q}/pri=1", b"one")
    assert value(f"{q}/open", b"one") + b"END\r\n" == get(conn, f"{q}/open")
    assert b"END\r\n" == get(conn, f"{q}/abort")
    assert value(f"{q}/open", b"one") + b"END\r\n" == get(conn, f"{q}/open")
    assert value(f"{q}/close/open", b"two-a") + b"END\r\n" == get(conn, f"{q}/close/open")
    store(conn, f"{q}/pri=0", b"zero")
    assert b"END\r\n" == get(conn, f"{q}/abort")  # two-a back ahead of two-b, behind zero
    assert [b"zero", b"two-a", b"two-b"] == take_all(conn, q)


def test_a_dropped_connection_gives_its_read_back_to_its_level(clients, shared_server, q):
    holder, other = clients(), clients()
    store(holder, f"{q}/pri=7", b"seven")
    put(holder, q, b"five")
    assert value(f"{q}/open", b"five") + b"END\r\n" == get(holder, f"{q}/open")
    holder.close()
    deadline = time.time() + 10
    while queue_stat(shared_server, q, "open_transactions") and time.time() < deadline:
        time.sleep(0.02)
    assert [b"five", b"seven"] == take_all(other, q)


def test_peek_shows_the_most_urgent_head(conn, q):
    put(conn, q, b"plain")
    store(conn, f"{q}/pri=4", b"four")
    assert value(f"{q}/peek", b"four") + b"END\r\n" == get(conn, f"{q}/peek")
    assert [b"four", b"plain"] == take_all(conn, q)


def test_expired_items_of_an_urgent_level_give_way_to_the_next_level(shared_server, conn, q):
    store(conn, f"{q}/pri=0", b"stale", exptime=1)
    put(conn, q, b"fresh")
    time.sleep(1.2)
    assert [b"fresh"] == take_all(conn, q)
    assert 1 == queue_stat(shared_server, q, "expired_items")


def test_a_waiting_reader_gets_a_prioritised_item(clients, shared_server, q):
    reader, writer = clients(), clients()
    put(writer, q, b"make")
    assert b"make" == take(writer, q)
    reader.send(b"get %s/t=10000\r\n" % q.encode())
    deadline = time.time() + 10
    while queue_stat(shared_server, q, "waiters") != 1 and time.time() < deadline:
        time.sleep(0.02)
    store(writer, f"{q}/pri=2", b"urgent")
    assert value(f"{q}/t=10000", b"urgent") + b"END\r\n" == reader.read_until()


def test_priority_and_delay_combine(conn, q):
    store(conn, f"{q}/pri=1/delay=1000", b"urgent-later")
    put(conn, q, b"plain")
    assert b"plain" == take(conn, q)
    assert take(conn, q) is None
    time.sleep(1.1)
    put(conn, q, b"plain-2")
    assert [b"urgent-later", b"plain-2"] == take_all(conn, q)


@pytest.mark.parametrize("option, reason", [
    ("pri=10", b"CLIENT_ERROR priority must be 0 to 9"),
    ("pri=-1", b"CLIENT_ERROR priority must be 0 to 9"),
    ("pri=high", b"CLIENT_ERROR bad priority"),
    ("pri=", b"CLIENT_ERROR bad priority"),
])
def test_bad_priorities_are_refused_and_the_connection_stays_in_step(conn, q, option, reason):
    reply = conn.call(b"set %s/%s 0 0 1\r\nx\r\nset %s 0 0 4\r\nnext\r\n" % (q.encode(), option.encode(), q.encode()))
    assert reply.startswith(reason), reply
    assert b"STORED\r\n" == conn.line()
    assert [b"next"] == take_all(conn, q)


def test_pymemcache_sets_with_a_priority(shared_server, q):
    client = pymemcache.client.base.Client(shared_server.address, connect_timeout=10, timeout=10)
    try:
        assert client.set(q, b"normal", noreply=False)
        assert client.set(f"{q}/pri=0", b"first", noreply=False)
        assert b"first" == client.get(q)
        assert b"normal" == client.get(q)
    finally:
        client.close()
