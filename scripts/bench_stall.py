"""How long the server's hub stalls: a probe connection does ``version`` round trips,
back to back, in its own process, while the scenarios below run one after another
against one server.  Each line of the report gives the probe's worst wait during a
scenario beside its calm p99 (measured first, in the same run); the aim (issue 12) is
a worst wait no more than 10 ms over the calm p99.  The last column is the server's
longest collection so far and its count of full collections (``erqctl status``, from
erqpy.server.gcpolicy), which tells a collection from other work.  On a machine shared
with other work the probe's worst wait also counts the time the probe or the server
waited for a CPU: read it beside the load average in the report.  Two columns help: the
worst wait less the time the probe itself sat runnable without a CPU in that round trip
(its thread's schedstat run delay), and how many round trips waited more than 10 ms over
the calm p99 (one wait over the aim in thousands is a different server from hundreds).

Scenarios (sizes from the options; the issue's sizes are the defaults where a run takes
minutes, smaller ones otherwise, each named in the report):
  create_queues   ``--queues`` queues created by one pipelined producer
  stats           ``stats`` with those queues
  dump_stats      ``dump_stats`` with those queues
  erqctl_stats    the control channel's stats with those queues
  get_many        one ``get`` naming 1,000 queues
  fill            ``--items`` 64 B items into one queue (the full GCs of a growing heap)
  compact_small   ``erqctl compact`` of the fill's queue, its ``--items`` all in memory
  compact         ``erqctl compact`` of a journal of ``--journal-mib`` MiB
  drain           ``--drain-items`` 1 KiB items read back through read-behind

Everything talks to 127.0.0.1 only, on a server this script starts with a temporary data
directory; every loop is bounded in count and time.
"""

import argparse
import json
import multiprocessing as mp
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ERQPY = ROOT / ".venv" / "bin" / "erqpy"
ERQCTL = ROOT / ".venv" / "bin" / "erqctl"
HOST = "127.0.0.1"
IO_TIMEOUT = 300.0
BATCH = 256


def probe_cpu_wait(schedstat_fd: int) -> float:
    """Seconds the calling thread has spent runnable without a CPU (its ``schedstat`` run
    delay; 0 where the kernel has no schedstat)."""
    if schedstat_fd < 0:
        return 0.0
    return int(os.pread(schedstat_fd, 128, 0).split()[1]) / 1e9


def probe(port: int, out, stop) -> None:
    """``version`` round trips until ``stop`` is set; sends (time, latency s, of which s
    the probe itself waited for a CPU) triples.  The last is what tells a pause of the
    server from the probe's own turn on a machine whose cores the load also uses."""
    sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        schedstat_fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
    except OSError:
        schedstat_fd = -1
    samples = []
    deadline = time.time() + 3600
    while not stop.is_set() and time.time() < deadline:
        waited = probe_cpu_wait(schedstat_fd)
        t = time.time()
        sock.sendall(b"version\r\n")
        buf = b""
        while not buf.endswith(b"\r\n"):
            buf += sock.recv(256)
        latency = time.time() - t
        samples.append((t, latency, probe_cpu_wait(schedstat_fd) - waited))
        time.sleep(0.0005)
    out.send(samples)


class Server:
    def __init__(self, workdir: str, config: str, stderr_path: str | None = None, hub_watch: str | None = None,
                 iteration_watch: str | None = None):
        self.data = os.path.join(workdir, "data")
        config_path = os.path.join(workdir, "erqpy.toml")
        Path(config_path).write_text(config)
        env = dict(os.environ)
        if hub_watch or iteration_watch:
            env.update(PYTHONPATH=str(ROOT / "scripts" / "hubwatch"))
        if hub_watch:
            env.update(HUBWATCH=hub_watch)
        if iteration_watch:
            env.update(HUBWATCH_ITER=iteration_watch)
        self.proc = subprocess.Popen(
            [str(ERQPY), "serve", "--port", "0", "--data-dir", self.data, "--config", config_path,
             "--log-level", "warning"],
            stdout=subprocess.PIPE,
            stderr=open(stderr_path, "ab") if stderr_path else subprocess.DEVNULL,
            env=env,
        )
        line = self.proc.stdout.readline().decode()
        self.port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])

    def ctl(self, *args) -> str:
        return subprocess.run([str(ERQCTL), "--data-dir", self.data, *args], check=True,
                              capture_output=True, text=True, timeout=IO_TIMEOUT).stdout

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until(sock, buf: bytearray, marker: bytes, count: int) -> None:
    """Read until ``marker`` has been seen ``count`` times in ``buf`` (then clear it)."""
    seen = 0
    start = 0
    while True:
        found = buf.find(marker, start)
        while found >= 0:
            seen += 1
            start = found + len(marker)
            if seen == count:
                del buf[:start]
                return
            found = buf.find(marker, start)
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed the connection")
        if b"ERROR" in chunk:  # a refused request would otherwise be waited for until the timeout
            raise RuntimeError("error reply: " + chunk[max(chunk.find(b"ERROR") - 7, 0):][:200].decode(errors="replace"))
        buf += chunk


