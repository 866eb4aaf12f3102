"""erqpy.client.Client against three real servers at once: the Kestrel model of random
writers and sticky readers, dead servers skipped, nothing acknowledged lost."""

import random
import threading

import pytest
from pymemcache.client.base import Client as MemcacheClient

from erqpy.client import Client, NoServerAvailable

from clienthelpers import server_spec


def drain(client, queue, wait=0.3, limit=10_000):
    """Reserve and confirm until every server comes back empty; the data in read order."""
    seen = []
    for _ in range(limit):
        with client.reserve(queue, wait=wait) as item:
            if item is None:
                return seen
            seen.append(item.data)
    raise AssertionError("drain did not end")


def per_server_stats(client, queue):
    return {name: (fields.get(f"queue_{queue}_items", 0), fields.get(f"queue_{queue}_open_transactions", 0))
            for name, fields in client.stats().items()}


def test_puts_spread_over_servers_and_a_reader_drains_them_all_once(three_servers):
    """Writes go to random servers; one reader finds every item exactly once."""
    specs = [server_spec(s) for s in three_servers]
    writer = Client(specs, rng=random.Random(7))
    stored_on = {writer.put("spread", n) for n in range(180)}

    reader = Client(specs, wait_slice=0.2)
    seen = drain(reader, "spread")

    assert set(specs) == stored_on
    assert list(range(180)) == sorted(seen)
    assert {s: (0, 0) for s in specs} == per_server_stats(reader, "spread")


def test_next_confirms_each_read_on_the_server_that_opened_it(three_servers):
    """Streaming with next() across three servers leaves no open read and no item anywhere."""
    specs = [server_spec(s) for s in three_servers]
    writer = Client(specs, rng=random.Random(2))
    writer.put_many("stream3", list(range(60)), batch=7)

    reader = Client(specs, wait_slice=0.2, reads_per_server=4)
    seen, servers = [], []
    item = reader.next("stream3", wait=0.5)
    while item is not None:
        seen.append(item.data)
        servers.append(item.server)
        item = reader.next("stream3", wait=0.5)

    assert list(range(60)) == sorted(seen)
    assert len(set(servers[:12])) >= 2  # reads_per_server moved the reader on
    assert {s: (0, 0) for s in specs} == per_server_stats(reader, "stream3")


def test_dead_server_is_skipped_and_its_items_come_back_after_restart(three_servers):
    """With one server SIGKILLed, puts and reads go on with the others; once it restarts
    (same port, same data) its acknowledged items are read too: nothing acknowledged is lost."""
    specs = [server_spec(s) for s in three_servers]
    writer = Client(specs, retry_after=0.5, rng=random.Random(3))
    acknowledged = {}
    for n in range(60):
        acknowledged[n] = writer.put("durable", n)
    victim = three_servers[1]
    victim_spec, victim_port = specs[1], victim.port
    on_victim = {n for n, s in acknowledged.items() if s == victim_spec}
    assert on_victim, "the seeded writer put nothing on the victim"

    victim.kill9()
    for n in range(60, 120):
        acknowledged[n] = writer.put("durable", n)
    reader = Client(specs, retry_after=0.5, wait_slice=0.2)
    before_restart = drain(reader, "durable")

    victim.restart(extra_args=("--port", str(victim_port)))
    after_restart = drain(reader, "durable", wait=2.0)

    assert all(acknowledged[n] != victim_spec for n in range(60, 120))
    assert set(range(120)) - on_victim == set(before_restart)
    assert on_victim == set(after_restart)
    assert 120 == len(before_restart) + len(after_restart)


def test_readonly_server_is_skipped_by_writers(three_servers):
    """A server set to READONLY refuses writes; puts go to the other servers."""
    specs = [server_spec(s) for s in three_servers]
    three_servers[0].ctl("set-status", "readonly", check=True)
    writer = Client(specs, rng=random.Random(11))

    stored_on = {writer.put("ro", n) for n in range(30)}

    assert specs[0] not in stored_on
    assert list(range(30)) == sorted(drain(Client(specs[1:]), "ro"))


def test_blocking_read_finds_an_item_put_on_another_server(three_servers):
    """A reader waiting across three servers gets an item put later on any one of them."""
    specs = [server_spec(s) for s in three_servers]
    reader = Client(specs, wait_slice=0.3, timeout=1.0)
    direct = MemcacheClient(("127.0.0.1", three_servers[2].port), default_noreply=False)
    reader.get("late3")  # the reader settles on some server first
    timer = threading.Timer(0.8, lambda: direct.set("late3", b"found", flags=0))
    timer.start()
    try:
        assert b"found" == reader.get("late3", wait=10)
    finally:
        timer.cancel()


def test_quiescent_server_is_skipped_by_readers_until_it_is_up(three_servers):
    """A QUIESCENT server refuses reads; readers take the other servers' items, and its own
    once it is up again."""
    specs = [server_spec(s) for s in three_servers]
    writer = Client(specs, rng=random.Random(5))
    stored_on = {n: writer.put("quiet", n) for n in range(45)}
    on_quiet = {n for n, s in stored_on.items() if s == specs[0]}
    three_servers[0].ctl("set-status", "quiescent", check=True)
    reader = Client(specs, retry_after=0.3, wait_slice=0.2)

    before = drain(reader, "quiet")
    three_servers[0].ctl("set-status", "up", check=True)
    after = drain(reader, "quiet", wait=2.0)

    assert 0 < len(on_quiet) < 45
    assert set(range(45)) - on_quiet == set(before)
    assert on_quiet == set(after)


def test_a_put_tries_again_servers_marked_dead(server):
    """When every server is marked dead, a put still tries them rather than failing unasked."""
    port = server.port
    writer = Client([server_spec(server)], retry_after=3600)
    server.kill9()
    with pytest.raises(NoServerAvailable):
        writer.put("retryq", "lost")

    server.restart(extra_args=("--port", str(port)))

    assert server_spec(server) == writer.put("retryq", "kept")
    assert "kept" == Client([server_spec(server)]).get("retryq")
