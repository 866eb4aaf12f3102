"""Real Redis processes for the engine tests: a primary, a replica, Sentinels.

Each process listens on 127.0.0.1 on a port found free just before it starts, keeps its
files in its own temporary directory, and is stopped by its PID (never by name).  A port
taken between the probe and the bind shows as a process that exits at once; it is tried
again on another port, a bounded number of times.  Readiness is asked over a raw socket
(``PING``, ``INFO replication``), so the fixtures do not depend on the client under test.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

READY_TIMEOUT = 15.0
PORT_ATTEMPTS = 5
STOP_TIMEOUT = 10.0
SENTINEL_SERVICE = "erqpy"


#: A cluster node also listens on its port + 10,000 (the cluster bus), so redis-server
#: refuses a port above this ("Redis port number too high"): a clean-clone CI run drew one.
HIGHEST_REDIS_PORT = 55535


def free_port() -> int:
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port <= HIGHEST_REDIS_PORT:
            return port
    raise RuntimeError(f"100 free ports in a row were above {HIGHEST_REDIS_PORT}")


def command(port: int, *words: str, timeout: float = 2.0) -> str:
    """Send one inline command and return the reply as text (a bulk reply's body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(" ".join(words).encode() + b"\r\n")
        reply = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
            if _complete(reply):
                break
    text = reply.decode(errors="replace")
    if text.startswith("$"):
        return text.split("\r\n", 1)[1].rsplit("\r\n", 1)[0] if not text.startswith("$-1") else ""
    return text.strip()


def _complete(reply: bytes) -> bool:
    if not reply.endswith(b"\r\n"):
        return False
    if reply.startswith(b"$") and not reply.startswith(b"$-1"):
        length = int(reply[1:reply.index(b"\r\n")])
        return len(reply) >= reply.index(b"\r\n") + 2 + length + 2
    return True  # a status, an error, an integer: one line


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05, sleep=time.sleep):
    """Poll ``predicate`` until it returns something true; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except OSError as exc:
            last_error = exc
        sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


class RedisProcess:
    """One ``redis-server`` (or ``redis-sentinel``) process."""

    def __init__(self, workdir: Path, name: str, program: str = "redis-server"):
        self.dir = Path(workdir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.program = program
        self.port = None
        self.proc = None
        self.log_path = self.dir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, extra_config: str = "") -> "RedisProcess":
        for _attempt in range(PORT_ATTEMPTS):
            self.port = free_port()
            conf = self.dir / "redis.conf"
            conf.write_text(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\nlogfile {self.log_path}\n"
                "daemonize no\nsave \"\"\nappendonly no\nprotected-mode yes\n"
                # A replica's first sync starts at once, not after the 5 s default delay.
                "repl-diskless-sync-delay 0\n" + extra_config
            )
            self.proc = subprocess.Popen(
                [shutil.which(self.program) or self.program, str(conf)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(self.dir),
            )
            if self._wait_ping():
                return self
            self.stop()
        raise RuntimeError(f"{self.program} {self.name} did not start:\n{self.log()}")

    def _wait_ping(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # the port was taken meanwhile, or the config is bad
            try:
                if command(self.port, "PING") == "+PONG":
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def info(self, section: str = "replication") -> dict:
        fields = {}
        for line in command(self.port, "INFO", section).splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key] = value.strip()
        return fields

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def kill9(self) -> None:
        """SIGKILL by PID, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT)

    def pause(self) -> None:
        """SIGSTOP by PID: the process holds its sockets but answers nothing."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGCONT)  # a paused process cannot act on SIGTERM
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill9()


def start_primary(workdir: Path, name: str = "primary", extra_config: str = "") -> RedisProcess:
    return RedisProcess(workdir, name).start(extra_config)


def start_replica(workdir: Path, primary: RedisProcess, name: str = "replica") -> RedisProcess:
    replica = RedisProcess(workdir, name).start(f"replicaof 127.0.0.1 {primary.port}\n")
    wait_until(lambda: replica.info().get("master_link_status") == "up", READY_TIMEOUT,
               f"{name} to sync with the primary on port {primary.port}")
    return replica


def start_cluster(workdir: Path, masters: int = 3, replicas_each: int = 1) -> list:
    """A Redis Cluster of ``masters`` primaries with ``replicas_each`` replicas each
    (``cluster-node-timeout 1000``), built with ``redis-cli --cluster create`` and returned
    once every node reports ``cluster_state:ok``; the first ``masters`` are the primaries."""
    nodes = [
        RedisProcess(workdir, f"cluster{index}").start(
            "cluster-enabled yes\ncluster-config-file nodes.conf\ncluster-node-timeout 1000\n")
        for index in range(masters * (1 + replicas_each))
    ]
    created = subprocess.run(
        [shutil.which("redis-cli") or "redis-cli", "--cluster", "create",
         *[f"127.0.0.1:{node.port}" for node in nodes], "--cluster-replicas", str(replicas_each),
         "--cluster-yes"],
        check=False, capture_output=True, text=True, timeout=60,
    )
    if created.returncode != 0:
        for node in nodes:
            node.stop()
        raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}{created.stderr}")
    wait_until(lambda: all("cluster_state:ok" in command(node.port, "CLUSTER", "INFO") for node in nodes),
               READY_TIMEOUT, "every cluster node to report cluster_state:ok")
    return nodes


def start_sentinels(workdir: Path, primary: RedisProcess, replicas, count: int = 3):
    """``count`` Sentinels monitoring ``primary`` as service ``SENTINEL_SERVICE``, quorum 2,
    returned once every one of them sees the others and the replicas."""
    sentinels = []
    for index in range(count):
        sentinel = RedisProcess(workdir, f"sentinel{index}", program="redis-sentinel")
        sentinel.start(
            f"sentinel resolve-hostnames no\n"
            f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {primary.port} 2\n"
            f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n"
            f"sentinel failover-timeout {SENTINEL_SERVICE} 5000\n"
        )
        sentinels.append(sentinel)

    def all_agree():
        for sentinel in sentinels:
            master = _sentinel_master(sentinel.port)
            if int(master.get("num-other-sentinels", -1)) != count - 1:
                return False
            if int(master.get("num-slaves", -1)) != len(replicas):
                return False
        return True

    # Sentinels find each other through hello messages sent every 2 s on the primary.
    wait_until(all_agree, 20.0, "the Sentinels to discover each other and the replicas", 0.2)
    return sentinels


def _sentinel_master(port: int) -> dict:
    """``SENTINEL MASTER <service>`` as a dict (the reply is a flat array of bulk strings)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
        sock.sendall(f"SENTINEL MASTER {SENTINEL_SERVICE}\r\n".encode())
        data = b""
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            words = _parse_flat_array(data)
            if words is not None:
                return dict(zip(words[::2], words[1::2], strict=True))
    return {}


def _parse_flat_array(data: bytes):
    """The words of a complete RESP array of bulk strings, or None while incomplete."""
    if not data.startswith(b"*"):
        return None
    lines = data.split(b"\r\n")
    try:
        count = int(lines[0][1:])
    except ValueError:
        return None
    words = []
    index = 1
    while len(words) < count:
        if index + 1 >= len(lines):
            return None
        words.append(lines[index + 1].decode(errors="replace"))
        index += 2
    return words
