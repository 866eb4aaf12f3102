"""Storage at scale: one very deep queue, and very many small queues.  Run it as
``scripts/bench_scale`` (see --help).

(a) One queue ``deep``: ``--items`` items of ``--item-size`` bytes (default 10,000,000 of
    1 KiB) are set by ``--conns`` pipelined raw-socket producers, one process each; then
    ``erqctl compact deep`` is forced with the queue full; the server is restarted twice
    with the queue full (after SIGTERM, after SIGKILL); then ``--conns`` consumers drain
    it with pipelined multi-key gets, while read-behind refills memory and consumed
    segment files are deleted.  Every item must come out exactly once, each producer's
    items in order.  Then the data directory is watched until the sweep has compacted
    the empty queue.
(b) ``--queues`` queues (default 10,000) of ``--per-queue`` items (100) of 64 B: fill,
    restart twice, drain, disk use after draining.

Measured: set and get rates (overall, and per-second buckets while draining); peak RSS of
every server process (VmHWM from /proc/PID/status, read just before it is stopped) and the
largest VmRSS sampled every 0.2 s; disk use of the data directory (apparent and
allocated) against the live payload bytes at checkpoints; restart time from exec to the
listening line; the round-trip latency of a probe client (one set+get on another queue
every 20 ms) in each phase, which shows how long compaction or a refill holds the server.

The server runs with the built-in defaults (64 MiB memory per queue, 16 MiB journals and
segments) unless ``--config`` is given.  Everything talks to 127.0.0.1 only; the data
directory is created under ``--dir`` (default: $TMPDIR or /tmp) and removed at the end.
"""

import argparse
import multiprocessing as mp
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ERQPY = os.path.join(ROOT, ".venv", "bin", "erqpy")
HOST = "127.0.0.1"
STARTUP_TIMEOUT = 600.0
IO_TIMEOUT = 120.0
MiB = 1 << 20
BATCH = 64  # requests per send
WINDOW = 4  # batches in flight per connection
CHECKPOINT = 8192  # a worker notes (time, count) every this many items
RSS_AIM = 256 * MiB  # issue 12: the peak RSS of (b), 10,000 queues x 100 x 64 B
peak_rss_met = False  # set by part_b

sys.path.insert(0, ROOT)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the server ------------------------------------------------------------------------------