def pipelined_sets(port: int, requests) -> None:
    """Send ``set`` requests in batches of BATCH, reading every STORED."""
    sock = connect(port)
    buf = bytearray()
    batch = []
    for request in requests:
        batch.append(request)
        if len(batch) == BATCH:
            sock.sendall(b"".join(batch))
            read_until(sock, buf, b"STORED\r\n", len(batch))
            batch = []
    if batch:
        sock.sendall(b"".join(batch))
        read_until(sock, buf, b"STORED\r\n", len(batch))
    sock.close()


def one_command(port: int, command: bytes, end: bytes = b"END\r\n") -> None:
    sock = connect(port)
    buf = bytearray()
    sock.sendall(command)
    read_until(sock, buf, end, 1)
    sock.close()


def drain(port: int, queue: bytes, count: int) -> None:
    sock = connect(port)
    buf = bytearray()
    left = count
    while left:
        n = min(BATCH, left)
        sock.sendall(b"get %s\r\n" % queue * n)
        read_until(sock, buf, b"END\r\n", n)
        left -= n
    sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queues", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=2_000_000, help="64 B items for the fill scenario")
    parser.add_argument("--journal-mib", type=int, default=256, help="journal size for the compact scenario")
    parser.add_argument("--drain-items", type=int, default=500_000, help="1 KiB items for the drain scenario")
    parser.add_argument("--only", help="comma-separated scenario names")
    parser.add_argument("--dir", default=None, help="where the temporary data directory goes")
    parser.add_argument("--server-stderr", default=None,
                        help="append the server's stderr to this file (with GEVENT_MONITOR_THREAD_ENABLE=1 and "
                             "GEVENT_MAX_BLOCKING_TIME=0.005 in the environment, gevent writes there the stack of "
                             "a greenlet that held the hub longer than that; it does not see work served in the "
                             "event loop's own callback, server/loop_serving, which runs in the hub itself)")
    parser.add_argument("--hub-watch", default=None, metavar="FILE",
                        help="write to FILE the stack of the server's main thread whenever its event loop "
                             "is held over 5 ms (scripts/hubwatch; callbacks included), and list after the "
                             "table where each scenario's stalls were")
    parser.add_argument("--iter-watch", default=None, metavar="FILE",
                        help="write to FILE every turn of the server's event loop over 10 ms, with what it "
                             "spent the time on (scripts/hubwatch/iterwatch.py: the hub, greenlets, "
                             "collections, serving from the loop, the journal's group write, refills), "
                             "and list after the table each scenario's longest turns")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="erqpy-bench-stall-", dir=args.dir)
    # big and journaled keep everything in memory and in one journal, so that the fill
    # and the compaction measure what they name; drained reads back from disk.
    # max_queues leaves room for big, journaled and drained beside the --queues created.
    config = (f"[server]\nmax_queues = {args.queues + 10}\n"
              "[queues.big]\nmax_memory_size = 4294967296\nmax_journal_size = 17179869184\n"
              "[queues.journaled]\nmax_memory_size = 4294967296\nmax_journal_size = 17179869184\n"
              "[queues.drained]\nmax_memory_size = 16777216\n")
    hub_watch = os.path.abspath(args.hub_watch) if args.hub_watch else None
    if hub_watch:
        Path(hub_watch).write_text("")
    iteration_watch = os.path.abspath(args.iter_watch) if args.iter_watch else None
    if iteration_watch:
        Path(iteration_watch).write_text("")
    server = Server(workdir, config, args.server_stderr, hub_watch, iteration_watch)
    receiver, sender = mp.Pipe(duplex=False)
    stop = mp.Event()
    prober = mp.Process(target=probe, args=(server.port, sender, stop), daemon=True)
    prober.start()
    windows = []  # (name, what, start, end)
    gc_after = {}  # scenario name -> the server's (longest GC pause, full collections, unfreezes) after it

    def scenario(name, what, work):
        if args.only and name not in args.only.split(","):
            return
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {what}", file=sys.stderr, flush=True)
        started = time.time()
        work()
        windows.append((name, what, started, time.time()))
        gc_after[name] = gc_status()

    def gc_status():
        fields = json.loads(server.ctl("--json", "status"))
        return fields.get("gc_longest_pause_ms"), fields.get("gc_full_collections"), fields.get("gc_unfreezes")

    try:
        time.sleep(0.5)
        calm_start = time.time()
        time.sleep(3.0)
        calm = (calm_start, time.time())
        queues = [b"q%d" % n for n in range(args.queues)]
        scenario("create_queues", f"{args.queues:,} queues",
                 lambda: pipelined_sets(server.port, (b"set %s 0 0 1\r\nx\r\n" % q for q in queues)))
        scenario("stats", f"stats with {args.queues:,} queues", lambda: one_command(server.port, b"stats\r\n"))
        scenario("dump_stats", f"dump_stats with {args.queues:,} queues",
                 lambda: one_command(server.port, b"dump_stats\r\n"))
        scenario("erqctl_stats", f"erqctl stats with {args.queues:,} queues", lambda: server.ctl("stats"))
        scenario("get_many", "a get naming 1,000 queues",
                 lambda: one_command(server.port, b"get " + b" ".join(queues[:1000]) + b"\r\n"))
        small = b"x" * 64
        scenario("fill", f"{args.items:,} x 64 B into one queue",
                 lambda: pipelined_sets(server.port, (b"set big 0 0 64\r\n%s\r\n" % small
                                                      for _ in range(args.items))))
        # A compaction starts with a copy of the queue's deque on the hub (issue 12 names a
        # snapshot): with small items, memory holds the most of them.  It needs the fill's
        # queue: run with --only fill,compact_small.
        scenario("compact_small", f"erqctl compact of the fill's queue ({args.items:,} x 64 B in memory)",
                 lambda: server.ctl("compact", "big"))
        kib = b"y" * 1024
        journal_items = args.journal_mib * 1024 * 1024 // 1100

        def compact():
            pipelined_sets(server.port, (b"set journaled 0 0 1024\r\n%s\r\n" % kib for _ in range(journal_items)))
            drain(server.port, b"journaled", journal_items // 2)
            windows.append(("(fill for compact)", "", 0, 0))
            started = time.time()
            server.ctl("compact", "journaled")
            windows.append(("compact_only", f"erqctl compact of about {args.journal_mib} MiB", started, time.time()))

        scenario("compact", f"fill about {args.journal_mib} MiB of journal, drain half, compact", compact)

        def drain_through_read_behind():
            pipelined_sets(server.port, (b"set drained 0 0 1024\r\n%s\r\n" % kib for _ in range(args.drain_items)))
            started = time.time()
            drain(server.port, b"drained", args.drain_items)
            windows.append(("drain_only", f"{args.drain_items:,} x 1 KiB read back", started, time.time()))

        scenario("drain", f"{args.drain_items:,} x 1 KiB through read-behind (16 MiB in memory)",
                 drain_through_read_behind)
    finally:
        stop.set()
        samples = receiver.recv() if prober.is_alive() or receiver.poll(10) else []
        prober.join(timeout=10)
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    def waits(start, end):
        return sorted(latency * 1000 for t, latency, _cpu_wait in samples if start <= t <= end)

    def worst_net_of_probe_cpu_wait(start, end):
        # The same waits less the time the probe itself sat runnable without a CPU in them:
        # what is left is the server (its loop, or its own wait for a CPU) and the kernel.
        net = [(latency - cpu_wait) * 1000 for t, latency, cpu_wait in samples if start <= t <= end]
        return max(net) if net else float("nan")

    calm_waits = waits(*calm)
    calm_p99 = calm_waits[int(len(calm_waits) * 0.99)] if calm_waits else float("nan")
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"CPU: {cpu}, {os.cpu_count()} cores, load average {load}; probe: version round trips; calm p99 {calm_p99:.2f} ms "
          f"over {len(calm_waits):,} round trips")
    print("| scenario | what | seconds | worst probe wait | over calm p99 | the same less the probe's own "
          "wait for a CPU | waits over calm p99 + 10 ms | longest GC pause so far, full GCs |")
    print("|---|---|---|---|---|---|---|---|")
    for name, what, start, end in windows:
        if not start:
            continue
        during = waits(start, end)
        worst = during[-1] if during else float("nan")
        longest, full, _unfreezes = gc_after.get(name, (None, None, None))
        gc_column = f"{longest:.1f} ms, {full}" if longest is not None else ""
        net = worst_net_of_probe_cpu_wait(start, end)
        print(f"| {name} | {what} | {end - start:.2f} | {worst:.1f} ms | {worst - calm_p99:+.1f} ms "
              f"| {net - calm_p99:+.1f} ms | {sum(1 for w in during if w > calm_p99 + 10):,} of {len(during):,} "
              f"| {gc_column} |")
    if hub_watch:
        print_hub_stalls(hub_watch, windows)
    if iteration_watch:
        print_long_turns(iteration_watch, windows)


