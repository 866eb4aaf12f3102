"""Expiry (PROTOCOL.md "Expiry"): relative seconds, absolute Unix time, negative = already
expired, max_age and expire_to.  An expired item is never returned, by any kind of read."""

import time

import pytest

from tests.conftest import ErqServer
from proto_helpers import get, parse_stats, set_cmd, unique_name, value

EXPIRY_CONFIG = """
[queues.aged]
max_age = 1

[queues.spill]
expire_to = "spill_dead"
"""

# Ways of reading a queue that leave the item there (open reads are aborted), then one
# that takes it; an expired item must be invisible to all of them.
READS = ["{q}/peek", "{q}/t=0/peek", "{q}/open", "{q}/t=50/open"]


@pytest.fixture(scope="module")
def expiry_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("expiry")
    config = base / "erqpy.toml"
    config.write_text(EXPIRY_CONFIG)
    srv = ErqServer(base / "data", ["--config", str(config)]).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def aged(expiry_server):
    """Queues filled once, then one sleep past the 1-second lifetimes; tests read them."""
    now = int(time.time())
    names = {kind: unique_name(kind) for kind in (
        "relative", "absolute", "absolute_future", "never", "max_age", "spill")}
    names["max_age"] = "aged"
    names["spill"] = "spill"
    conn = expiry_server.raw()
    batch = [
        set_cmd(names["relative"], b"gone", exptime=1),
        set_cmd(names["relative"], b"kept", exptime=3600),
        set_cmd(names["absolute"], b"gone", exptime=now + 1),
        set_cmd(names["absolute"], b"kept", exptime=now + 3600),
        set_cmd(names["absolute_future"], b"kept", exptime=now + 3600),
        set_cmd(names["never"], b"kept", exptime=0),
        set_cmd(names["max_age"], b"gone", exptime=3600),  # max_age caps the hour to 1 s
        set_cmd(names["spill"], b"moved", exptime=1),
    ]
    conn.send(b"".join(batch))
    assert [b"STORED\r\n"] * len(batch) == [conn.line() for _ in batch]
    conn.close()
    # Every lifetime above is at most 1 s from the moment its STORED came back.
    time.sleep(1.25)
    return names


def read_all(client, queue):
    """Each read of READS, then a `gets` that takes the item; the payloads seen, in order."""
    seen = []
    for pattern in READS + ["{q}"]:
        key = pattern.format(q=queue).encode()
        command = b"gets" if key == queue.encode() else b"get"
        reply = client.call(b"%s %s\r\n" % (command, key), b"END\r\n")
        if b"VALUE" in reply:
            seen.append(reply.split(b"\r\n")[1])
        if b"/open" in key:
            client.call(b"get %s/abort\r\n" % queue.encode(), b"END\r\n")
    return seen


def test_relative_exptime_expires_after_its_seconds(expiry_server, aged):
    """An item set with exptime 1 is gone after a second; the next item is served."""
    conn = expiry_server.raw()

    assert [b"kept"] * (len(READS) + 1) == read_all(conn, aged["relative"])
    assert b"END\r\n" == get(conn, aged["relative"])
    conn.close()


def test_absolute_exptime_expires_at_that_time(expiry_server, aged):
    """An exptime at or above 1,000,000 is a Unix time; one in the past second is expired."""
    conn = expiry_server.raw()

    assert value(aged["absolute"], b"kept") + b"END\r\n" == get(conn, aged["absolute"])
    assert value(aged["absolute_future"], b"kept") + b"END\r\n" == get(conn, aged["absolute_future"])
    conn.close()


def test_exptime_zero_never_expires(expiry_server, aged):
    """exptime 0 keeps the item however long it waits."""
    conn = expiry_server.raw()

    assert value(aged["never"], b"kept") + b"END\r\n" == get(conn, aged["never"])
    conn.close()


def test_largest_exptime_is_accepted_and_kept(expiry_server):
    """The largest exptime the journal can hold (about 292 million years) is a valid, distant time."""
    conn = expiry_server.raw()
    queue = unique_name("far")

    assert b"STORED\r\n" == conn.call(set_cmd(queue, b"x", exptime=((1 << 63) - 1) // 1000))
    assert value(queue, b"x") + b"END\r\n" == get(conn, queue)
    conn.close()


@pytest.mark.parametrize("exptime", [-1, -3600, 1_000_000, -9_999_999_999_999_999_999])
def test_negative_or_past_exptime_is_never_returned(expiry_server, exptime):
    """An item with a negative exptime, or an absolute time long past, is never returned."""
    conn = expiry_server.raw()
    queue = unique_name("past")
    conn.send(set_cmd(queue, b"dead", exptime=exptime) + set_cmd(queue, b"alive"))
    assert b"STORED\r\nSTORED\r\n" == conn.line() + conn.line()

    assert [b"alive"] * (len(READS) + 1) == read_all(conn, queue)
    conn.close()


def test_only_expired_item_gives_end_to_every_read(expiry_server):
    """A queue holding only an expired item answers END to every kind of read."""
    conn = expiry_server.raw()
    queue = unique_name("only_dead")
    assert b"STORED\r\n" == conn.call(set_cmd(queue, b"dead", exptime=-1))

    assert [] == read_all(conn, queue)
    reply = conn.call(b"monitor %s 0\r\n" % queue.encode(), b"END\r\n")
    assert b"END\r\n" == reply
    conn.close()


def test_max_age_caps_the_life_of_every_item(expiry_server, aged):
    """On a queue with max_age = 1, an item set for an hour is gone after a second."""
    conn = expiry_server.raw()

    assert b"END\r\n" == get(conn, aged["max_age"])
    conn.close()


def test_expire_to_moves_expired_items(expiry_server, aged):
    """On a queue with expire_to, an expired item moves to that queue instead of vanishing."""
    conn = expiry_server.raw()

    assert b"END\r\n" == get(conn, aged["spill"])
    assert value("spill_dead", b"moved") + b"END\r\n" == get(conn, "spill_dead")
    conn.close()


def test_expired_items_are_counted(expiry_server, aged):
    """Dropped items show in the queue's expired_items stat."""
    conn = expiry_server.raw()
    get(conn, aged["relative"] + "/peek")

    fields = parse_stats(conn.call(b"stats\r\n", b"END\r\n"))

    assert "1" == fields[f"queue_{aged['relative']}_expired_items"]
    conn.close()