class Server:
    """One erqpy process on a data directory; restartable; samples its memory."""

    def __init__(self, data_dir: str, config: str | None):
        self.data_dir = data_dir
        self.config = config
        self.log_path = data_dir.rstrip("/") + "-server.log"
        self.proc = None
        self.port = None
        self.max_rss = 0  # largest VmRSS sampled, over every process of this Server
        self.hwm = []  # VmHWM of each process, read just before it was stopped
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def start(self) -> float:
        """Start and return the seconds from exec to the listening line."""
        cmd = [ERQPY, "serve", "--host", HOST, "--port", "0", "--data-dir", self.data_dir]
        if self.config:
            cmd += ["--config", self.config]
        logfile = open(self.log_path, "ab")
        started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=logfile, cwd=ROOT)
        logfile.close()
        ready, _, _ = select.select([self.proc.stdout], [], [], STARTUP_TIMEOUT)
        line = self.proc.stdout.readline().decode() if ready else ""
        elapsed = time.perf_counter() - started
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"erqpy did not start: {line!r}; see {self.log_path}")
        self.port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
        return elapsed

    def status(self, field: str) -> int:
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1]) * 1024
        except (OSError, AttributeError):
            pass
        return 0

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def fd_limit(self) -> str:
        with open(f"/proc/{self.proc.pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    return line.split()[3]
        return "?"

    def _sample(self) -> None:
        while True:
            if self.proc is not None and self.proc.poll() is None:
                self.max_rss = max(self.max_rss, self.status("VmRSS"))
            time.sleep(0.2)

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.hwm.append(self.status("VmHWM"))
        self.proc.send_signal(sig)
        self.proc.wait(timeout=STARTUP_TIMEOUT)
        self.proc.stdout.close()

    def replay_line(self) -> str:
        with open(self.log_path, errors="replace") as f:
            found = re.findall(r"replayed \d+ journals in [\d.]+ s", f.read())
        return found[-1] if found else "?"

    def stats(self, queues=()) -> dict:
        from erqpy.server import control_client

        return control_client.call("stats", {"queues": list(queues)},
                                   socket_path=os.path.join(self.data_dir, "erqpy.sock"), timeout=IO_TIMEOUT)

    def compact(self, queue: str) -> dict:
        from erqpy.server import control_client

        return control_client.call("compact", {"queue": queue},
                                   socket_path=os.path.join(self.data_dir, "erqpy.sock"), timeout=IO_TIMEOUT)


def disk_use(path: str) -> tuple[int, int, int]:
    """(apparent bytes, allocated bytes, files) of the queue files in ``path``."""
    apparent = allocated = files = 0
    for entry in os.scandir(path):
        if entry.name.startswith("erqpy."):
            continue
        try:
            st = entry.stat()
        except FileNotFoundError:
            continue
        apparent += st.st_size
        allocated += st.st_blocks * 512
        files += 1
    return apparent, allocated, files


# -- load: pipelined raw sockets, one connection per process ----------------------------------


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _recv_exactly(sock, buf: bytearray, need: int) -> bytes:
    while len(buf) < need:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    out = bytes(buf[:need])
    del buf[:need]
    return out


def produce(port, jobs, size, results):
    """``jobs``: [(queue, producer number, first seq, count)].  Payload: producer (5
    digits) and seq (11 digits), padded with dots."""
    sock = _connect(port)
    buf = bytearray()
    pad = b"." * (size - 16)
    marks = []
    done = 0
    in_flight = deque()

    def batches():
        for queue, number, first, count in jobs:
            prefix = b"set %s 0 0 %d\r\n" % (queue.encode(), size)
            for start in range(first, first + count, BATCH):
                end = min(first + count, start + BATCH)
                yield end - start, b"".join(
                    [prefix + b"%05d%011d" % (number, seq) + pad + b"\r\n" for seq in range(start, end)])

    pending = batches()
    exhausted = False
    while True:
        while not exhausted and len(in_flight) < WINDOW:
            try:
                n, request = next(pending)
            except StopIteration:
                exhausted = True
                break
            sock.sendall(request)
            in_flight.append(n)
        if not in_flight:
            break
        n = in_flight.popleft()
        if _recv_exactly(sock, buf, 8 * n) != b"STORED\r\n" * n:
            raise RuntimeError("a set was not STORED")
        done += n
        if done // CHECKPOINT != (done - n) // CHECKPOINT:
            marks.append((time.time(), done))
    marks.append((time.time(), done))
    sock.close()
    results.put(("produce", done, marks))


def consume(port, queues, keys, producers, per_producer, single, results):
    """Drain ``queues`` in turn with ``get q q ...`` (``keys`` keys per request), several
    requests in flight, until a reply is empty; ``single``: one request per queue.  Notes
    every (producer, seq) seen when ``per_producer``; counts duplicates and breaks of
    per-producer order on this connection (per queue when ``single``)."""
    sock = _connect(port)
    seen = bytearray(producers * per_producer)
    disorder = duplicates = count = 0
    marks = []
    buf = bytearray()
    pos = 0
    for queue in queues:
        last = [-1] * producers if single or queue == queues[0] else last
        request = b"get " + b" ".join([queue.encode()] * keys) + b"\r\n"
        in_flight = 0
        for _ in range(1 if single else WINDOW):
            sock.sendall(request)
            in_flight += 1
        empty = False
        got = 0  # values so far in the reply being read
        while in_flight:
            while in_flight:
                if buf.startswith(b"END\r\n", pos):
                    pos += 5
                    in_flight -= 1
                    if got == 0:
                        empty = True
                    elif not empty and not single:
                        sock.sendall(request)
                        in_flight += 1
                    got = 0
                    continue
                if len(buf) - pos < 6:
                    break
                if not buf.startswith(b"VALUE ", pos):
                    _bad(buf, pos)
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                end = eol + 2 + int(buf[pos:eol].rsplit(b" ", 1)[1]) + 2
                if len(buf) < end:
                    break
                number = int(buf[eol + 2 : eol + 7])
                seq = int(buf[eol + 7 : eol + 18])
                if seq <= last[number]:
                    disorder += 1
                last[number] = seq
                if per_producer:
                    index = number * per_producer + seq
                    duplicates += seen[index]
                    seen[index] = 1
                pos = end
                got += 1
                count += 1
                if count % CHECKPOINT == 0:
                    marks.append((time.time(), count))
            if in_flight:
                del buf[:pos]
                pos = 0
                chunk = sock.recv(1 << 20)
                if not chunk:
                    raise ConnectionError("server closed the connection")
                buf += chunk
    marks.append((time.time(), count))
    sock.close()
    results.put(("consume", count, marks, duplicates, disorder, bytes(seen)))


def _bad(buf, pos):
    raise RuntimeError(f"unexpected reply: {bytes(buf[pos:pos + 80])!r}")


def run_workers(target, arg_lists) -> tuple[float, list]:
    results = mp.Queue()
    procs = [mp.Process(target=target, args=args + (results,)) for args in arg_lists]
    started = time.time()
    for proc in procs:
        proc.start()
    out = [results.get(timeout=24 * 3600) for _ in procs]
    for proc in procs:
        proc.join(timeout=IO_TIMEOUT)
        if proc.exitcode:
            raise RuntimeError(f"a load process failed (exit {proc.exitcode})")
    return started, out


def bucket_rates(marks_lists, started: float) -> list[float]:
    """Items per second in 1 s buckets, all workers together."""
    events = []
    for marks in marks_lists:
        previous = 0
        for t, count in marks:
            events.append((t, count - previous))
            previous = count
    if not events:
        return []
    end = max(t for t, _n in events)
    buckets = [0.0] * (int(end - started) + 1)
    for t, n in events:
        buckets[int(t - started)] += n
    return buckets[:-1] or buckets  # the last bucket is partial


# -- the latency probe --------------------------------------------------------------------------


def probe(port_file: str, out_file: str, stop_file: str) -> None:
    """One set+get round trip on queue ``probe`` every 20 ms; logs "time latency" lines
    (latency -1: no server).  Reconnects after restarts."""
    sock = None
    with open(out_file, "a", buffering=1) as out:
        while not os.path.exists(stop_file):
            t = time.time()
            try:
                if sock is None:
                    with open(port_file) as f:
                        port = int(f.read())
                    sock = socket.create_connection((HOST, port), timeout=60)
                sock.sendall(b"set probe 0 0 8\r\nprobe...\r\nget probe\r\n")
                buf = b""
                while not buf.endswith(b"END\r\n"):
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise ConnectionError
                    buf += chunk
                out.write(f"{t:.3f} {time.time() - t:.4f}\n")
            except (OSError, ValueError):
                if sock is not None:
                    sock.close()
                sock = None
                out.write(f"{t:.3f} -1\n")
                time.sleep(0.2)
            time.sleep(0.02)


class Probe:
    def __init__(self, workdir: str):
        self.port_file = os.path.join(workdir, "probe-port")
        self.out_file = os.path.join(workdir, "probe.log")
        self.stop_file = os.path.join(workdir, "probe-stop")
        self.proc = mp.Process(target=probe, args=(self.port_file, self.out_file, self.stop_file), daemon=True)

    def point_at(self, port: int) -> None:
        with open(self.port_file + "~", "w") as f:
            f.write(str(port))
        os.replace(self.port_file + "~", self.port_file)
        if not self.proc.is_alive():
            self.proc.start()

    def window(self, start: float, end: float) -> str:
        """p50 / p99 / max round trip in ms between two times."""
        latencies = []
        with open(self.out_file) as f:
            for line in f:
                t, latency = line.split()
                if start <= float(t) <= end and float(latency) >= 0:
                    latencies.append(float(latency) * 1000)
        if not latencies:
            return "n/a"
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        return f"{statistics.median(latencies):.1f} / {p99:.1f} / {latencies[-1]:.0f} ms"

    def stop(self) -> None:
        open(self.stop_file, "w").close()
        self.proc.join(timeout=10)


# -- the report -----------------------------------------------------------------------------------

rows = []


def report(measure: str, value) -> None:
    rows.append((measure, value))
    log(f"{measure}: {value}")


def mib(n: int) -> str:
    return f"{n / MiB:,.1f} MiB" if n < 10 * 1024 * MiB else f"{n / (1024 * MiB):,.2f} GiB"


def disk_report(label: str, server: Server, live: int) -> None:
    apparent, allocated, files = disk_use(server.data_dir)
    ratio = f", {apparent / live:.3f} x live" if live else ""
    report(f"{label}: disk (apparent / allocated, files) vs live payload",
           f"{mib(apparent)} / {mib(allocated)}, {files} files vs {mib(live)}{ratio}")


def wait_disk_below(server: Server, limit: int, timeout: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if disk_use(server.data_dir)[0] < limit:
            return time.monotonic() - started
        time.sleep(0.25)
    return None


def restart_twice(server: Server, probe_: "Probe", label: str, expect_items: int, queues=()) -> None:
    for name, sig in (("SIGTERM", signal.SIGTERM), ("SIGKILL", signal.SIGKILL)):
        server.stop(sig)
        seconds = server.start()
        probe_.point_at(server.port)
        stats = server.stats([*queues, "probe"])
        # The probe's own item may be in the queue when the signal comes: not counted.
        items = stats["server"]["curr_items"] - stats["queues"].get("probe", {}).get("items", 0)
        report(f"{label}: restart after {name} (exec to listening)",
               f"{seconds:.2f} s ({server.replay_line()}), {items:,} items back"
               + ("" if items == expect_items else f" -- EXPECTED {expect_items:,}"))
        report(f"{label}: RSS right after that restart (VmHWM so far)", mib(server.status("VmHWM")))


# -- part (a): one deep queue ------------------------------------------------------------------------


def part_a(args, workdir: str, probe_: Probe) -> None:
    n, size, conns = args.items, args.item_size, args.conns
    server = Server(os.path.join(workdir, "deep"), args.config)
    server.start()
    probe_.point_at(server.port)
    log(f"(a) filling queue 'deep' with {n:,} items of {size} B over {conns} connections")
    shares = [n // conns + (1 if i < n % conns else 0) for i in range(conns)]
    started, out = run_workers(produce, [(server.port, [("deep", i, 0, shares[i])], size) for i in range(conns)])
    elapsed = max(m[-1][0] for _k, _n, m in out) - started
    stats = server.stats(["deep"])["queues"]["deep"]
    report("(a) fill: items / rate", f"{n:,} in {elapsed:,.0f} s = {n / elapsed:,.0f} sets/s "
           f"({n * size / elapsed / MiB:,.1f} MiB/s)")
    report("(a) fill: probe round trip p50 / p99 / max", probe_.window(started, started + elapsed))
    report("(a) full: queue stats", f"items {stats['items']:,}, mem_items {stats['mem_items']:,}, mem_bytes "
           f"{mib(stats['mem_bytes'])}, logsize {mib(stats['logsize'])}, rotations {stats['journal_rotations']}")
    report("(a) full: server RSS now / VmHWM", f"{mib(server.status('VmRSS'))} / {mib(server.status('VmHWM'))}")
    disk_report("(a) full", server, stats["bytes"])

    t0 = time.time()
    reply = server.compact("deep")
    t1 = time.time()
    report("(a) erqctl compact deep, queue full", f"{t1 - t0:.2f} s, {mib(reply['before'])} -> {mib(reply['after'])}; "
           f"probe p50 / p99 / max {probe_.window(t0, t1 + 0.1)}")

    restart_twice(server, probe_, "(a) full", n, ["deep"])

    log(f"(a) draining over {conns} connections")
    started, out = run_workers(consume, [(server.port, ["deep"], args.keys, conns, max(shares), False)
                                         for _ in range(conns)])
    total = sum(r[1] for r in out)
    elapsed = max(r[2][-1][0] for r in out) - started
    duplicates = sum(r[3] for r in out)
    disorder = sum(r[4] for r in out)
    counts = bytearray(len(out[0][5]))
    merged = sum(int.from_bytes(r[5], "little") for r in out)
    counts[:] = merged.to_bytes(len(counts), "little")
    expected_ones = sum(shares)
    missing = expected_ones - counts.count(1)
    buckets = bucket_rates([r[2] for r in out], started)
    report("(a) drain: items / rate", f"{total:,} in {elapsed:,.0f} s = {total / elapsed:,.0f} gets/s")
    report("(a) drain: 1 s buckets min / median / max (segments deleted and journal "
           "snapshotted throughout)", f"{min(buckets):,.0f} / {statistics.median(buckets):,.0f} / "
           f"{max(buckets):,.0f} gets/s" if buckets else "n/a")
    report("(a) drain: probe round trip p50 / p99 / max", probe_.window(started, started + elapsed))
    report("(a) drain: exactly once, in order per producer",
           "yes" if (total, duplicates, disorder, missing) == (n, 0, 0, 0) else
           f"NO: {total:,} received, {duplicates} duplicates, {disorder} out of order, {missing} missing")
    report("(a) drained: server RSS now / VmHWM", f"{mib(server.status('VmRSS'))} / {mib(server.status('VmHWM'))}")
    disk_report("(a) right after draining", server, 0)
    took = wait_disk_below(server, MiB, 30)
    report("(a) after draining: time until disk < 1 MiB", f"{took:.1f} s" if took is not None else "NOT within 30 s")
    disk_report("(a) after draining and the sweep", server, 0)
    server.stop()
    report("(a) peak RSS: VmHWM of each server process / largest VmRSS sampled",
           " , ".join(mib(h) for h in server.hwm) + f" / {mib(server.max_rss)}")


# -- part (b): many small queues ------------------------------------------------------------------------


def part_b(args, workdir: str, probe_: Probe) -> None:
    queues = [f"q{i:05d}" for i in range(args.queues)]
    per, size, conns = args.per_queue, 64, args.conns
    n = len(queues) * per
    config = args.config
    if config is None:
        # The built-in max_queues is 10,000, and the probe's queue is one more.
        config = os.path.join(workdir, "many.toml")
        with open(config, "w") as f:
            f.write(f"[server]\nmax_queues = {len(queues) + 1}\n")
    server = Server(os.path.join(workdir, "many"), config)
    server.start()
    probe_.point_at(server.port)
    log(f"(b) filling {len(queues):,} queues x {per} items of {size} B")
    groups = [queues[i::conns] for i in range(conns)]
    jobs = [[(q, int(q[1:]), 0, per) for q in group] for group in groups]
    started, out = run_workers(produce, [(server.port, jobs[i], size) for i in range(conns)])
    elapsed = max(m[-1][0] for _k, _n, m in out) - started
    report("(b) fill: items / rate", f"{n:,} in {elapsed:,.1f} s = {n / elapsed:,.0f} sets/s")
    live = server.stats(["q00000"])["server"]["bytes"]
    report("(b) full: server RSS now / VmHWM", f"{mib(server.status('VmRSS'))} / {mib(server.status('VmHWM'))}")
    report("(b) full: open file descriptors / RLIMIT_NOFILE", f"{server.open_fds():,} / {server.fd_limit()}")
    disk_report("(b) full", server, live)
    restart_twice(server, probe_, "(b) full", n, ["q00000"])
    log("(b) draining")
    started, out = run_workers(consume, [(server.port, group, per, len(queues), 0, True) for group in groups])
    total = sum(r[1] for r in out)
    elapsed = max(r[2][-1][0] for r in out) - started
    report("(b) drain: items / rate", f"{total:,} in {elapsed:,.1f} s = {total / elapsed:,.0f} gets/s"
           + ("" if total == n else f" -- EXPECTED {n:,}"))
    report("(b) drain: items out of order", str(sum(r[4] for r in out)))
    report("(b) drained: server RSS now / VmHWM", f"{mib(server.status('VmRSS'))} / {mib(server.status('VmHWM'))}")
    disk_report("(b) right after draining", server, 0)
    took = wait_disk_below(server, MiB, 120)
    report("(b) after draining: time until disk (apparent) < 1 MiB",
           f"{took:.1f} s" if took is not None else "NOT within 120 s")
    disk_report("(b) after draining and the sweep", server, 0)
    server.stop()
    report("(b) peak RSS: VmHWM of each server process / largest VmRSS sampled",
           " , ".join(mib(h) for h in server.hwm) + f" / {mib(server.max_rss)}")
    global peak_rss_met
    peak = max([*server.hwm, server.max_rss])
    peak_rss_met = peak < RSS_AIM
    report(f"(b) peak RSS against the aim (under {mib(RSS_AIM)})",
           f"{mib(peak)}: {'met' if peak_rss_met else 'MISSED'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10_000_000, help="items in the deep queue (a)")
    parser.add_argument("--item-size", type=int, default=1024, help="bytes per item in (a)")
    parser.add_argument("--queues", type=int, default=10_000, help="queues in (b)")
    parser.add_argument("--per-queue", type=int, default=100, help="64 B items per queue in (b)")
    parser.add_argument("--conns", type=int, default=3, help="producer / consumer connections (one process each)")
    parser.add_argument("--keys", type=int, default=16, help="keys per get request when draining (a)")
    parser.add_argument("--config", help="a TOML file for the server (default: built-in settings)")
    parser.add_argument("--dir", default=os.environ.get("TMPDIR", "/tmp"), help="where the data directories go")
    parser.add_argument("--only", choices=["a", "b"], help="run one part")
    parser.add_argument("--keep", action="store_true", help="keep the data directories and logs")
    args = parser.parse_args()
    if args.item_size < 17 or args.conns < 1 or args.conns > 64:
        parser.error("--item-size must be at least 17 and --conns 1 to 64")

    need = args.items * (args.item_size + 64) * 1.1 if args.only != "b" else 0
    free = shutil.disk_usage(args.dir).free
    if need > free:
        parser.error(f"{args.dir} has {mib(free)} free; part (a) needs about {mib(int(need))}")
    workdir = tempfile.mkdtemp(prefix="erqpy-scale-", dir=args.dir)
    log(f"data under {workdir}; {mib(free)} free there")
    probe_ = Probe(workdir)
    try:
        if args.only != "b":
            part_a(args, workdir, probe_)
        if args.only != "a":
            part_b(args, workdir, probe_)
    finally:
        probe_.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nscripts/bench_scale: {args.items:,} x {args.item_size} B in one queue; "
          f"{args.queues:,} queues x {args.per_queue} x 64 B; {args.conns} connections; "
          f"{os.cpu_count()} cores\n")
    print("| measure | value |\n|---|---|")
    for measure, value in rows:
        print(f"| {measure} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