def print_hub_stalls(path: str, windows) -> None:
    """Per scenario, the places (the innermost three erqpy frames) where the loop was
    found held over 5 ms, most often first, with how the main thread spent those stalls
    in all: on a CPU, runnable without one (other threads and processes had the CPUs),
    asleep (in the kernel, or waiting for the GIL).  The stack is where the stall ended
    (scripts/hubwatch): a stall mostly on a CPU was Python or kernel work before it.  Then,
    where the server could read them (root), the kernel stacks of its main thread taken
    while the loop was held, most often first: where a stall asleep waited."""
    stalls = []  # (time, ms, where, (on cpu, runnable, asleep) ms)
    kernel = []  # (time of the stall, the main thread's innermost kernel frames)
    for block in Path(path).read_text().split("=== ")[1:]:
        head, _, stack = block.partition("\n")
        kernel += [(float(head.split()[0]), line.split(": ", 1)[1].split(" <- ", 3)[:3])
                   for line in stack.splitlines() if line.startswith("--- kernel ") and ": " in line]
        at, _, rest = head.partition(" hub busy ")
        frames = [line.strip() for line in stack.splitlines() if line.strip().startswith("File ") and "/erqpy/" in line]
        where = " <- ".join(frame.split("/erqpy/", 1)[1].replace('", line ', ":").replace(", in ", " ")
                            for frame in reversed(frames[-3:])) or "(outside erqpy: the loop itself)"
        shares = re.search(r"on cpu ([\d.]+), runnable ([\d.]+), asleep ([\d.]+)", rest)
        split = tuple(float(n) for n in shares.groups()) if shares else (0.0, 0.0, 0.0)
        stalls.append((float(at), float(rest.split()[0]), where, split))
    for name, _what, start, end in windows:
        places: dict[str, list] = {}
        for at, ms, where, split in stalls:
            if start <= at <= end:
                places.setdefault(where, []).append((ms, split))
        if not places:
            continue
        print(f"\n{name}: loop held over 5 ms {sum(map(len, places.values()))} times; where it ended "
              "(count, longest, and the main thread's time in them: on a CPU / runnable / asleep):")
        for where, found in sorted(places.items(), key=lambda kv: -len(kv[1]))[:6]:
            total = sum(ms for ms, _split in found) or 1.0
            cpu, runnable, asleep = (sum(split[i] for _ms, split in found) / total for i in range(3))
            print(f"  {len(found):5d}  {max(ms for ms, _split in found):6.1f} ms  "
                  f"{cpu:4.0%} / {runnable:4.0%} / {asleep:4.0%}  {where}")
        waits: dict[str, int] = {}
        for at, frames in kernel:
            if start <= at <= end:
                key = " <- ".join(frames)
                waits[key] = waits.get(key, 0) + 1
        if waits:
            print(f"  the main thread in the kernel while the loop was held ({sum(waits.values())} looks, "
                  "innermost frames):")
            for key, seen in sorted(waits.items(), key=lambda kv: -kv[1])[:6]:
                print(f"  {seen:5d}  {key}")


