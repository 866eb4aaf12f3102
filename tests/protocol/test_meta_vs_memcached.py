"""The meta protocol's framing is memcached's: the same requests go to a real memcached
(Debian's ``memcached``, installed by scripts/ci-deps, started here on a free loopback port
and stopped by its PID) and to a real erqpy, and the replies must be the same bytes.

The requests are those whose meaning coincides for a cache and a queue: one item stored
and read once, misses, quiet mode, base64 keys, opaque and key echo, flag syntax, errors,
the item limit.  Where a queue must differ (a second read, what ``md`` deletes) the meta
tests of test_meta_protocol.py say what erqpy does."""

import base64
import os
import shutil
import socket
import subprocess
import time

import pytest
from proto_helpers import unique_name

from tests.conftest import ErqServer

#: The item limit of both servers: memcached's ``-I``, erqpy's ``max_item_size``.
ITEM_LIMIT = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, proc, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"memcached exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"memcached did not listen on {port} within {timeout} s")


@pytest.fixture(scope="module")
def memcached():
    """A real memcached on 127.0.0.1; its (host, port)."""
    binary = shutil.which("memcached")
    if binary is None:
        pytest.fail("memcached is not installed: scripts/ci-deps installs Debian's memcached")
    for _attempt in range(3):  # a free port may be taken between the probe and the bind
        port = _free_port()
        cmd = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-I", str(ITEM_LIMIT), "-m", "64"]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]  # memcached refuses to run as root without -u
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_for_port(port, proc)
        except RuntimeError:
            proc.kill()
            proc.wait(timeout=10)
            continue
        yield ("127.0.0.1", port)
        proc.terminate()
        proc.wait(timeout=10)
        return
    pytest.fail("memcached did not start")


@pytest.fixture(scope="module")
def erqpy(tmp_path_factory):
    """An erqpy with memcached's item limit; its (host, port)."""
    base = tmp_path_factory.mktemp("meta_vs_memcached")
    config = base / "erqpy.toml"
    config.write_text(f"[queues.default]\nmax_item_size = {ITEM_LIMIT}\n")
    srv = ErqServer(base / "data", ["--config", str(config)]).start()
    yield srv.address
    srv.stop()


def exchange(address, request: bytes, timeout: float = 10.0) -> bytes:
    """Send ``request`` (ending with ``mn``) on a new connection; the replies up to the
    ``MN`` of its last ``mn`` (an earlier ``mn``'s ``MN`` may end a chunk: reading up to
    the first one cut replies short when the server was slow)."""
    wanted = sum(1 for line in request.split(b"\r\n") if line == b"mn" or line.startswith(b"mn "))
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(request)
        reply = b""
        deadline = time.monotonic() + timeout
        while not (reply.endswith(b"MN\r\n") and reply.count(b"MN\r\n") >= wanted):
            if time.monotonic() > deadline:
                break
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            reply += chunk
        return reply


