"""Issue 12's memory aims, one command each, every figure printed against its aim.

    scripts/memory_aims items        1 M in-memory 64 B items: at most 120 B of overhead each
    scripts/memory_aims connections  1,000 idle connections: at most 10 MiB
    scripts/memory_aims queues       10,000 queues x 100 x 64 B: peak RSS under 256 MiB
                                     (scripts/bench_scale --only b, about two minutes)
    scripts/memory_aims breakdown    where the bytes go: tracemalloc's allocation sites
                                     per queue (--queues, --per-queue items of 64 B)

``items`` measures two ways.  In one process with tracemalloc: a journaled queue
(``PersistentQueue`` on a temporary directory, built by the collection as the server
does) takes N items whose payloads are made inside the trace and let go once added, so
the figure is all the queue holds per item, its payload included (a plain item is one
bytes object with its payload in it, since session 18), less the payload's 64 bytes.
And a real server: VmRSS after N pipelined sets minus the idle VmRSS,
per item, less the 64 payload bytes; that includes the allocator's rounding and what
the journal's compactions leave behind, so it is the upper figure.

``connections`` opens N sockets to a fresh server, makes one round trip on each so each
has its greenlet and buffers, and reports VmRSS after minus before.

Every server is started on 127.0.0.1 with its own temporary data directory and stopped
by PID; every loop is bounded.  Exit status 0 when the aim was met.
"""

import argparse
import socket
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.bench_memory import cpu_model, status_kib  # noqa: E402
from tests.conftest import ErqServer  # noqa: E402

MiB = 1 << 20
ITEM_OVERHEAD_AIM = 120  # bytes per 64 B item
CONNECTIONS_AIM_MIB = 10.0
BATCH = 500  # pipelined sets per send
IO_TIMEOUT = 60.0


def make_collection(tmp: str, queue_settings: dict):
    """A QueueCollection on ``tmp``, as the server builds it."""
    from erqpy.events import EventBus
    from erqpy.server.config import Settings
    from erqpy.server.state import ServerStats
    from erqpy.storage.collection import QueueCollection
    from erqpy.storage.datadir import DataDir
    from erqpy.storage.syncer import Syncer

    settings = Settings(data_dir=tmp, queues={"default": queue_settings})
    return QueueCollection(DataDir(tmp), settings, Syncer(), EventBus(), ServerStats())


def traced_per_item(count: int, size: int) -> float:
    """Traced bytes a journaled queue holds per item, its payload included: the payloads
    are made inside the trace and let go once added, as a request's bytes are."""
    from erqpy.storage.items import now_ms

    with tempfile.TemporaryDirectory(prefix="erqpy-aims-") as tmp:
        # The window holds every item (nothing is read behind) and the journal is never
        # compacted while tracing: the figure is the items' alone.
        collection = make_collection(tmp, {"max_memory_size": count * (size + 8), "max_journal_size": 1 << 40,
                                           "max_items": count})
        queue = collection.get_or_create(b"q")
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        payloads = [b"%0*d" % (size, n) for n in range(count)]
        for payload in payloads:
            queue.add(payload, 0, 0, now_ms())
        del payloads, payload
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert queue.count == count and queue.disk_count == 0, (queue.count, queue.disk_count)
        collection.close_all()
    return used / count


def run_breakdown(args) -> bool:
    """Where the bytes go: the allocation sites of N queues of M items, per queue."""
    with tempfile.TemporaryDirectory(prefix="erqpy-aims-") as tmp:
        collection = make_collection(tmp, {})
        collection.get_or_create(b"warm").add(b"x" * 64)  # first-use caches: not counted
        payloads = [b"%064d" % n for n in range(args.per_queue)]
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for n in range(args.queues):
            queue = collection.get_or_create(b"q%05d" % n)
            for payload in payloads:
                queue.add(payload)
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        collection.close_all()
    sites = after.compare_to(before, "lineno")
    total = sum(site.size_diff for site in sites)
    print(f"{args.queues:,} queues x {args.per_queue} items of 64 B (payloads made before): "
          f"{total / args.queues:,.0f} B traced per queue with its items")
    print("| B per queue | objects per queue | allocated at |\n|--:|--:|---|")
    for site in sites[:args.top]:
        print(f"| {site.size_diff / args.queues:,.1f} | {site.count_diff / args.queues:.2f} | {site.traceback} |")
    return True


def fill(srv, queue: bytes, count: int, size: int) -> None:
    sock = socket.create_connection(srv.address, timeout=IO_TIMEOUT)
    pad = b"x" * (size - 12)
    buf = b""
    for start in range(0, count, BATCH):
        n = min(BATCH, count - start)
        sock.sendall(b"".join(b"set %s 0 0 %d\r\n%012d%s\r\n" % (queue, size, start + i, pad) for i in range(n)))
        want = b"STORED\r\n" * n
        while len(buf) < len(want):
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
        if buf[:len(want)] != want:
            raise RuntimeError(f"a set was not STORED: {buf[:120]!r}")
        buf = buf[len(want):]
    sock.close()