def print_long_turns(path: str, windows) -> None:
    """Per scenario, how many turns of the loop took over HUBWATCH_ITER_MS, and the five longest
    with what they spent the time on (scripts/hubwatch/iterwatch.py)."""
    turns = []  # (time, ms, the rest of the line)
    collections = []  # the same, for the collections over HUBWATCH_GC_MS
    for line in Path(path).read_text().splitlines():
        at, _, rest = line.partition(" turn ")
        if rest:
            turns.append((float(at), float(rest.split()[0]), rest))
        elif " gc" in line:
            at, _, rest = line.partition(" ")
            collections.append((float(at), float(rest.split()[1]), rest))
    for name, _what, start, end in windows:
        during = sorted((turn for turn in turns if start <= turn[0] <= end), key=lambda turn: -turn[1])
        if during:
            print(f"\n{name}: {len(during)} turns of the loop over HUBWATCH_ITER_MS (10 ms unless set); "
                  "the longest:")
            for _at, _ms, rest in during[:5]:
                print(f"  {rest}")
        long_ones = sorted((c for c in collections if start <= c[0] <= end), key=lambda c: -c[1])
        if long_ones:
            print(f"{name}: {len(long_ones)} collections over HUBWATCH_GC_MS (5 ms unless set); the longest:")
            for _at, _ms, rest in long_ones[:5]:
                print(f"  {rest}")


if __name__ == "__main__":
    main()
