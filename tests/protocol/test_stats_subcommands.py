"""`version` in a form memcached clients parse, and `stats <sub-command>` as memcached
answers it, in raw bytes."""

import re

import pytest

from proto_helpers import parse_stats, put

import erqpy


def test_version_parses_as_a_memcached_version_with_major_at_least_1(conn):
    """`version` replies `VERSION 2.4.1 erqpy-<version>`: libmemcached reads major.minor.micro
    with strtol and refuses a major of 0, which `VERSION 0.1.0` had."""
    reply = conn.call(b"version\r\n")

    assert b"VERSION 2.4.1 erqpy-%s\r\n" % erqpy.__version__.encode() == reply
    major, minor, micro = re.match(rb"VERSION (\d+)\.(\d+)\.(\d+)", reply).groups()
    assert int(major) >= 1


def test_plain_stats_still_answers_every_field(conn, q):
    """`stats` with no argument is unchanged: server fields and queue fields, then END."""
    put(conn, q, b"x")

    fields = parse_stats(conn.call(b"stats\r\n", b"END\r\n"))

    assert "1" == fields[f"queue_{q}_items"]
    assert erqpy.__version__ == fields["version"]


@pytest.mark.parametrize("line", [b"stats malloc", b"stats bogus", b"stats detail on",
                                  b"stats detail dump", b"stats cachedump 1 0", b"stats settings x"])
def test_unknown_stats_sub_command_is_error_and_the_connection_stays_in_step(conn, line):
    """memcached answers ERROR for a sub-command it does not know (Perl's Cache::Memcached
    sends `stats malloc` and waits for END or ERROR); the next request is answered."""
    assert b"ERROR\r\n" == conn.call(line + b"\r\n")

    assert b"UP\r\n" == conn.call(b"status\r\n")


@pytest.mark.parametrize("sub", [b"items", b"slabs", b"sizes"])
def test_slab_tables_are_empty(conn, q, sub):
    """erqpy has no slabs: `stats items`, `stats slabs` and `stats sizes` are a bare END,
    not the full stats again."""
    put(conn, q, b"x")

    assert b"END\r\n" == conn.call(b"stats %s\r\n" % sub, b"END\r\n")


def test_stats_settings_lists_the_running_settings_without_secrets(make_server, tmp_path):
    """`stats settings` gives the server settings and the default queue settings as STAT
    lines (memcached's yes/no for booleans); tokens never appear."""
    config = tmp_path / "erqpy.toml"
    config.write_text('[control]\ntoken = "s3cret-token"\n[queues.default]\nmax_items = 500\n'
                      '[http]\ntoken = "http-s3cret"\n')
    srv = make_server("--config", str(config))
    conn = srv.raw()

    reply = conn.call(b"stats settings\r\n", b"END\r\n")

    fields = parse_stats(reply)
    assert {"port": str(srv.port), "tcpport": str(srv.port), "maxconns": "4096",
            "default_max_items": "500", "default_keep_journal": "yes",
            "admin_commands": "no"} == {k: fields[k] for k in ("port", "tcpport", "maxconns",
                                                                "default_max_items",
                                                                "default_keep_journal", "admin_commands")}
    assert b"s3cret" not in reply
    assert all(line.startswith(b"STAT ") and len(line.split(b" ")) == 3
               for line in reply.split(b"\r\n")[:-2]), reply
    conn.close()


def test_stats_conns_lists_each_connection_with_its_open_reads(shared_server, clients, q):
    """`stats conns` has memcached's `STAT <id>:addr tcp:host:port` per connection, plus the
    reliable reads each holds."""
    holder, asker = clients(), clients()
    put(holder, q, b"a", b"b")
    holder.call(b"get %s/open\r\n" % q.encode(), b"END\r\n")
    holder_port = holder.sock.getsockname()[1]

    fields = parse_stats(asker.call(b"stats conns\r\n", b"END\r\n"))

    ids = {name.split(":")[0] for name in fields}
    by_addr = {fields[f"{i}:addr"]: i for i in ids}
    holder_id = by_addr[f"tcp:127.0.0.1:{holder_port}"]
    asker_id = by_addr[f"tcp:127.0.0.1:{asker.sock.getsockname()[1]}"]
    assert ("1", "0") == (fields[f"{holder_id}:open_reads"], fields[f"{asker_id}:open_reads"])
    assert f"tcp:127.0.0.1:{shared_server.port}" == fields[f"{holder_id}:listen_addr"]


def test_stats_reset_zeroes_the_server_counters_not_the_queues(server):
    """`stats reset` replies RESET (memcached's) and restarts cmd_get, cmd_set and the
    hit counters from 0; the queues keep their items and their stats."""
    conn = server.raw()
    put(conn, "keep", b"x", b"y")
    conn.call(b"get keep\r\n", b"END\r\n")

    assert b"RESET\r\n" == conn.call(b"stats reset\r\n")

    fields = parse_stats(conn.call(b"stats\r\n", b"END\r\n"))
    assert ("0", "0", "0") == (fields["cmd_set"], fields["cmd_get"], fields["get_hits"])
    assert ("1", "2") == (fields["queue_keep_items"], fields["queue_keep_total_items"])
    conn.close()
