"""Shared fixtures: a real ``erqpy serve`` process on 127.0.0.1, port 0, with its own
temporary data directory, and a deliberately simple raw-socket client.

Black-box tests speak bytes through ``RawClient`` (never erqpy's own codec) or through
pymemcache.  ``ErqServer`` can SIGKILL and restart on the same directory.
"""

import os
import select
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 20.0


def wait_until(predicate, timeout: float = 10.0, what: str = "condition", *, interval: float = 0.02):
    """Poll ``predicate`` until it returns a true value and return that value; fail the
    test after ``timeout`` seconds.

    The barrier for "the server got there" before an assertion: a bounded poll of what
    can be observed (a stats field, a log line), never a sleep that hopes it was enough.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def mounted_tmpfs(tmp_path, size: str):
    """A real tmpfs of ``size`` (``mount -o size=...``) on a directory under ``tmp_path``,
    for tests of a full disk; a generator for a fixture to yield from (it unmounts).
    Skips where mounting is not allowed (not root)."""
    if os.geteuid() != 0:
        pytest.skip(f"needs root to mount a {size} tmpfs (CI runs as root)")
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def hooked_server(make_server, tmp_path, hook_source: str, *args):
    """A server whose process runs ``hook_source`` first (a sitecustomize on its
    PYTHONPATH): a slow or failing disk, made to order."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent(hook_source))
    return make_server(*args, env={"PYTHONPATH": str(hook)})


def _bin(name: str) -> list[str]:
    """A console script of the active environment, or its module equivalent."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return [str(candidate)]
    target = {"erqpy": "main", "erqctl": "ctl"}[name]
    return [sys.executable, "-c", f"from erqpy.cli import {target}; {target}()"]


def queue_waiters(srv, queue: str) -> int:
    """How many readers are blocked on ``queue`` (0 for a queue that does not exist:
    a blocked read of a missing queue shows in no stats)."""
    client = srv.raw()
    try:
        reply = client.call(b"stats\r\n", b"END\r\n")
    finally:
        client.close()
    prefix = b"STAT queue_%s_waiters " % queue.encode()
    return next((int(line[len(prefix):]) for line in reply.split(b"\r\n") if line.startswith(prefix)), 0)


class ErqServer:
    """One erqpy server process bound to 127.0.0.1 on a free port."""

    def __init__(self, data_dir: Path, args=(), env=None):
        self.data_dir = Path(data_dir)
        self.args = list(args)
        self.env = dict(env or {})
        self.proc = None
        self.port = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server.log"
        self.banner = ""
        self.preexec_fn = None  # run in the server process before exec (e.g. setrlimit)

    @property
    def address(self):
        return ("127.0.0.1", self.port)

    def start(self, extra_args=(), env=None):
        cmd = _bin("erqpy") + [
            "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", str(self.data_dir),
        ] + self.args + list(extra_args)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("ERQPY_")}
        environ.update(self.env)
        environ.update(env or {})
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._log, env=environ, cwd=str(ROOT),
            preexec_fn=self.preexec_fn,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        line = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                line += chunk
                if b"\n" in line:
                    break
            elif self.proc.poll() is not None:
                break
        self.banner = line.decode(errors="replace").strip()
        if "listening on" not in self.banner:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"server did not start: {self.banner!r}\n{self.log()}")
        self.port = int(self.banner.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill9(self):
        """SIGKILL: no chance to clean up, as in a crash."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._close_pipes()

    def terminate(self, timeout=20) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self._close_pipes()
        return code

    def restart(self, extra_args=(), env=None):
        if self.proc is not None and self.proc.poll() is None:
            self.terminate()
        return self.start(extra_args, env)

    def _close_pipes(self):
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def ctl(self, *args, check=False, timeout=60) -> subprocess.CompletedProcess:
        """Run erqctl against this server's control socket."""
        cmd = _bin("erqctl") + ["--data-dir", str(self.data_dir)] + list(args)
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"erqctl {args} failed: {result.stdout}{result.stderr}")
        return result

    def client(self, **kwargs):
        from pymemcache.client.base import Client

        kwargs.setdefault("timeout", 10)
        kwargs.setdefault("connect_timeout", 5)
        return Client(self.address, **kwargs)

    def raw(self) -> "RawClient":
        return RawClient(self.address)


class RawClient:
    """A raw socket: send bytes, read replies.  Simple on purpose, not efficient."""

    def __init__(self, address, timeout=10.0):
        self.sock = socket.create_connection(address, timeout=timeout)
        self.buf = b""

    def send(self, data: bytes):
        self.sock.sendall(data)

    def read_until(self, terminator: bytes = b"END\r\n", timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while terminator not in self.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {terminator!r} in {self.buf[:300]!r}")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError(f"closed; buffered {self.buf[:300]!r}")
            self.buf += chunk
        end = self.buf.index(terminator) + len(terminator)
        out, self.buf = self.buf[:end], self.buf[end:]
        return out

    def read_exactly(self, n: int, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"wanted {n} bytes, have {self.buf[:300]!r}")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError(f"closed; buffered {self.buf[:300]!r}")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def line(self, timeout: float = 10.0) -> bytes:
        """One reply line, with its CRLF."""
        return self.read_until(b"\r\n", timeout)

    def call(self, data: bytes, terminator: bytes = b"\r\n", timeout: float = 10.0) -> bytes:
        self.send(data)
        return self.read_until(terminator, timeout)

    def is_closed(self, timeout: float = 2.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (TimeoutError, socket.timeout):
            return False
        except ConnectionError:
            return True

    def close(self):
        self.sock.close()

    def reset(self):
        """Close with a TCP reset (SO_LINGER 0), as a crashed or killed client does."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


@pytest.fixture
def server(tmp_path):
    """A fresh server with its own data directory, stopped after the test."""
    srv = ErqServer(tmp_path / "data").start()
    yield srv
    srv.stop()


@pytest.fixture
def make_server(tmp_path):
    """Factory for servers with extra arguments or environment; all stopped afterwards."""
    started = []

    def factory(*args, data_dir=None, env=None, start=True):
        srv = ErqServer(Path(data_dir) if data_dir else tmp_path / f"data{len(started)}", args, env)
        started.append(srv)
        return srv.start() if start else srv

    yield factory
    for srv in started:
        srv.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    """One server for a whole module; tests use distinct queue names."""
    srv = ErqServer(tmp_path_factory.mktemp("shared") / "data").start()
    yield srv
    srv.stop()


@pytest.fixture
def raw(server):
    client = server.raw()
    yield client
    client.close()


_MARKS = {"unit": "unit", "protocol": "protocol", "recovery": "recovery", "control": "control",
          "client": "protocol", "http": "protocol", "fuzz": "protocol", "thirdparty": "protocol"}


def pytest_collection_modifyitems(config, items):
    """Mark tests from their directory, so that ``-m`` never silently skips a test."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        if len(parts) > 1 and parts[0] in _MARKS:
            item.add_marker(getattr(pytest.mark, _MARKS[parts[0]]))
