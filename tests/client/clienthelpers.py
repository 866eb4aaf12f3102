"""Helpers for the client tests: polling, the handlers' event log, and ``erqpy consume``
subprocesses whose handlers (``consume_handlers.py`` beside this file) log what they did."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import wait_until as shared_wait_until

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def wait_until(predicate, timeout=30.0, what="condition"):
    """The shared poll, with the longer default these subprocess tests need."""
    return shared_wait_until(predicate, timeout, what, interval=0.05)


def server_spec(srv):
    return f"127.0.0.1:{srv.port}"


class EventLog:
    """The file the test handlers append to; ``events()`` parses it."""

    def __init__(self, path):
        self.path = Path(path)

    def events(self, kind=None):
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        parsed = [tuple(line.split(" ")) for line in lines if line]
        return [e for e in parsed if kind is None or e[0] == kind]

    def payloads(self, kind):
        return [e[1] for e in self.events(kind)]


class ConsumerProcess:
    """One ``erqpy consume`` process; stderr goes to a file for post-mortems."""

    def __init__(self, tmp_path, index, queue, servers, args, events, env=None):
        exe = Path(sys.executable).parent / "erqpy"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "erqpy"]
        cmd += ["consume", queue, "--servers", ",".join(servers)] + list(args)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("ERQPY_")}
        environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), environ.get("PYTHONPATH")]))
        environ["ERQPY_TEST_EVENTS"] = str(events.path)
        environ.update(env or {})
        self.log_path = Path(tmp_path) / f"consumer{index}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=environ,
                                     cwd=str(ROOT))

    def log(self):
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout=60):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"consumer still running after {timeout} s:\n{self.log()}") from None

    def signal(self, signum):
        self.proc.send_signal(signum)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._log.close()
