"""One hostile client against a fresh server per attack: peak RSS above idle, per attack.

The peak is the kernel's high-water mark (``VmHWM`` in /proc/<pid>/status) minus the RSS
of the idle server just before the attack, so nothing between two samples is missed.
Each attack is bounded in count and time, talks only to 127.0.0.1, and its server is
stopped by PID at the end.
"""

import argparse
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import ErqServer  # noqa: E402

MiB = 1 << 20
AIM_MIB = 256
ATTACK_SECONDS = 20.0


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def connect(srv, rcvbuf=None):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:  # a client that does not read: keep its own buffer small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(srv.address)
    return sock


def call(srv, data: bytes, until: bytes = b"\r\n") -> bytes:
    sock = connect(srv)
    sock.sendall(data)
    buf = b""
    deadline = time.monotonic() + 30
    while until not in buf and time.monotonic() < deadline:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
    sock.close()
    return buf


def set_item(srv, queue: str, size: int) -> None:
    reply = call(srv, b"set %s 0 0 %d\r\n%s\r\n" % (queue.encode(), size, b"x" * size))
    assert reply.startswith(b"STORED"), reply[:100]


def send_without_reading(srv, data: bytes, seconds: float = 3.0) -> None:
    """Send ``data`` as far as the server takes it within ``seconds``, never reading."""
    sock = connect(srv, rcvbuf=4096)
    sock.setblocking(False)
    view = memoryview(data)
    deadline = time.monotonic() + seconds
    while view and time.monotonic() < deadline:
        try:
            sent = sock.send(view)
            view = view[sent:]
        except BlockingIOError:
            time.sleep(0.01)
    time.sleep(1.0)  # let the server build what it will
    sock.close()


def attack_peek_16m(srv):
    """One 16 MiB item, then 100 pipelined peeks from a client that does not read."""
    set_item(srv, "big", 16 * MiB - 1024)
    send_without_reading(srv, b"get big/peek\r\n" * 100)


def attack_peek_1m(srv):
    """200 pipelined peeks of a 1 MiB item, never read."""
    set_item(srv, "big", MiB)
    send_without_reading(srv, b"get big/peek\r\n" * 200)


def attack_multi_key_peek(srv):
    """One get naming the 1 MiB item 300 times."""
    set_item(srv, "big", MiB)
    send_without_reading(srv, b"get " + b" ".join([b"big/peek"] * 300) + b"\r\n")


def attack_stats_flood(srv):
    """2,000 queues, then 200 pipelined stats, never read."""
    sock = connect(srv)
    batch = b"".join(b"set q%d 0 0 1\r\nx\r\n" % n for n in range(2000))
    sock.sendall(batch)
    got = b""
    while got.count(b"\r\n") < 2000:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        got += chunk
    sock.close()
    send_without_reading(srv, b"stats\r\n" * 200)


def attack_partial_blocks(srv):
    """48 connections, each sending 16 MiB of a set block and never finishing it."""
    socks = []
    chunk = b"x" * MiB
    deadline = time.monotonic() + ATTACK_SECONDS
    for n in range(48):
        try:
            sock = connect(srv)
            sock.sendall(b"set p%d 0 0 %d\r\n" % (n, 16 * MiB - 1024))
            for _ in range(15):
                sock.sendall(chunk)
            socks.append(sock)
        except OSError:
            break  # refused or closed by the server: that is the bound working
        if time.monotonic() > deadline:
            break
    time.sleep(1.0)
    for sock in socks:
        sock.close()


def attack_trickled_block(srv):
    """A 4 MiB block sent in 16-byte writes."""
    sock = connect(srv)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    size = 4 * MiB
    sock.sendall(b"set t 0 0 %d\r\n" % size)
    piece = b"y" * 16
    deadline = time.monotonic() + ATTACK_SECONDS
    sent = 0
    try:
        while sent < size - 16 and time.monotonic() < deadline:
            sock.send(piece)
            sent += 16
    except OSError:
        pass
    time.sleep(0.5)
    sock.close()


def attack_get_flood(srv):
    """20,000 plain gets of distinct queues that do not exist."""
    sock = connect(srv)
    for start in range(0, 20_000, 1000):
        sock.sendall(b"".join(b"get flood%d\r\n" % n for n in range(start, start + 1000)))
    deadline = time.monotonic() + ATTACK_SECONDS
    got = 0
    while got < 20_000 and time.monotonic() < deadline:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        got += chunk.count(b"END\r\n")
    sock.close()


def attack_fanout(srv):
    """500 fanout children subscribed by gets, then one 1 MiB set to their master."""
    call(srv, b"".join(b"get m+c%d\r\n" % n for n in range(500)), until=b"END\r\n" * 1)
    time.sleep(0.5)
    call(srv, b"set m 0 0 %d\r\n%s\r\n" % (MiB, b"z" * MiB))


ATTACKS = {
    "peek_16m": attack_peek_16m,
    "peek_1m": attack_peek_1m,
    "multi_key_peek": attack_multi_key_peek,
    "stats_flood": attack_stats_flood,
    "partial_blocks": attack_partial_blocks,
    "trickled_block": attack_trickled_block,
    "get_flood": attack_get_flood,
    "fanout": attack_fanout,
}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", help="comma-separated attack names: " + ",".join(ATTACKS))
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(ATTACKS)
    print(f"CPU: {cpu_model()}; aim: peak RSS at most {AIM_MIB} MiB above idle\n")
    print("| attack | idle RSS MiB | peak above idle MiB | server up after | within aim |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for name in names:
        with tempfile.TemporaryDirectory(prefix="erqpy-mem-") as tmp:
            srv = ErqServer(Path(tmp) / "data").start()
            try:
                time.sleep(0.5)
                idle = status_kib(srv.proc.pid, "VmRSS")
                try:
                    ATTACKS[name](srv)
                except OSError as exc:
                    print(f"  ({name}: the client saw {exc!r})", file=sys.stderr)
                alive = srv.proc.poll() is None
                peak = status_kib(srv.proc.pid, "VmHWM") if alive else 0
                above = (peak - idle) / 1024
                worst = max(worst, above)
                ok = alive and above <= AIM_MIB
                print(f"| {name} | {idle / 1024:.0f} | {above:.0f} | {'yes' if alive else 'NO'} | {'yes' if ok else 'NO'} |", flush=True)
            finally:
                srv.stop()
    print(f"\nworst: {worst:.0f} MiB above idle")
    return 0 if worst <= AIM_MIB else 1


if __name__ == "__main__":
    sys.exit(main())