def settle(srv) -> int:
    """VmRSS in KiB once it stopped moving (at most 5 s)."""
    last = status_kib(srv.proc.pid, "VmRSS")
    for _ in range(10):
        time.sleep(0.5)
        now = status_kib(srv.proc.pid, "VmRSS")
        if abs(now - last) < 64:
            return now
        last = now
    return last


def run_items(args) -> bool:
    count, size = args.count, 64
    traced = traced_per_item(count, size)
    with tempfile.TemporaryDirectory(prefix="erqpy-aims-") as tmp:
        config = Path(tmp) / "erqpy.toml"
        # The default 64 MiB window holds 1 M items of 64 B, just; this leaves no doubt.
        config.write_text(f"[queues.default]\nmax_memory_size = {count * (size + 8)}\n")
        srv = ErqServer(Path(tmp) / "data", args=["--config", str(config)]).start()
        try:
            idle = settle(srv)
            fill(srv, b"q", count, size)
            full = settle(srv)
            peak = status_kib(srv.proc.pid, "VmHWM")
        finally:
            srv.stop()
    rss_per_item = (full - idle) * 1024 / count
    print(f"CPU: {cpu_model()}; {count:,} items of {size} B in one queue, all in memory")
    print(f"| measure | bytes per item | overhead (less the {size} B payload) | aim {ITEM_OVERHEAD_AIM} B |")
    print("|---|---|---|---|")
    traced_met = traced - size <= ITEM_OVERHEAD_AIM
    print(f"| tracemalloc, what the queue holds, payload included | {traced:.1f} | {traced - size:.1f} | "
          f"{'met' if traced_met else 'MISSED'} |")
    rss_met = rss_per_item - size <= ITEM_OVERHEAD_AIM
    print(f"| server VmRSS after minus idle ({idle / 1024:.0f} MiB idle, {full / 1024:.0f} MiB full, "
          f"VmHWM {peak / 1024:.0f} MiB) | {rss_per_item:.1f} | {rss_per_item - size:.1f} | "
          f"{'met' if rss_met else 'MISSED'} |")
    return traced_met and rss_met


def run_connections(args) -> bool:
    count = args.count
    with tempfile.TemporaryDirectory(prefix="erqpy-aims-") as tmp:
        srv = ErqServer(Path(tmp) / "data").start()
        socks = []
        try:
            warm = socket.create_connection(srv.address, timeout=IO_TIMEOUT)
            warm.sendall(b"version\r\n")
            warm.recv(100)
            before = settle(srv)
            # In batches, each answered before the next: how many connections the server
            # has in hand at once (and so its transient memory) then depends less on
            # how busy the machine is.
            for start in range(0, count, args.batch):
                batch = [socket.create_connection(srv.address, timeout=IO_TIMEOUT)
                         for _ in range(min(args.batch, count - start))]
                socks.extend(batch)
                for sock in batch:
                    sock.sendall(b"version\r\n")
                for sock in batch:
                    if not sock.recv(100).startswith(b"VERSION"):
                        raise RuntimeError("no VERSION reply")
            after = settle(srv)
            alive = srv.proc.poll() is None
        finally:
            for sock in socks:
                sock.close()
            srv.stop()
    used = (after - before) / 1024
    met = alive and used <= CONNECTIONS_AIM_MIB
    print(f"CPU: {cpu_model()}; {count:,} idle connections (one round trip each, {args.batch} at a time, "
          "then idle)")
    print(f"server VmRSS {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB after: {used:.1f} MiB for "
          f"{count:,} connections ({used * MiB / count / 1024:.1f} KiB each); aim {CONNECTIONS_AIM_MIB} MiB: "
          f"{'met' if met else 'MISSED'}")
    return met


def run_queues(_args) -> bool:
    from scripts import bench_scale

    sys.argv = [sys.argv[0], "--only", "b", "--queues", str(_args.queues)]
    bench_scale.main()
    return bench_scale.peak_rss_met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="aim", required=True)
    items = sub.add_parser("items", help="1 M in-memory 64 B items: overhead per item")
    items.add_argument("--count", type=int, default=1_000_000)
    conns = sub.add_parser("connections", help="1,000 idle connections: server RSS")
    conns.add_argument("--count", type=int, default=1000)
    conns.add_argument("--batch", type=int, default=50,
                       help="connections opened before their replies are read (--batch 1000: all at once)")
    queues = sub.add_parser("queues", help="10,000 queues x 100 x 64 B: peak RSS (bench_scale --only b)")
    queues.add_argument("--queues", type=int, default=10_000)
    breakdown = sub.add_parser("breakdown", help="where the bytes go: allocation sites per queue (tracemalloc)")
    breakdown.add_argument("--queues", type=int, default=2000)
    breakdown.add_argument("--per-queue", type=int, default=0, help="64 B items per queue")
    breakdown.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    met = {"items": run_items, "connections": run_connections, "queues": run_queues,
           "breakdown": run_breakdown}[args.aim](args)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