def first_line(address, request: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(request)
        reply = b""
        while b"\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        return reply.split(b"\r\n")[0]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


#: name -> request; ``{k}`` is a key of its own per server run, ``{b}`` that key in base64.
CASES = {
    "mn": "mn\r\nmn with junk\r\n",
    "set then get with every return flag": "ms {k} 2 F7 T0 k O1\r\nab\r\nmg {k} v f k O2 s t\r\n",
    "ttl and size": "ms {k} 3 T600\r\nabc\r\nmg {k} t s v\r\n",
    "negative ttl is already expired": "ms {k} 2 T-1\r\nab\r\nmg {k} v\r\n",
    "mode set": "ms {k} 2 MS\r\nab\r\nmg {k} v\r\n",
    "miss": "mg {k} v\r\nmg {k}\r\nmg {k} s f t v\r\n",
    "miss echoes opaque and key": "mg {k} k Oabc\r\nmg {k} Oabc k v\r\n",
    "hit without value": "ms {k} 1\r\nx\r\nmg {k} s f\r\n",
    "quiet batch": "ms {k} 1 q\r\nx\r\nmg {k} q v O1\r\nmg {k}_none q v O2\r\nmd {k} q\r\nmd {k} q\r\n",
    "quiet set keeps errors": "ms {k} 1 q Z\r\nx\r\nms {k} 1 q F\r\nx\r\n",
    "base64 key": "ms {b} 2 b k\r\nab\r\nmg {b} k b v\r\n",
    "base64 key with opaque": "ms {b} 2 b O5 k\r\nab\r\nmg {b} b O6 k v q\r\n",
    # Not {k} in the ms: whether memcached's lenient decoder takes a plain key as base64
    # depends on its length (the pid and counter in it), so the case was a coin toss.
    "bad base64 key": "mg Zm9 b v\r\nmg !!!! b k v\r\nms Zm9 1 b\r\nx\r\n",
    "delete then delete again": "ms {k} 1\r\nx\r\nmd {k} k O1\r\nmd {k} k O2\r\nmd {k} q\r\n",
    "delete a base64 key": "ms {b} 1 b\r\nx\r\nmd {b} b k\r\n",
    "debug line of a missing key": "me {k}\r\n",
    "arithmetic": "ma {k}\r\nms {k} 1\r\nx\r\nma {k}\r\nma {k} v\r\n",
    "duplicate flag": "mg {k} v v\r\nmg {k} k f k\r\n",
    "invalid flags": "mg {k} x\r\nmg {k} 1\r\nms {k} 1 Z\r\nx\r\nms {k} 1 S1\r\nx\r\nmd {k} x\r\n",
    "bad numbers": "ms {k} 1 F\r\nx\r\nms {k} 1 Fx\r\nx\r\nms {k} 1 F-1\r\nx\r\nms {k} 1 Tx\r\nx\r\n",
    "bad mode": "ms {k} 1 MX\r\nx\r\n",
    "opaque": "mg {k} O\r\nmg {k} O" + "x" * 31 + "\r\nmg {k} O" + "x" * 32 + "\r\n",
    "no key": "mg\r\nmd\r\nma\r\nme\r\n",
    "unknown meta command": "mx {k}\r\n",
    "a pipeline": "ms {k} 1 O1\r\na\r\nmg {k}_other v\r\nms {k}_other 1 k\r\nb\r\nmg {k} v O2\r\nmg {k}_other v k\r\n",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_erqpy_answers_as_memcached(memcached, erqpy, name):
    key = unique_name("meta")
    request = (CASES[name].replace("{k}", key).replace("{b}", b64(key)) + "mn\r\n").encode()

    expected = exchange(memcached, request)

    assert expected.endswith(b"MN\r\n"), expected
    assert expected == exchange(erqpy, request)


def test_a_block_over_the_item_limit_is_refused_as_memcached_refuses_it(memcached, erqpy):
    key = unique_name("big").encode()
    big = b"x" * (2 * ITEM_LIMIT)
    request = b"ms %s %d T0\r\n%s\r\nms %s %d q\r\n%s\r\nms %s 1\r\ny\r\nmg %s v\r\nmn\r\n" % (
        key, len(big), big, key, len(big), big, key, key)

    expected = exchange(memcached, request, timeout=30)

    assert expected.startswith(b"SERVER_ERROR object too large for cache\r\n" * 2)
    assert expected == exchange(erqpy, request, timeout=30)


@pytest.mark.parametrize("request_bytes", [
    b"ms %s abc\r\nabc\r\nmn\r\n", b"ms %s\r\nabc\r\nmn\r\n", b"ms %s -1\r\nabc\r\nmn\r\n",
    b"ms %s 3\r\nabcd\r\nmn\r\n",
], ids=["not a number", "missing", "negative", "wrong terminator"])
def test_a_bad_ms_block_gets_memcached_s_error_line(memcached, erqpy, request_bytes):
    """The error line is memcached's.  After it memcached reads the rest as commands;
    erqpy closes the connection when the length is unreadable (PROTOCOL.md "Framing") and
    skips to the next line end after a wrong terminator (test_meta_protocol.py)."""
    request = request_bytes.replace(b"%s", unique_name("bad").encode())

    assert first_line(memcached, request) == first_line(erqpy, request)
