"""``get a/any b/any c/any`` (erqpy extension): at most one item, the head of the first
named queue that has one; with ``/t=``, one wait on every named queue at once, served to
blocked readers first come, first served per queue, an item never lost to a reader that
left."""

import time

import pytest

from proto_helpers import get, make_queue, parse_stats, put, stats, value, wait_for_waiters
from tests.conftest import wait_until


@pytest.fixture
def names(q):
    return [f"{q}_a", f"{q}_b", f"{q}_c"]


def choice(names, options=""):
    return " ".join(f"{name}/any{options}" for name in names)


def test_the_first_named_queue_with_an_item_serves(conn, names):
    a, b, c = names
    put(conn, c, b"from c")
    put(conn, b, b"from b")

    assert value(f"{b}/any", b"from b") + b"END\r\n" == get(conn, choice(names))
    assert value(f"{c}/any", b"from c") + b"END\r\n" == get(conn, choice(names))
    assert b"END\r\n" == get(conn, choice(names))


def test_an_item_on_the_third_queue_wakes_the_one_wait_at_once(shared_server, clients, names):
    """All three queues empty: one get waits on all of them; a set on the third answers
    it at once, and the server counted one get, not a poll of each queue."""
    waiting, writer = clients(), clients()
    for name in names:
        make_queue(shared_server, name)
    before = int(stats(shared_server)["cmd_get"])
    waiting.send(b"get %s\r\n" % choice(names, "/open/t=20000").encode())
    for name in names:
        wait_for_waiters(shared_server, name, 1)

    started = time.monotonic()
    put(writer, names[2], b"late")
    reply = waiting.read_until(b"END\r\n", timeout=10)

    assert time.monotonic() - started < 1.0
    assert value(f"{names[2]}/any/open/t=20000", b"late") + b"END\r\n" == reply
    assert 1 == int(stats(shared_server)["cmd_get"]) - before
    assert all(0 == int(stats(shared_server).get(f"queue_{n}_waiters", 0)) for n in names)
    assert b"END\r\n" == get(waiting, f"{names[2]}/close")
    assert b"END\r\n" == get(writer, names[2])


def test_missing_queues_are_waited_on_and_a_set_creating_one_serves(shared_server, clients, names):
    waiting, writer = clients(), clients()
    waiting.send(b"get %s\r\n" % choice(names, "/t=20000").encode())
    wait_until(lambda: int(stats(shared_server)["awaited_waiters"]) >= 3, 10, what="three awaited lines")

    put(writer, names[1], b"new")

    assert value(f"{names[1]}/any/t=20000", b"new") + b"END\r\n" == waiting.read_until(b"END\r\n", timeout=10)


def test_blocked_readers_are_served_in_arrival_order_per_queue(shared_server, clients, names):
    first, second, writer = clients(), clients(), clients()
    for name in names:
        make_queue(shared_server, name)
    first.send(b"get %s\r\n" % choice(names, "/t=20000").encode())
    wait_for_waiters(shared_server, names[0], 1)
    second.send(b"get %s\r\n" % choice(names[::-1], "/t=20000").encode())
    wait_for_waiters(shared_server, names[0], 2)

    put(writer, names[1], b"one", b"two")

    assert value(f"{names[1]}/any/t=20000", b"one") + b"END\r\n" == first.read_until(b"END\r\n")
    assert value(f"{names[1]}/any/t=20000", b"two") + b"END\r\n" == second.read_until(b"END\r\n")


def test_an_item_for_a_reader_that_reset_goes_to_the_next(shared_server, clients, names):
    gone, staying, writer = clients(), clients(), clients()
    for name in names:
        make_queue(shared_server, name)
    gone.send(b"get %s\r\n" % choice(names, "/open/t=20000").encode())
    wait_for_waiters(shared_server, names[2], 1)
    staying.send(b"get %s\r\n" % choice(names, "/open/t=20000").encode())
    wait_for_waiters(shared_server, names[2], 2)
    gone.reset()
    wait_for_waiters(shared_server, names[2], 1)

    put(writer, names[2], b"kept")

    assert value(f"{names[2]}/any/open/t=20000", b"kept") + b"END\r\n" == staying.read_until(b"END\r\n")


def test_close_on_a_choice_key_confirms_that_queues_read_first(conn, names):
    a, b, _c = names
    put(conn, a, b"first")
    put(conn, b, b"second")
    assert value(f"{a}/any/open", b"first") + b"END\r\n" == get(conn, choice(names, "/open"))

    reply = get(conn, f"{a}/close/open/any {b}/open/any")

    assert value(f"{b}/open/any", b"second") + b"END\r\n" == reply
    fields = parse_stats(conn.call(b"stats\r\n", b"END\r\n"))
    assert "0" == fields[f"queue_{a}_open_transactions"]
    assert "1" == fields[f"queue_{b}_open_transactions"]
    assert b"END\r\n" == get(conn, f"{b}/close")


@pytest.mark.parametrize("keys, reason", [
    ("{a}/any {b}", b"every key of the get must have /any"),
    ("{a} {b}/any", b"every key of the get must have /any"),
    ("{a}/open {b}/any/open", b"every key of the get must have /any"),
    ("{a}/any/peek {b}/any", b"cannot be combined with peek or abort"),
    ("{a}/any/open {b}/any", b"either every key has /open or none has"),
])
def test_a_bad_choice_is_a_client_error_and_the_connection_stays(conn, names, keys, reason):
    a, b, _c = names
    put(conn, a, b"stays")

    reply = conn.call(b"get %s\r\n" % keys.format(a=a, b=b).encode())

    assert reply.startswith(b"CLIENT_ERROR ") and reason in reply
    assert value(a, b"stays") + b"END\r\n" == get(conn, a)
