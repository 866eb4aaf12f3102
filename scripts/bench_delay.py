"""How late a delayed item becomes visible (issue 14: within 10 ms of its time, under load).

A producer stores ``--items`` items with ``set q/delay=<ms>``, delays spread over
``--spread`` ms, each carrying its due time; one reader waits with ``get q/t=...`` and
notes, for each item, how long after its due time it arrived (an upper bound: it includes
the reply's trip).  Meanwhile ``--load`` connections keep the server busy with set/get on
other queues, one request in flight each.  Prints median, p90, p99 and worst lateness,
the server's CPU, and the machine's CPU model.

Everything talks to 127.0.0.1 only, on a server this script starts with a temporary data
directory; every loop is bounded in count and time.
"""

import argparse
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ERQPY = ROOT / ".venv" / "bin" / "erqpy"
HOST = "127.0.0.1"


def connect(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def call(sock, request: bytes, end: bytes) -> bytes:
    sock.sendall(request)
    buf = b""
    while not buf.endswith(end):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    return buf


def load(port: int, index: int, stop) -> None:
    """One connection of set/get pairs on a queue of its own until ``stop`` is set."""
    sock = connect(port)
    queue = b"load%d" % index
    deadline = time.time() + 600
    while not stop.is_set() and time.time() < deadline:
        call(sock, b"set %s 0 0 64\r\n%s\r\n" % (queue, b"x" * 64), b"\r\n")
        call(sock, b"get %s\r\n" % queue, b"END\r\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--spread", type=int, default=3000, help="delays from 100 ms to this many ms")
    parser.add_argument("--load", type=int, default=8, help="busy connections beside the reader")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="erqpy-bench-delay-")
    proc = subprocess.Popen([str(ERQPY), "serve", "--port", "0", "--data-dir", os.path.join(workdir, "data"),
                             "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = proc.stdout.readline().decode()
    port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
    stop = mp.Event()
    loaders = [mp.Process(target=load, args=(port, n, stop), daemon=True) for n in range(args.load)]
    lateness = []
    try:
        for loader in loaders:
            loader.start()
        time.sleep(1.0)
        cpu_before = sum(float(f) for f in open(f"/proc/{proc.pid}/stat").read().split()[13:15])
        producer, reader = connect(port), connect(port)
        step = (args.spread - 100) / max(args.items - 1, 1)
        for n in range(args.items):
            delay = int(100 + n * step)
            due = time.time() + delay / 1000
            body = b"%.6f" % due
            call(producer, b"set timed/delay=%d 0 0 %d\r\n%s\r\n" % (delay, len(body), body), b"\r\n")
        deadline = time.time() + args.spread / 1000 + 30
        while len(lateness) < args.items and time.time() < deadline:
            reply = call(reader, b"get timed/t=2000\r\n", b"END\r\n")
            if reply.startswith(b"VALUE"):
                arrived = time.time()
                due = float(reply.split(b"\r\n")[1])
                lateness.append((arrived - due) * 1000)
        cpu_after = sum(float(f) for f in open(f"/proc/{proc.pid}/stat").read().split()[13:15])
    finally:
        stop.set()
        for loader in loaders:
            loader.join(timeout=10)
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)

    lateness.sort()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    ticks = os.sysconf("SC_CLK_TCK")
    print(f"CPU: {cpu}, {os.cpu_count()} cores; load: {args.load} busy connections; "
          f"server CPU during the run: {(cpu_after - cpu_before) / ticks:.1f} s")
    print(f"{len(lateness)} of {args.items} delayed items read; never early: {all(x >= 0 for x in lateness)}")
    if lateness:
        def at(q):
            return lateness[min(len(lateness) - 1, int(len(lateness) * q))]
        print(f"lateness ms: min {lateness[0]:.2f}  median {statistics.median(lateness):.2f}  "
              f"p90 {at(0.9):.2f}  p99 {at(0.99):.2f}  max {lateness[-1]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
