"""Fixtures and helpers of tests/thirdparty/test_binary_clients.py: real binary-protocol
clients (Ruby's dalli, Node's memjs, Python's bmemcached) running one producer/consumer
flow against real erqpy servers.

dalli and ruby come from Debian (scripts/ci-deps); memjs is installed here with npm
(node and npm from scripts/ci-deps) into a cache directory kept between runs;
bmemcached is in the pyproject ``test`` extra.  A client that cannot be installed fails
its tests: nothing here skips.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ErqServer

HERE = Path(__file__).resolve().parent
MEMJS = "memjs@1.3.2"
#: Seconds one client's whole flow may take (its blocking gets wait at most 3 s each).
FLOW_TIMEOUT = 120
NPM_TIMEOUT = 300


def memjs_cache() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "erqpy-tests" / MEMJS.replace("@", "-")


def install_memjs() -> Path:
    """memjs installed with npm into the cache directory; returns its node_modules."""
    target = memjs_cache()
    modules = target / "node_modules"
    if not (modules / "memjs" / "package.json").is_file():
        npm = shutil.which("npm")
        assert npm, "npm is missing: scripts/ci-deps installs it"
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(target), MEMJS],
                       check=True, capture_output=True, timeout=NPM_TIMEOUT)
    return modules


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory):
    """Two erqpy servers, each with its own data directory."""
    servers = [ErqServer(tmp_path_factory.mktemp(f"binary{index}") / "data").start() for index in (1, 2)]
    yield servers
    for srv in servers:
        srv.stop()


def addresses(servers) -> str:
    return ",".join(f"{host}:{port}" for host, port in (srv.address for srv in servers))


def run_script(command, env=None) -> dict:
    """Run a flow script; its one line of JSON is what the client saw."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=FLOW_TIMEOUT,
                          env={**os.environ, **(env or {})})
    assert 0 == done.returncode, f"{command[0]} failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def dalli_flow(servers, prefix) -> dict:
    ruby = shutil.which("ruby")
    assert ruby, "ruby is missing: scripts/ci-deps installs it (with ruby-dalli)"
    return run_script([ruby, str(HERE / "binary_flow_dalli.rb"), addresses(servers), prefix])


def memjs_flow(servers, prefix) -> dict:
    node = shutil.which("node")
    assert node, "node is missing: scripts/ci-deps installs it"
    modules = install_memjs()
    return run_script([node, str(HERE / "binary_flow_memjs.js"), addresses(servers), prefix],
                      env={"NODE_PATH": str(modules)})


def bmemcached_flow(servers, prefix) -> dict:
    """The same flow with Python's bmemcached (python-binary-memcached), in process."""
    import threading
    import time

    import bmemcached

    first = "%s:%d" % servers[0].address

    def connect(*names):
        # DistributedClient spreads keys over the servers; bmemcached's default Client
        # replicates every set to all of them, which for a queue is two items.
        return bmemcached.DistributedClient(names, socket_timeout=5)

    client = connect(first)
    seen = {}
    q = f"{prefix}_fifo"
    for v in ("a", "b", "c"):
        client.set(q, v)
    seen["fifo"] = [client.get(q) for _ in range(4)]

    obj = {"n": 1, "list": [1, 2, 3], "s": "x y"}
    client.set(f"{prefix}_object", obj)  # pickled: bmemcached's object flag
    seen["object"] = client.get(f"{prefix}_object") == obj
    client.set(f"{prefix}_flags", obj)

    q = f"{prefix}_block"
    producer = connect(first)
    started = time.monotonic()
    timer = threading.Timer(0.3, producer.set, (q, "late"))
    timer.start()
    value = client.get(f"{q}/t=3000")
    seen["blocking"] = {"value": value, "waited_ms": round((time.monotonic() - started) * 1000)}
    timer.join()
    producer.disconnect_all()

    q = f"{prefix}_close"
    client.set(q, "x")
    seen["close"] = [client.get(f"{q}/open"), client.get(f"{q}/close"), client.get(q)]

    q = f"{prefix}_drop"
    client.set(q, "y")
    reader = connect(first)
    opened = reader.get(f"{q}/open")
    reader.disconnect_all()
    seen["disconnect"] = [opened, client.get(f"{q}/t=3000")]

    q = f"{prefix}_abort"
    client.set(q, "z")
    seen["abort"] = [client.get(f"{q}/open"), client.get(f"{q}/abort"), client.get(q)]

    q = f"{prefix}_peek"
    client.set(q, "p")
    seen["peek"] = [client.get(f"{q}/peek"), client.get(q), client.get(q)]

    client.set(f"{prefix}_m1", "1")
    client.set(f"{prefix}_m2", "2")
    seen["multi"] = client.get_multi([f"{prefix}_m1", f"{prefix}_m2", f"{prefix}_m3"])

    q = f"{prefix}_del"
    client.set(q, "d")
    seen["delete"] = [client.delete(q), client.get(q)]

    q = f"{prefix}_stat"
    client.set(q, "s")
    client.set(q, "s")
    (fields,) = client.stats().values()  # bmemcached gives the values as bytes
    seen["stats_items"] = fields[f"queue_{q}_items"].decode()

    both = connect(*("%s:%d" % srv.address for srv in servers))
    names = [f"{prefix}_two{i}" for i in range(1, 21)]
    for name in names:
        both.set(name, name)
    seen["two_servers"] = [both.get(name) for name in names]
    both.disconnect_all()
    client.disconnect_all()
    return json.loads(json.dumps(seen))  # the same shape as the scripts' JSON
