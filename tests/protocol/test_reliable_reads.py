"""Reliable reads: open reads belong to their connection and come back when it ends."""

from proto_helpers import get, put, queue_stat, value, wait_for_waiters, wait_until


def wait_open(srv, queue, count):
    wait_until(lambda: queue_stat(srv, queue, "open_transactions") == count,
               what=f"{count} open reads on {queue}")


def drain(client, queue, count):
    """Take ``count`` items with plain gets in one request; return their payloads."""
    reply = client.call(b"get" + b" %s" % queue.encode() * count + b"\r\n", b"END\r\n")
    return reply.split(b"\r\n")[1:-2:2]


def test_open_read_rolls_back_to_the_head_on_disconnect(shared_server, clients, q):
    """An open read whose connection ends goes back to the head, ahead of later items."""
    holder = clients()
    put(holder, q, b"first", b"second")
    assert value(f"{q}/open", b"first") + b"END\r\n" == get(holder, f"{q}/open")

    holder.close()
    wait_open(shared_server, q, 0)

    assert [b"first", b"second"] == drain(clients(), q, 2)


def test_open_read_is_handed_to_a_waiting_reader_after_the_holder_disconnects(shared_server, clients, q):
    """A reader blocked on an empty queue receives the item a disconnecting holder had open."""
    holder, reader = clients(), clients()
    put(holder, q, b"only")
    get(holder, f"{q}/open")
    reader.send(b"get %s/t=20000\r\n" % q.encode())
    wait_for_waiters(shared_server, q, 1)

    holder.close()

    assert value(f"{q}/t=20000", b"only") + b"END\r\n" == reader.read_until()
    assert 0 == queue_stat(shared_server, q, "items")
    assert 0 == queue_stat(shared_server, q, "open_transactions")


def test_blocked_open_reader_gets_the_rolled_back_item(shared_server, clients, q):
    """A blocked `/open` reader takes over a rolled-back item as its own open read."""
    holder, reader = clients(), clients()
    put(holder, q, b"job")
    get(holder, f"{q}/open")
    reader.send(b"get %s/t=20000/open\r\n" % q.encode())
    wait_for_waiters(shared_server, q, 1)

    holder.close()

    assert value(f"{q}/t=20000/open", b"job") + b"END\r\n" == reader.read_until()
    assert 1 == queue_stat(shared_server, q, "open_transactions")
    assert b"END\r\n" == get(reader, f"{q}/close")
    assert 0 == queue_stat(shared_server, q, "open_transactions")


def test_close_open_cycles_walk_the_queue_one_item_at_a_time(shared_server, clients, q):
    """`get q/close/open` repeatedly confirms each item and opens the next; nothing comes back."""
    worker = clients()
    items = [b"job%d" % n for n in range(5)]
    put(worker, q, *items)

    key = f"{q}/close/open"
    seen = [get(worker, key) for _ in items]
    last = get(worker, key)

    assert [value(key, item) + b"END\r\n" for item in items] == seen
    assert b"END\r\n" == last  # closed job4, nothing left to open
    assert 0 == queue_stat(shared_server, q, "open_transactions")
    worker.close()
    assert b"END\r\n" == get(clients(), q)


def test_several_open_reads_close_oldest_first(shared_server, clients, q):
    """With three reads open, `/close` confirms the oldest; the other two roll back in order."""
    holder = clients()
    put(holder, q, b"a", b"b", b"c", b"d")
    for item in (b"a", b"b", b"c"):
        assert value(f"{q}/open", item) + b"END\r\n" == get(holder, f"{q}/open")

    assert b"END\r\n" == get(holder, f"{q}/close")
    assert 2 == queue_stat(shared_server, q, "open_transactions")
    holder.close()
    wait_open(shared_server, q, 0)

    assert [b"b", b"c", b"d"] == drain(clients(), q, 3)


def test_abort_gives_back_the_oldest_of_several_open_reads(shared_server, clients, q):
    """`/abort` returns the oldest open read to the head; the newer ones stay open."""
    holder = clients()
    put(holder, q, b"a", b"b", b"c")
    get(holder, f"{q}/open")
    get(holder, f"{q}/open")

    assert b"END\r\n" == get(holder, f"{q}/abort")

    assert 1 == queue_stat(shared_server, q, "open_transactions")
    assert [b"a", b"c"] == drain(clients(), q, 2)


def test_open_reads_on_several_queues_all_roll_back(shared_server, clients, q):
    """A connection holding open reads on several queues gives every one back when it ends."""
    names = [f"{q}_{n}" for n in range(3)]
    holder = clients()
    for name in names:
        put(holder, name, b"in-" + name.encode(), b"next")
    reply = holder.call(b"get" + b"".join(b" %s/open" % n.encode() for n in names) + b"\r\n", b"END\r\n")
    assert 3 == reply.count(b"VALUE ")

    holder.close()
    for name in names:
        wait_open(shared_server, name, 0)

    reader = clients()
    assert [[b"in-" + n.encode(), b"next"] for n in names] == [drain(reader, n, 2) for n in names]


def test_open_reads_of_one_connection_are_invisible_to_another(clients, q):
    """While one client holds an open read, others get the following items, not that one."""
    holder, other = clients(), clients()
    put(holder, q, b"held", b"free")
    get(holder, f"{q}/open")

    assert [b"free"] == drain(other, q, 1)
    assert b"END\r\n" == get(other, q)


def test_close_on_another_connection_does_not_confirm(shared_server, clients, q):
    """`/close` only confirms reads of its own connection."""
    holder, other = clients(), clients()
    put(holder, q, b"x")
    get(holder, f"{q}/open")

    assert b"END\r\n" == get(other, f"{q}/close")
    assert 1 == queue_stat(shared_server, q, "open_transactions")

    holder.close()
    wait_open(shared_server, q, 0)
    assert [b"x"] == drain(other, q, 1)


def test_rolled_back_items_keep_their_flags(shared_server, clients, q):
    """An item that rolls back is delivered again with its original flags."""
    holder = clients()
    holder.call(b"set %s 77 0 3\r\nabc\r\n" % q.encode())
    get(holder, f"{q}/open")
    holder.close()
    wait_open(shared_server, q, 0)

    assert value(q, b"abc", 77) + b"END\r\n" == get(clients(), q)


def test_transaction_stats_count_opens_and_rollbacks(shared_server, clients, q):
    """transactions counts opened reads and canceled_transactions counts rollbacks."""
    holder = clients()
    put(holder, q, b"a", b"b")
    get(holder, f"{q}/open")
    get(holder, f"{q}/abort")
    get(holder, f"{q}/open")
    holder.close()
    wait_open(shared_server, q, 0)

    assert 2 == queue_stat(shared_server, q, "transactions")
    assert 2 == queue_stat(shared_server, q, "canceled_transactions")


def test_open_read_on_a_deleted_queue_does_not_come_back(shared_server, clients, q):
    """An open read whose queue is deleted is gone: it neither blocks plain gets nor returns
    into a re-created queue of the same name when its connection ends."""
    holder, admin = clients(), clients()
    put(holder, q, b"old")
    get(holder, f"{q}/open")
    assert b"DELETED\r\n" == admin.call(b"delete %s\r\n" % q.encode())

    put(admin, q, b"new")
    assert b"END\r\n" == get(holder, f"{q}/close")  # nothing of the old queue to close
    holder.close()
    wait_open(shared_server, q, 0)

    assert [b"new"] == drain(admin, q, 2)
