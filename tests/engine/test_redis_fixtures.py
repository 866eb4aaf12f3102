"""The Redis fixtures start what they promise, and redis-py yields under gevent."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT
from tests.engine import redis_procs


def test_primary_answers_and_keeps_its_files_in_its_directory(redis_primary):
    assert redis_procs.command(redis_primary.port, "PING") == "+PONG"
    assert str(redis_primary.dir) in redis_procs.command(redis_primary.port, "CONFIG", "GET", "dir")
    assert redis_primary.info()["role"] == "master"


def test_replica_follows_the_primary(redis_pair):
    primary, replica = redis_pair
    assert replica.info()["role"] == "slave"
    assert primary.info()["connected_slaves"] == "1"
    redis_procs.command(primary.port, "SET", "fixture-key", "v")
    redis_procs.wait_until(lambda: redis_procs.command(replica.port, "GET", "fixture-key") == "v",
                           5.0, "the write to reach the replica")


def test_sentinels_see_each_other_and_name_the_primary(redis_sentinels):
    primary, _replica, sentinels = redis_sentinels
    assert len(sentinels) == 3
    for sentinel in sentinels:
        master = redis_procs._sentinel_master(sentinel.port)
        assert master["port"] == str(primary.port)
        assert master["num-other-sentinels"] == "2"
        assert master["quorum"] == "2"


def test_stop_ends_the_process_by_pid(tmp_path):
    server = redis_procs.start_primary(tmp_path, "short-lived")
    pid = server.proc.pid
    server.stop()
    assert server.proc.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


GEVENT_PROBE = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()
    import json, sys, time
    import gevent, redis

    client = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), socket_timeout=5)
    client.delete("gevent-probe", "gevent-probe-dst")
    ticks = []

    def ticker():
        deadline = time.monotonic() + 0.9
        while time.monotonic() < deadline:
            ticks.append(time.monotonic())
            gevent.sleep(0.01)

    def blocked(call):
        started = time.monotonic()
        reply = call()
        return reply, time.monotonic() - started

    results = {}
    for name, call in (
        ("blpop", lambda: client.blpop("gevent-probe", timeout=1)),
        ("blmove", lambda: client.blmove("gevent-probe", "gevent-probe-dst", 1, "LEFT", "RIGHT")),
    ):
        ticks.clear()
        tick = gevent.spawn(ticker)
        reply, waited = blocked(call)
        tick.join()
        results[name] = {"reply": reply, "waited": waited, "ticks": len(ticks)}

    # An item pushed by another greenlet while one is blocked reaches the blocked one.
    other = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), socket_timeout=5)
    pusher = gevent.spawn_later(0.2, other.rpush, "gevent-probe", b"x")
    started = time.monotonic()
    got = client.blpop("gevent-probe", timeout=2)
    results["handoff"] = {"reply": got[1].decode(), "waited": time.monotonic() - started}
    pusher.join()
    print(json.dumps(results))
""")


def test_redis_py_blocking_calls_yield_under_gevent(redis_primary):
    """The server runs monkey patched: a BLPOP/BLMOVE waiting in Redis must let the other
    greenlets run (about 90 ticks of 10 ms in the 0.9 s the ticker runs), not freeze the hub."""
    result = subprocess.run(
        [sys.executable, "-c", GEVENT_PROBE, str(redis_primary.port)],
        check=False, capture_output=True, text=True, timeout=30, cwd=str(ROOT),
    )
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    for name in ("blpop", "blmove"):
        assert results[name]["reply"] is None
        assert 0.9 <= results[name]["waited"] < 2.0
        assert results[name]["ticks"] >= 20, results  # about 90; a frozen hub would give 1
    assert results["handoff"]["reply"] == "x"
    assert 0.15 <= results["handoff"]["waited"] < 1.5
