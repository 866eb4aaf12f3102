"""Measure what a handler reload costs a running erqpy server.

1. Swap time: the server's own prepare+commit time for a reload (read source, compile,
   execute into a fresh module, check, swap), as reported by the control channel, and
   the round trip of a control-channel reload as a client sees it.
2. Throughput dip and latency: load processes keep connections busy with set / get (one
   request in flight per connection) for a baseline window, then during ``--reloads``
   reloads (back to back, or one every ``--interval`` seconds), then for a window after.
   Completed operations are counted in 100 ms buckets and each one's latency is kept;
   the report compares the rate and the p99 latency during the reloads with the
   baseline window of the same run.  The issue's setting: ``--connections 500
   --interval 0.1 --reloads 100``.

Everything runs on 127.0.0.1 against a server this script starts with a temporary data
directory; every loop is bounded in time.
"""

import argparse
import multiprocessing as mp
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from erqpy.server import control_client  # noqa: E402
from erqpy.server.reloader import default_handlers_path  # noqa: E402

BUCKET = 0.1


def start_server(data_dir, handlers_path):
    erqpy = Path(sys.executable).parent / "erqpy"
    proc = subprocess.Popen(
        [str(erqpy), "serve", "--port", "0", "--data-dir", data_dir, "--log-level", "warning",
         "--handlers", handlers_path],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    line = proc.stdout.readline().decode()
    port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
    return proc, port


def load_worker(port, connections, start_at, stop_at, out):
    """``stop_at`` is a shared value: the main process moves it once reloads are done."""
    # Drive ``connections`` sockets, alternating set and get; count per bucket.
    selector = selectors.DefaultSelector()
    payload = b"x" * 64
    buckets = {}
    conns = []
    for i in range(connections):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        queue = b"bench%d_%d" % (os.getpid(), i)
        state = {"sock": sock, "queue": queue, "set": True, "buf": b""}
        conns.append(state)
        selector.register(sock, selectors.EVENT_READ, state)
    while time.time() < start_at:
        time.sleep(0.001)

    latencies = {}  # bucket -> latencies in ms of the requests that completed in it

    def send(state):
        state["sent"] = time.perf_counter()
        if state["set"]:
            state["sock"].sendall(b"set %s 0 0 %d\r\n%s\r\n" % (state["queue"], len(payload), payload))
        else:
            state["sock"].sendall(b"get %s\r\n" % state["queue"])

    for state in conns:
        send(state)
    while time.time() < stop_at.value:
        for key, _ in selector.select(timeout=0.1):
            state = key.data
            state["buf"] += state["sock"].recv(65536)
            done = (b"STORED\r\n" in state["buf"]) if state["set"] else state["buf"].endswith(b"END\r\n")
            if not done:
                continue
            state["buf"] = b""
            state["set"] = not state["set"]
            bucket = int((time.time() - start_at) / BUCKET)
            buckets[bucket] = buckets.get(bucket, 0) + 1
            latencies.setdefault(bucket, []).append((time.perf_counter() - state["sent"]) * 1000)
            send(state)
    out.put((buckets, latencies))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reloads", type=int, default=100)
    parser.add_argument("--connections", type=int, default=16, help="total, split over the load processes")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--window", type=float, default=3.0, help="seconds of baseline and of tail")
    parser.add_argument("--interval", type=float, default=0.0,
                        help="seconds from one reload's start to the next under load (0: back to back)")
    args = parser.parse_args()

    data_dir = tempfile.mkdtemp(prefix="erqpy-bench-reload-")
    # Every reload loads a real change: two versions of the handler source alternate,
    # so nothing can be skipped as "unchanged".
    handlers_path = os.path.join(data_dir, "handlers.py")
    original = Path(default_handlers_path()).read_text()
    versions = [original, original + "\n# variant B\n"]

    def next_version(n):
        with open(handlers_path + ".tmp", "w") as f:
            f.write(versions[n % 2])
        os.replace(handlers_path + ".tmp", handlers_path)

    next_version(0)
    proc, port = start_server(data_dir, handlers_path)
    sock_path = os.path.join(data_dir, "erqpy.sock")
    try:
        # 1. Swap time without load.
        server_ms, client_ms = [], []
        for n in range(args.reloads):
            next_version(n + 1)
            started = time.perf_counter()
            reply = control_client.call("reload", socket_path=sock_path)
            client_ms.append((time.perf_counter() - started) * 1000)
            assert reply["ok"], reply
            server_ms.append(reply["seconds"] * 1000)

        # 2. Throughput dip under load.
        out = mp.Queue()
        start_at = time.time() + 1.0
        reload_at = start_at + args.window
        stop_value = mp.Value("d", reload_at + 120.0)  # a bound in case reloads hang
        per = max(1, args.connections // args.processes)
        workers = [
            mp.Process(target=load_worker, args=(port, per, start_at, stop_value, out))
            for _ in range(args.processes)
        ]
        for w in workers:
            w.start()
        while time.time() < reload_at:
            time.sleep(0.01)
        reload_started = time.time()
        for n in range(args.reloads):
            next_version(n)
            began = time.time()
            assert control_client.call("reload", socket_path=sock_path)["ok"]
            if args.interval:
                time.sleep(max(0.0, began + args.interval - time.time()))
        reload_ended = time.time()
        stop_at = reload_ended + args.window
        stop_value.value = stop_at
        totals, latencies = {}, {}
        for _ in workers:
            counts, times = out.get(timeout=stop_at - time.time() + 30)
            for bucket, count in counts.items():
                totals[bucket] = totals.get(bucket, 0) + count
            for bucket, values in times.items():
                latencies.setdefault(bucket, []).extend(values)
        for w in workers:
            w.join(timeout=10)
    finally:
        proc.terminate()
        proc.wait(timeout=20)

    def rate(t0, t1):
        first, last = int((t0 - start_at) / BUCKET), int((t1 - start_at) / BUCKET)
        counts = [totals.get(b, 0) for b in range(first, max(last, first + 1))]
        return sum(counts) / (len(counts) * BUCKET), counts

    def p99(t0, t1):
        first, last = int((t0 - start_at) / BUCKET), int((t1 - start_at) / BUCKET)
        values = sorted(v for b in range(first, max(last, first + 1)) for v in latencies.get(b, ()))
        return values[int(len(values) * 0.99)] if values else float("nan")

    base, _ = rate(start_at + 0.5, reload_at)
    during, during_counts = rate(reload_started, reload_ended)
    after, _ = rate(reload_ended, stop_at)
    worst = min(during_counts) / BUCKET if during_counts else 0
    calm_p99, during_p99 = p99(start_at + 0.5, reload_at), p99(reload_started, reload_ended)
    spacing = f"one every {args.interval * 1000:.0f} ms" if args.interval else "back to back"
    print(f"reloads: {args.reloads} ({spacing}), load: {args.connections} connections, 64 B set/get")
    print("| measure | value |")
    print("|---|---|")
    print(f"| server swap time, median / max | {statistics.median(server_ms):.2f} ms / {max(server_ms):.2f} ms |")
    print(f"| erqctl round trip (control socket), median | {statistics.median(client_ms):.2f} ms |")
    print(f"| {args.reloads} reloads under load took | {reload_ended - reload_started:.2f} s |")
    print(f"| ops/s before | {base:,.0f} |")
    print(f"| ops/s during reloads | {during:,.0f} ({during / base:.0%} of before) |")
    print(f"| worst 100 ms bucket during reloads | {worst:,.0f} ops/s ({worst / base:.0%}) |")
    print(f"| ops/s after | {after:,.0f} ({after / base:.0%}) |")
    print(f"| p99 latency calm / during reloads | {calm_p99:.2f} ms / {during_p99:.2f} ms "
          f"(+{during_p99 - calm_p99:.2f} ms) |")


if __name__ == "__main__":
    main()
