"""Aliases (Kestrel 2.3): ``[aliases.<name>] destinations = [...]``; a set on the alias
writes to every destination, STORED only if all stored; a get of it is END at once;
``stats`` shows ``alias_<name>_*`` lines.  Black-box: a real server with a TOML file."""

import textwrap
import time

import pytest

from tests.conftest import ErqServer
from proto_helpers import get, parse_stats, value

CONFIG = """
[aliases.signups]
destinations = ["mail", "audit"]

[aliases.small]
destinations = ["roomy", "tight"]

[queues.tight]
max_items = 1
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    base = tmp_path_factory.mktemp("aliases")
    config = base / "erqpy.toml"
    config.write_text(textwrap.dedent(CONFIG))
    server = ErqServer(base / "data", ["--config", str(config)]).start()
    yield server
    server.stop()


@pytest.fixture
def conn(srv):
    client = srv.raw()
    yield client
    client.close()


def test_set_on_alias_writes_every_destination(conn):
    """Raw bytes in, the same bytes and flags out of each destination; the alias itself
    is no queue: nothing waits under its name."""
    assert b"STORED\r\n" == conn.call(b"set signups 7 0 6\r\n\x00ab\r\nz\r\n")

    for queue in ("mail", "audit"):
        assert value(queue, b"\x00ab\r\nz", 7) + b"END\r\n" == get(conn, queue)
    stats = parse_stats(conn.call(b"stats\r\n", b"END\r\n"))
    assert "queue_signups_items" not in stats
    assert "1" == stats["alias_signups_put_items"]
    assert "6" == stats["alias_signups_put_bytes"]
    assert "mail,audit" == stats["alias_signups_children"]


def test_refused_destination_makes_not_stored_and_keeps_the_others(conn):
    """``tight`` holds one item: the second set on the alias is NOT_STORED, and, as in
    Kestrel, the copy ``roomy`` took stays there."""
    assert b"STORED\r\n" == conn.call(b"set small 0 0 3\r\none\r\n")
    assert b"NOT_STORED\r\n" == conn.call(b"set small 0 0 3\r\ntwo\r\n")

    assert value("roomy", b"one") + value("roomy", b"two") + b"END\r\n" == conn.call(
        b"get roomy roomy\r\n", b"END\r\n")
    assert value("tight", b"one") + b"END\r\n" == get(conn, "tight")
    assert b"END\r\n" == get(conn, "tight")


@pytest.mark.parametrize("key", ["signups", "signups/t=3000", "signups/open/t=3000", "signups/peek/t=3000"])
def test_get_on_alias_is_end_at_once(conn, key):
    """An alias holds nothing, so a read of it never waits, whatever ``/t=`` says."""
    conn.call(b"set signups 0 0 1\r\nx\r\n")
    started = time.monotonic()

    assert b"END\r\n" == get(conn, key)

    assert time.monotonic() - started < 1.0
    for queue in ("mail", "audit"):
        assert value(queue, b"x") + b"END\r\n" == get(conn, queue)


def test_reload_adds_an_alias_and_keeps_the_counters(srv, conn, tmp_path_factory):
    conn.call(b"set signups 0 0 1\r\nr\r\n")
    before = int(parse_stats(conn.call(b"stats\r\n", b"END\r\n"))["alias_signups_put_items"])
    config = srv.data_dir.parent / "erqpy.toml"
    config.write_text(textwrap.dedent(CONFIG) + '\n[aliases.both]\ndestinations = ["left", "right"]\n')
    try:
        srv.ctl("reload", "--config", check=True)

        assert b"STORED\r\n" == conn.call(b"set both 0 0 2\r\nhi\r\n")
        assert value("left", b"hi") + b"END\r\n" == get(conn, "left")
        assert value("right", b"hi") + b"END\r\n" == get(conn, "right")
        stats = parse_stats(conn.call(b"stats\r\n", b"END\r\n"))
        assert before == int(stats["alias_signups_put_items"])
    finally:
        config.write_text(textwrap.dedent(CONFIG))
        srv.ctl("reload", "--config", check=True)
    for queue in ("mail", "audit"):
        assert value(queue, b"r") + b"END\r\n" == get(conn, queue)


def test_the_meta_and_binary_sets_write_to_an_alias_too(srv, conn):
    """``ms`` (meta) and a binary SET are the same ``set``: an alias's destinations get it."""
    from binary_wire import SUCCESS, call, set_request

    assert b"HD\r\n" == conn.call(b"ms signups 4\r\nmeta\r\n")
    binary = srv.raw()  # a connection speaks binary from its first byte on
    try:
        assert SUCCESS == call(binary, set_request(b"signups", b"binary", flags=3)).status
    finally:
        binary.close()

    for queue in ("mail", "audit"):
        assert value(queue, b"meta") + value(queue, b"binary", 3) + b"END\r\n" == conn.call(
            f"get {queue} {queue}\r\n".encode(), b"END\r\n")
