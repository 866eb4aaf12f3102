"""Engine mode end to end: ``erqpy serve`` processes with ``[storage] backend = "redis"``
on one real redis-server, spoken to over raw memcache bytes.  Two nodes hold no queue
state of their own: what is set on one is read on the other, and the open reads of a
node that is SIGKILLed come back through the other once its lease is gone."""

import json
import subprocess
import time

from tests.conftest import _bin, queue_waiters, wait_until

LEASE_TTL = 1.0


def engine_config(tmp_path, name, redis_primary, key_prefix) -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'[storage]\nbackend = "redis"\nurl = "{redis_primary.url}"\n'
                    f'prefix = "{key_prefix}"\nlease_ttl = {LEASE_TTL}\n')
    return str(path)


def two_nodes(make_server, tmp_path, redis_primary, key_prefix):
    return [make_server("--config", engine_config(tmp_path, name, redis_primary, key_prefix))
            for name in ("a", "b")]


def test_a_set_on_one_node_is_read_on_the_other(make_server, tmp_path, redis_primary, key_prefix):
    a, b = two_nodes(make_server, tmp_path, redis_primary, key_prefix)
    writer, reader = a.raw(), b.raw()

    assert b"STORED\r\n" == writer.call(b"set jobs 0 0 5\r\nhello\r\n")
    assert b"VALUE jobs 0 5\r\nhello\r\nEND\r\n" == reader.call(b"get jobs\r\n", b"END\r\n")
    assert b"END\r\n" == writer.call(b"get jobs\r\n", b"END\r\n")


def test_a_blocking_read_on_one_node_gets_an_item_set_on_the_other(make_server, tmp_path, redis_primary,
                                                                   key_prefix):
    a, b = two_nodes(make_server, tmp_path, redis_primary, key_prefix)
    writer, reader = a.raw(), b.raw()
    writer.call(b"set jobs 0 0 1\r\nx\r\n")
    reader.call(b"get jobs\r\n", b"END\r\n")  # the queue exists, empty

    reader.send(b"get jobs/t=10000\r\n")
    wait_until(lambda: queue_waiters(b, "jobs") == 1, what="the read blocked on b")
    assert b"STORED\r\n" == writer.call(b"set jobs 0 0 4\r\nlate\r\n")

    assert b"VALUE jobs/t=10000 0 4\r\nlate\r\nEND\r\n" == reader.read_until(b"END\r\n", timeout=10)


def test_the_open_reads_of_a_killed_node_come_back_through_the_other(make_server, tmp_path, redis_primary,
                                                                    key_prefix):
    a, b = two_nodes(make_server, tmp_path, redis_primary, key_prefix)
    a.raw().call(b"set jobs 0 0 3\r\none\r\n")
    holder = a.raw()
    assert b"VALUE jobs/open 0 3\r\none\r\nEND\r\n" == holder.call(b"get jobs/open\r\n", b"END\r\n")
    reader = b.raw()
    assert b"END\r\n" == reader.call(b"get jobs\r\n", b"END\r\n")  # out on a's open read

    a.kill9()
    killed = time.monotonic()

    wait_until(lambda: reader.call(b"get jobs/peek\r\n", b"END\r\n") != b"END\r\n", timeout=LEASE_TTL * 10,
               what="a's open read to come back through b")
    assert time.monotonic() - killed < LEASE_TTL * 10
    assert b"VALUE jobs 0 3\r\none\r\nEND\r\n" == reader.call(b"get jobs\r\n", b"END\r\n")


def test_a_redis_backend_without_a_location_refuses_the_start_with_its_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[storage]\nbackend = "redis"\n')

    result = subprocess.run(_bin("erqpy") + ["serve", "--port", "0", "--data-dir", str(tmp_path / "data"),
                                            "--config", str(path)],
                            capture_output=True, text=True, timeout=30)

    assert 0 != result.returncode
    assert f"{path}:2" in result.stderr and "needs exactly one of url" in result.stderr, result.stderr


def test_an_engine_node_does_not_watch_the_disk_for_group_writes(make_server, tmp_path, redis_primary,
                                                                 key_prefix):
    # An engine node writes no journal, so the syncer's look at the data directory's free
    # space (every 50 ms) has nothing to decide: it used to run and log as if it did.
    node = make_server("--config", engine_config(tmp_path, "a", redis_primary, key_prefix),
                       "--log-level", "info")
    assert b"STORED\r\n" == node.raw().call(b"set jobs 0 0 2\r\nhi\r\n")

    status = json.loads(node.ctl("--json", "status", check=True).stdout)

    assert status["group_writes_allowed"] is False
    assert 0 == status["group_writes"]
    assert "journal records are" not in node.log()
