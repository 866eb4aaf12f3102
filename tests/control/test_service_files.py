"""The service files shipped in contrib/: the systemd unit passes ``systemd-analyze
verify`` with no warning, and the supervisord file runs for real under Debian's
supervisord (installed by scripts/ci-deps): the server starts before its consumer,
serves, stops and starts through supervisorctl, and SIGTERM to supervisord stops all.

Each test derives a runnable copy of the shipped file by rewriting only its paths (the
venv, the data directory, logs), its port and ``user=``, so the rest is tested as shipped.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, RawClient

UNIT = ROOT / "contrib" / "systemd" / "erqpy.service"
SUPERVISOR_CONF = ROOT / "contrib" / "supervisord" / "erqpy.conf"
SHIPPED_BIN = "/srv/erqpy/.venv/bin/"
VENV_BIN = str(Path(sys.executable).parent) + "/"
TIMEOUT = 30.0


def wait_for(condition, timeout=TIMEOUT, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return condition()


def free_port() -> int:
    # supervisord cannot report a port chosen by the server (port 0), so the test picks one.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- systemd ----------------------------------------------------------------------------------


def verify(unit: Path) -> str:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (it comes with Debian's systemd package)")
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert 0 == result.returncode, result.stdout + result.stderr
    return (result.stdout + result.stderr).strip()


def test_systemd_unit_verifies_without_a_warning(tmp_path):
    """The shipped unit, with ExecStart pointing at this venv (verify needs the binary),
    draws no warning; LimitNOFILE (which an inline comment used to void) is kept."""
    text = UNIT.read_text()
    assert SHIPPED_BIN + "erqpy serve" in text and SHIPPED_BIN + "erqctl" in text
    unit = tmp_path / "erqpy.service"
    unit.write_text(text.replace(SHIPPED_BIN, VENV_BIN))

    assert "" == verify(unit)
    sections = re.findall(r"^\[(\w+)\]", text, re.MULTILINE)
    assert ["Unit", "Service", "Install"] == sections
    assert re.search(r"^LimitNOFILE=65536$", text, re.MULTILINE)
    assert re.search(r"^ExecReload=\S+erqctl --data-dir /var/lib/erqpy/data reload$", text, re.MULTILINE)
    assert "--data-dir /var/lib/erqpy/data" in re.search(r"^ExecStart=.*$", text, re.MULTILINE).group(0)


def test_systemd_verify_does_catch_an_inline_comment(tmp_path):
    """The check above is real: the README's old unit line draws the warning."""
    unit = tmp_path / "erqpy.service"
    unit.write_text(UNIT.read_text().replace(SHIPPED_BIN, VENV_BIN).replace(
        "LimitNOFILE=65536", "LimitNOFILE=65536             ; one descriptor per queue"))

    assert "Failed to parse resource value" in verify(unit)


# -- supervisord ------------------------------------------------------------------------------


HANDLER = '''
def handle(job):
    payload = job.payload if isinstance(job.payload, bytes) else str(job.payload).encode()
    with open({done!r}, "ab") as f:
        f.write(payload + b"\\n")
'''


