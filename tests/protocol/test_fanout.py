"""Fanout: a set on `m` also adds to every existing child `m+x`."""

import pytest

from proto_helpers import get, parse_stats, put, unique_name, value, wait_for_waiters


@pytest.fixture
def m(request):
    return unique_name(request.node.name)


def create(conn, queue):
    """Create a queue: a child by reading from it (it is empty, so the get replies END),
    a master by a set that is read back (a read creates only fanout children)."""
    if "+" not in queue:
        put(conn, queue, b"create")
        assert get(conn, queue).startswith(b"VALUE ")
    assert b"END\r\n" == get(conn, queue)


def test_set_on_master_feeds_every_existing_child(conn, m):
    """An item set on m is on m, m+a and m+b, with its flags."""
    create(conn, f"{m}+a")
    create(conn, f"{m}+b")

    assert b"STORED\r\n" == conn.call(b"set %s 9 0 5\r\nevent\r\n" % m.encode())

    for queue in (m, f"{m}+a", f"{m}+b"):
        assert value(queue, b"event", 9) + b"END\r\n" == get(conn, queue)


def test_child_created_later_gets_only_later_items(conn, m):
    """A child created after some sets receives only the items set after it exists."""
    put(conn, m, b"before")
    create(conn, f"{m}+late")

    put(conn, m, b"after")

    assert value(f"{m}+late", b"after") + b"END\r\n" == get(conn, f"{m}+late")
    assert b"END\r\n" == get(conn, f"{m}+late")


def test_deleted_child_gets_no_more_items(conn, m):
    """After `delete m+a`, sets on m no longer reach it; other children still get them."""
    create(conn, f"{m}+a")
    create(conn, f"{m}+b")
    assert b"DELETED\r\n" == conn.call(b"delete %s+a\r\n" % m.encode())

    put(conn, m, b"x")

    fields = parse_stats(conn.call(b"stats\r\n", b"END\r\n"))
    assert None is fields.get(f"queue_{m}+a_items")
    assert "1" == fields[f"queue_{m}+b_items"]
    assert f"{m}+b" == fields[f"queue_{m}_children"]


def test_set_on_a_child_reaches_neither_master_nor_siblings(conn, m):
    """Fanout goes one way: an item set on m+a stays on m+a."""
    create(conn, f"{m}+a")
    create(conn, f"{m}+b")

    put(conn, f"{m}+a", b"only-a")

    assert b"END\r\n" == get(conn, m)
    assert b"END\r\n" == get(conn, f"{m}+b")
    assert value(f"{m}+a", b"only-a") + b"END\r\n" == get(conn, f"{m}+a")


def test_children_are_independent_queues(conn, m):
    """Reading from one child does not take the item from another or from the master."""
    create(conn, f"{m}+a")
    create(conn, f"{m}+b")
    put(conn, m, b"1", b"2")

    assert value(f"{m}+a", b"1") + value(f"{m}+a", b"2") + b"END\r\n" == conn.call(
        b"get %s+a %s+a\r\n" % (m.encode(), m.encode()), b"END\r\n")
    assert "2" == parse_stats(conn.call(b"stats\r\n", b"END\r\n"))[f"queue_{m}+b_items"]
    assert value(m, b"1") + b"END\r\n" == get(conn, m)


def test_master_stats_list_its_children(conn, m):
    """stats and dump_stats show `children` on a fanout master."""
    create(conn, m)
    create(conn, f"{m}+b")
    create(conn, f"{m}+a")

    fields = parse_stats(conn.call(b"stats\r\n", b"END\r\n"))
    dump = conn.call(b"dump_stats %s\r\n" % m.encode(), b"END\r\n")

    assert f"{m}+a,{m}+b" == fields[f"queue_{m}_children"]
    assert b"  children=%s+a,%s+b\r\n" % (m.encode(), m.encode()) in dump


def test_blocked_reader_on_a_child_is_woken_by_a_set_on_the_master(shared_server, conn, m):
    """A reader blocked on m+a receives an item set on m."""
    reader = shared_server.raw()
    reader.send(b"get %s+a/t=20000\r\n" % m.encode())
    wait_for_waiters(shared_server, f"{m}+a", 1)

    put(conn, m, b"fan")

    assert value(f"{m}+a/t=20000", b"fan") + b"END\r\n" == reader.read_until()
    reader.close()
