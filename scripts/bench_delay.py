"""How late a delayed item becomes visible (issue 14: within 10 ms of its time, under load).

A producer stores ``--items`` items with ``set q/delay=<ms>``, delays spread over
``--spread`` ms, each carrying its due time; one reader waits with ``get q/t=...`` and
notes, for each item, how long after its due time it arrived (an upper bound: it includes
the reply's trip).  Meanwhile ``--load`` connections, driven by one process, keep the
server busy with set/get on other queues, one request in flight each.  Prints median, p90, p99 and worst lateness,
the server's CPU, and the machine's CPU model.

Everything talks to 127.0.0.1 only, on a server this script starts with a temporary data
directory; every loop is bounded in count and time.
"""

import argparse
import multiprocessing as mp
import os
import selectors
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


def load(port: int, connections: int, stop) -> None:
    """``connections`` sockets of set/get pairs, each on a queue of its own, one request in
    flight per socket, all driven by this one process (so the load competes with the
    reader for the server, not for the machine's two cores) until ``stop`` is set."""
    selector = selectors.DefaultSelector()
    payload = b"x" * 64
    for index in range(connections):
        sock = connect(port)
        state = {"sock": sock, "queue": b"load%d" % index, "set": True, "buf": b""}
        selector.register(sock, selectors.EVENT_READ, state)
        sock.sendall(b"set %s 0 0 64\r\n%s\r\n" % (state["queue"], payload))
    deadline = time.time() + 600
    while not stop.is_set() and time.time() < deadline:
        for key, _ in selector.select(timeout=0.1):
            state = key.data
            state["buf"] += state["sock"].recv(65536)
            if not state["buf"].endswith(b"STORED\r\n" if state["set"] else b"END\r\n"):
                continue
            state["buf"] = b""
            state["set"] = not state["set"]
            if state["set"]:
                state["sock"].sendall(b"set %s 0 0 64\r\n%s\r\n" % (state["queue"], payload))
            else:
                state["sock"].sendall(b"get %s\r\n" % state["queue"])


def read_back(port: int, count: int, seconds: float, out) -> None:
    """The reader, from before the first set on: ``count`` items or ``seconds``; sends
    each item's lateness in ms."""
    reader = connect(port)
    lateness = []
    trips = []  # round trips of a get that found an item waiting already (ms)
    deadline = time.time() + seconds
    while len(lateness) < count and time.time() < deadline:
        sent = time.time()
        reply = call(reader, b"get timed/t=2000\r\n", b"END\r\n")
        if reply.startswith(b"VALUE"):
            arrived = time.time()
            due = float(reply.split(b"\r\n")[1])
            lateness.append((arrived - due) * 1000)
            if due < sent:
                trips.append((arrived - sent) * 1000)
    out.send((lateness, trips))


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
    loaders = [mp.Process(target=load, args=(port, args.load, stop), daemon=True)] if args.load else []
    lateness = []
    try:
        for loader in loaders:
            loader.start()
        time.sleep(1.0)
        cpu_before = sum(float(f) for f in open(f"/proc/{proc.pid}/stat").read().split()[13:15])
        receiver, sender = mp.Pipe(duplex=False)
        reader = mp.Process(target=read_back, args=(port, args.items, args.spread / 1000 + 60, sender), daemon=True)
        reader.start()
        producer = connect(port)
        step = (args.spread - 100) / max(args.items - 1, 1)
        for n in range(args.items):
            delay = int(100 + n * step)
            due = time.time() + delay / 1000
            body = b"%.6f" % due
            call(producer, b"set timed/delay=%d 0 0 %d\r\n%s\r\n" % (delay, len(body), body), b"\r\n")
        lateness, trips = receiver.recv()
        reader.join(timeout=10)
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
    # The server keeps due times in whole milliseconds: "early" is earlier than that.
    print(f"{len(lateness)} of {args.items} delayed items read; "
          f"never early (1 ms resolution): {all(x > -1.0 for x in lateness)}")
    if lateness:
        def at(q):
            return lateness[min(len(lateness) - 1, int(len(lateness) * q))]
        print(f"lateness ms: min {lateness[0]:.2f}  median {statistics.median(lateness):.2f}  "
              f"p90 {at(0.9):.2f}  p99 {at(0.99):.2f}  max {lateness[-1]:.2f}")
    if trips:
        # What a get costs the reader anyway under this load: the floor of the lateness.
        print(f"round trip of a get whose item was due already: median {statistics.median(trips):.2f} ms "
              f"over {len(trips)} gets")


if __name__ == "__main__":
    sys.exit(main())