class Supervisor:
    """supervisord -n on a copy of contrib/supervisord/erqpy.conf, in a temp directory."""

    def __init__(self, base: Path):
        if shutil.which("supervisord") is None:
            pytest.skip("supervisord is not installed; scripts/ci-deps installs Debian's supervisor")
        self.base = base
        self.port = free_port()
        self.done = base / "done.txt"
        self.conf = base / "supervisord.conf"
        self.log = base / "supervisord.log"
        app = base / "approot" / "app"
        app.mkdir(parents=True)
        (app / "__init__.py").write_text("")
        (app / "jobs.py").write_text(HANDLER.format(done=str(self.done)))
        (base / "erqpy.toml").write_text(f'[server]\nhost = "127.0.0.1"\nport = {self.port}\n')
        (base / "logs").mkdir()
        text = SUPERVISOR_CONF.read_text()
        for old, new in (
            (SHIPPED_BIN, VENV_BIN),
            ("/etc/erqpy/erqpy.toml", str(base / "erqpy.toml")),
            ("/var/lib/erqpy/data", str(base / "data")),
            ("/var/log/erqpy/", str(base / "logs") + "/"),
            ("directory=/srv/app", f"directory={base / 'approot'}"),
            ("127.0.0.1:22133", f"127.0.0.1:{self.port}"),
        ):
            assert old in text, old
            text = text.replace(old, new)
        text = re.sub(r"^user=.*\n", "", text, flags=re.MULTILINE)  # the test runs as itself
        sock = base / "supervisor.sock"
        self.conf.write_text(text + f"""
[supervisord]
logfile={self.log}
pidfile={base / 'supervisord.pid'}
childlogdir={base / 'logs'}

[unix_http_server]
file={sock}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{sock}
""")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(["supervisord", "-n", "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def ctl(self, *args) -> subprocess.CompletedProcess:
        return subprocess.run(["supervisorctl", "-c", str(self.conf), *args], capture_output=True,
                              text=True, timeout=TIMEOUT)

    def pid(self, program: str) -> int:
        out = self.ctl("pid", program).stdout.strip()
        return int(out) if out.isdigit() else 0

    def serving(self) -> bool:
        try:
            client = RawClient(("127.0.0.1", self.port), timeout=2)
        except OSError:
            return False
        try:
            return client.call(b"version\r\n").startswith(b"VERSION ")
        except OSError:
            return False
        finally:
            client.close()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A child supervisord has not reaped yet is a zombie: gone for our purpose.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture
def supervisor(tmp_path):
    sup = Supervisor(tmp_path).start()
    yield sup
    sup.stop()


def test_supervisord_runs_the_server_and_its_consumer(supervisor):
    """The server starts first (priority), serves, and the consumer handles a job;
    supervisorctl stop/start stop the server gracefully and bring it back; SIGTERM to
    supervisord stops every program and supervisord exits."""
    sup = supervisor
    assert wait_for(sup.serving), sup.log.read_text() if sup.log.exists() else "no log"
    consumer = "erqpy-consumer:erqpy-consumer_00"
    assert wait_for(lambda: "RUNNING" in sup.ctl("status", consumer).stdout), sup.ctl("status").stdout
    spawned = re.findall(r"spawned: '([\w-]+)'", sup.log.read_text())
    assert "erqpy" == spawned[0] and {"erqpy-consumer_00", "erqpy-consumer_01"} <= set(spawned)

    client = RawClient(("127.0.0.1", sup.port))
    assert b"STORED\r\n" == client.call(b"set jobs 0 0 5\r\nhello\r\n")
    client.close()
    assert wait_for(lambda: sup.done.exists() and b"hello\n" == sup.done.read_bytes())

    server_pid = sup.pid("erqpy")
    stopped = sup.ctl("stop", "erqpy")
    assert "erqpy: stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    assert not alive(server_pid) and not sup.serving()
    server_log = (sup.base / "logs" / "erqpy.log").read_text()
    assert "INFO erqpy.server: stopped" in server_log  # SIGTERM, graceful, not SIGKILL
    started = sup.ctl("start", "erqpy")
    assert "erqpy: started" in started.stdout, started.stdout + started.stderr
    assert wait_for(sup.serving)

    pids = [sup.pid("erqpy"), sup.pid(consumer), sup.pid("erqpy-consumer:erqpy-consumer_01")]
    assert all(pids), pids
    sup.proc.send_signal(signal.SIGTERM)
    assert 0 == sup.proc.wait(timeout=TIMEOUT)
    assert not any(alive(pid) for pid in pids)
    assert 2 == (sup.base / "logs" / "erqpy.log").read_text().count("INFO erqpy.server: stopped")
