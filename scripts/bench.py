"""erqpy benchmark: enqueue, dequeue and mixed throughput and latency, against Redis and
memcached on the same machine in the same run.  Run it as ``scripts/bench`` (see --help).

What it does:

1. starts every server itself on 127.0.0.1 on a free port (erqpy from ./.venv with a fresh
   temporary data directory; Redis and memcached from Debian's packages, installed with
   apt-get when missing and run as plain child processes, never as system services);
2. for each item size and connection count, on each server in turn (so that background
   load hits all of them alike): an ENQUEUE phase (every connection sets new items for
   ``--duration`` seconds), a DEQUEUE phase (every connection gets until the queue is
   empty; memcached: gets back every key just set) and a MIXED phase (every connection
   puts 2 items of its own, then alternates set and get for ``--duration`` seconds);
3. empties each queue and checks that every acknowledged item was dequeued exactly once
   (memcached: every get returned its own key's value);
4. stops every server, also on failure or Ctrl-C.

One request is in flight per connection.  Server CPU per operation is the change of
utime + stime in /proc/PID/stat (all threads) over the phase, divided by its operations.
The load generator runs in one process per core (``--procs``), each with an epoll loop
over its share of the connections.  The result is a Markdown table on stdout; progress
and details go to stderr; ``--json FILE`` keeps every number.

``--pin`` puts every server on core 0 and the load generator on the other cores
(``sched_setaffinity``), so that the two never take turns on one core: CPU per operation
then depends less on what the scheduler did in the run (session 10, a quiet VM: unpinned
A/B runs swung by -25 % to +30 % per cell, pinned ones held to a few per cent).  It does
not help against the host: under CPU steal (session 11) one pinned cell still moved from
17 to 37 µs/op; ``scripts/bench_instructions`` is the A/B for that.  Throughput with
``--pin`` is what one core of server does against the rest of the machine as load.
"""

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import statistics
import socket
import subprocess
import sys
import tempfile
import time
from array import array

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402  (scripts/ is not a package)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ERQPY = os.path.join(ROOT, ".venv", "bin", "erqpy")
HOST = "127.0.0.1"
START_TIMEOUT = 30.0
#: ``--pin``: the cores every server process runs on (None: wherever the kernel likes).
SERVER_CPUS = None
#: ... and the cores of the load generator's processes.
LOAD_CPUS = None


def _pin_server():
    """``preexec_fn`` of every server process: its threads inherit the affinity."""
    if SERVER_CPUS is not None:
        os.sched_setaffinity(0, SERVER_CPUS)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# -- servers ---------------------------------------------------------------------------


class Server:
    """A server process started by the benchmark and stopped at the end."""

    name = ""
    label = ""

    def __init__(self):
        self.proc = None
        self.port = 0
        self.tmp = tempfile.mkdtemp(prefix=f"erqpy-bench-{self.name}-")

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def ports(self) -> list:
        """Where the load generator connects (workers take turns): one port, or each
        node's of an engine-mode cluster."""
        return [self.port]

    @property
    def pids(self) -> list:
        """The processes whose CPU a phase counts."""
        return [self.pid]

    def _wait_port(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited at start (status {self.proc.returncode})")
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.label} did not open port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is not None and self.proc.returncode:
            log(f"{self.label} had exited with status {self.proc.returncode}; "
                f"its files are in {self.tmp}")
            return
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)


class Erqpy(Server):
    name = "erqpy"

    def __init__(self, fsync: str, revision: str = "", source: str = "", protocol: str = "text"):
        self.fsync = fsync
        self.revision = revision
        self.source = source
        at = f"@{revision}" if revision else ""
        self.label = f"erqpy{at} (fsync {fsync})"
        if protocol != "text":  # the load generator speaks benchlib.PROTOCOLS[name]
            self.name = f"erqpy-{protocol}"
            self.label = f"erqpy{at} {protocol} (fsync {fsync})"
        super().__init__()

    def _source(self) -> dict:
        """The environment that runs erqpy from ``revision`` instead of the working tree."""
        if self.source:
            return dict(os.environ, PYTHONPATH=os.path.abspath(self.source))
        if not self.revision:
            return dict(os.environ)
        src = os.path.join(self.tmp, "src")
        os.makedirs(src)
        archive = subprocess.run(["git", "-C", ROOT, "archive", self.revision, "erqpy"],
                                 capture_output=True, check=True, timeout=60).stdout
        subprocess.run(["tar", "-x", "-C", src], input=archive, check=True, timeout=60)
        # PYTHONPATH comes before the editable install of the working tree.
        return dict(os.environ, PYTHONPATH=src)

    def start(self) -> None:
        self.proc, self.port = self.launch("data")

    def launch(self, name: str, extra_args=()):
        """One ``erqpy serve`` with data directory ``name`` under tmp: (process, port)."""
        if not os.path.exists(ERQPY):
            raise RuntimeError(f"{ERQPY} is missing: run scripts/bench (it creates .venv)")
        logfile = open(os.path.join(self.tmp, f"{name}.log"), "wb")
        proc = subprocess.Popen(
            [ERQPY, "serve", "--port", "0", "--host", HOST, "--fsync", self.fsync,
             "--data-dir", os.path.join(self.tmp, name), "--log-level", "warning", *extra_args],
            stdout=subprocess.PIPE, stderr=logfile, env=self._source(), preexec_fn=_pin_server,
        )
        # The first stdout line says where it listens: "... listening on HOST:PORT data ...".
        import select

        ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
        line = proc.stdout.readline().decode() if ready else ""
        if " listening on " not in line:
            proc.kill()
            raise RuntimeError(f"erqpy did not start: {line!r}; see {logfile.name}")
        return proc, int(line.split(" listening on ")[1].split()[0].rsplit(":", 1)[1])


class ErqpyLevels(Erqpy):
    """erqpy with its sets spread over 3 priority levels (``--levels``)."""

    name = "erqpy-levels"

    def __init__(self, fsync: str):
        super().__init__(fsync)
        self.label = f"erqpy, 3 priority levels (fsync {fsync})"


class Redis(Server):
    name = "redis"

    def __init__(self, aof: bool = False, replica_of: int = 0):
        self.aof = aof
        self.replica_of = replica_of  # the port of the primary this one replicates
        self.label = "Redis (AOF everysec)" if aof else "Redis"
        super().__init__()

    def start(self) -> None:
        self.port = free_port()
        persistence = (["--appendonly", "yes", "--appendfsync", "everysec"] if self.aof
                       else ["--appendonly", "no"])
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "",
             "--dir", self.tmp, "--daemonize", "no", "--logfile", os.path.join(self.tmp, "log"),
             *persistence, *(["--replicaof", HOST, str(self.replica_of)] if self.replica_of else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_pin_server,
        )
        self._wait_port()


class Memcached(Server):
    name = "memcached"
    label = "memcached"

    def start(self) -> None:
        self.port = free_port()
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen(
            ["memcached", "-l", HOST, "-p", str(self.port), "-U", "0", "-m", "4096",
             "-t", str(os.cpu_count() or 2), "-c", "4096", *user],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_pin_server,
        )
        self._wait_port()


class ErqpyEngine(Erqpy):
    """erqpy in engine mode: ``nodes`` erqpy processes on one redis-server of its own
    (with ``wait``: a replica too, and ``wait_replicas = 1``).  CPU per operation counts
    the erqpy nodes and the Redis primary: the whole cost of an operation."""

    name = "erqpy"  # the protocol the load generator speaks

    def __init__(self, fsync: str, nodes: int = 1, wait: bool = False):
        super().__init__(fsync)
        self.wait = wait
        self.node_count = nodes
        self.label = "erqpy-redis" + (" WAIT 1" if wait else "") + (f" {nodes} nodes" if nodes > 1 else "")
        self.redis = Redis()
        self.replica = None
        self.nodes = []  # (process, port)

    def start(self) -> None:
        self.redis.start()
        if self.wait:
            self.replica = Redis(replica_of=self.redis.port)
            self.replica.start()
            deadline = time.monotonic() + START_TIMEOUT
            while b"connected_slaves:1" not in _redis_info(self.redis.port):
                if time.monotonic() > deadline:
                    raise RuntimeError("the replica did not connect")
                time.sleep(0.1)
        config = os.path.join(self.tmp, "engine.toml")
        with open(config, "w") as f:
            f.write(f'[storage]\nbackend = "redis"\nurl = "redis://{HOST}:{self.redis.port}/0"\n'
                    # A generous WAIT: on a loaded machine a short one answers "not replicated".
                    + ("wait_replicas = 1\nwait_timeout_ms = 5000\n" if self.wait else ""))
        self.nodes = [self.launch(f"node{n}", ["--config", config]) for n in range(self.node_count)]
        self.proc, self.port = self.nodes[0]

    @property
    def ports(self) -> list:
        return [port for _proc, port in self.nodes]

    @property
    def pids(self) -> list:
        return [proc.pid for proc, _port in self.nodes] + [self.redis.pid]

    def stop(self) -> None:
        for proc, _port in self.nodes[1:]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=20)
        super().stop()
        for redis in (self.replica, self.redis):
            if redis is not None:
                redis.stop()


def _redis_info(port: int) -> bytes:
    with socket.create_connection((HOST, port), timeout=2) as sock:
        sock.sendall(b"INFO replication\r\n")
        time.sleep(0.05)
        return sock.recv(65536)


def ensure_installed(programs: dict) -> set:
    """Install missing Debian packages (program -> package); return the programs present."""
    missing = {prog: pkg for prog, pkg in programs.items() if shutil.which(prog) is None}
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        log(f"installing {', '.join(sorted(set(missing.values())))} with apt-get")
        # Installed as packages only; the benchmark starts its own instances.
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-q", *sorted(set(missing.values()))],
                       env=env, stdout=subprocess.DEVNULL, check=False, timeout=600)
    present = {prog for prog in programs if shutil.which(prog) is not None}
    for prog in sorted(set(programs) - present):
        log(f"WARNING: {prog} is not installed (apt-get install -y {programs[prog]}); skipped")
    return present


# -- phases ----------------------------------------------------------------------------


class Runner:
    """Runs phases against one server and keeps the ids for the exactly-once check."""

    def __init__(self, server, procs: int, max_ops: int):
        self.server = server
        self.procs = procs
        self.max_ops = max_ops
        self.next_conn = 1
        self.enq = array("Q")
        self.deq = array("Q")
        self.read_back_errors = 0

    def phase(self, mode, size, conns, duration=0.0, keys=None, prefill=0, max_seconds=120.0):
        workers = max(1, min(self.procs, conns))
        specs = []
        for w in range(workers):
            count = conns // workers + (1 if w < conns % workers else 0)
            bases = []
            for _ in range(count):
                bases.append(self.next_conn << 32)
                self.next_conn += 1
            specs.append({
                "worker": w, "server": self.server.name, "host": HOST,
                "port": self.server.ports[w % len(self.server.ports)], "mode": mode, "size": size, "id_bases": bases,
                "duration": duration, "max_ops": self.max_ops // workers,
                "max_seconds": max_seconds, "prefill": prefill, "keys": None,
                "cpus": LOAD_CPUS,
            })
        if keys is not None:  # memcached: spread the keys to get over the connections
            per_conn = [[] for _ in range(conns)]
            for i, key in enumerate(keys):
                per_conn[i % conns].append(key)
            start = 0
            for spec in specs:
                n = len(spec["id_bases"])
                spec["keys"] = per_conn[start : start + n]
                start += n
        ctx = mp.get_context("fork")
        barrier = ctx.Barrier(workers + 1)
        results = ctx.Queue()
        procs = [ctx.Process(target=benchlib.run_worker, args=(spec, barrier, results))
                 for spec in specs]
        for p in procs:
            p.start()
        outs = []
        try:
            try:
                barrier.wait(timeout=120)
            except Exception:
                pass  # a worker failed to connect; its error is on the queue
            cpu0 = benchlib.processes_cpu(self.server.pids)
            busy0 = benchlib.machine_busy()
            limit = time.monotonic() + duration + max_seconds + 60
            while len(outs) < workers:
                out = results.get(timeout=max(1.0, limit - time.monotonic()))
                if "error" in out:
                    raise RuntimeError(out["error"])
                outs.append(out)
            cpu1 = benchlib.processes_cpu(self.server.pids)
            busy1 = benchlib.machine_busy()
        finally:
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
        busy = (busy1[0] - busy0[0], busy1[1] - busy0[1])
        return self._summarise(mode, size, conns, outs, cpu0, cpu1, busy)

    def _summarise(self, mode, size, conns, outs, cpu0, cpu1, busy):
        lat = array("q")
        for out in outs:
            lat.frombytes(out["lat"])
            self.enq.frombytes(out["enq"])
            self.deq.frombytes(out["deq"])
        ops = sum(o["ops"] for o in outs)
        hits = sum(o["hits"] for o in outs)
        misses = sum(o["misses"] for o in outs)
        errors = sum(o["errors"] for o in outs)
        elapsed = max(o["t_end"] for o in outs) - min(o["t_start"] for o in outs)
        # A dequeue is measured in items: the one miss per connection that ends it is
        # a request but not an item.
        items = hits if mode == benchlib.DEQUEUE else ops
        lat_sorted = sorted(lat)
        user = cpu1[0] - cpu0[0]
        system = cpu1[1] - cpu0[1]
        result = {
            "server": self.server.label, "mode": mode, "size": size, "conns": conns,
            "ops": items, "requests": ops, "hits": hits, "misses": misses, "errors": errors,
            "first_error": next((o["first_error"] for o in outs if o["first_error"]), ""),
            "seconds": elapsed,
            "rate": items / elapsed if elapsed > 0 else 0.0,
            "p50_us": benchlib.percentile(lat_sorted, 0.50) / 1000,
            "p99_us": benchlib.percentile(lat_sorted, 0.99) / 1000,
            "cpu_us": (user + system) * 1e6 / ops if ops else 0.0,
            "user_us": user * 1e6 / ops if ops else 0.0,
            "sys_us": system * 1e6 / ops if ops else 0.0,
            "client_cpu_us": sum(o["client_cpu"] for o in outs) * 1e6 / ops if ops else 0.0,
            # Interrupt time, charged to no process, and the CPU used by everything
            # else on the machine meanwhile (the other servers are idle): a noisy
            # neighbour shows in the latter.
            "irq_us": busy[1] * 1e6 / ops if ops else 0.0,
            "others_cores": max(0.0, busy[0] - busy[1] - user - system
                                - sum(o["client_cpu"] for o in outs)) / elapsed
            if elapsed > 0 else 0.0,
        }
        if errors:
            log(f"  ERROR replies: {errors}, first: {result['first_error']}")
        return result

    def drain(self) -> int:
        """Empty the queue (untimed); the number of items taken."""
        if self.server.name == "memcached":
            return 0
        return self.phase(benchlib.DRAIN, 0, 4, max_seconds=300)["ops"]

    def verify(self) -> str:
        """Every acknowledged item dequeued exactly once: compare the two id lists."""
        if self.server.name == "memcached":
            if self.read_back_errors:
                return f"FAILED: {self.read_back_errors} keys not read back with their value"
            return f"ok: every get of {len(self.enq)} keys set returned that key's own value"
        enq = sorted(self.enq)
        deq = sorted(self.deq)
        if enq == deq:
            return f"ok: all {len(enq)} acknowledged items dequeued exactly once"
        enq_set, deq_set = set(enq), set(deq)
        lost = len(enq_set - deq_set)
        extra = len(deq_set - enq_set)
        dupes = len(deq) - len(deq_set)
        return f"FAILED: {lost} lost, {dupes} dequeued twice, {extra} never acknowledged"


def fmt_cell(r) -> str:
    return (
        f"{r['server']:<22} {r['mode']:<7} {r['size']:>5} B {r['conns']:>3} conns: "
        f"{r['rate']:>9,.0f}/s  p50 {r['p50_us']:>7,.0f} µs  p99 {r['p99_us']:>7,.0f} µs  "
        f"server {r['cpu_us']:5.1f} µs/op (user {r['user_us']:.1f}, sys {r['sys_us']:.1f})  "
        f"client {r['client_cpu_us']:.1f}  irq {r['irq_us']:.1f} µs/op  "
        f"others {r['others_cores']:.2f} cores"
    )


def run_cell(runner, size, conns, modes, args) -> list:
    """Enqueue, dequeue and mixed phases of one cell against one server."""
    server = runner.server
    memcached = server.name == "memcached"
    results = []
    if benchlib.ENQUEUE in modes or benchlib.DEQUEUE in modes:
        before = len(runner.enq)
        r = runner.phase(benchlib.ENQUEUE, size, conns, duration=args.duration)
        log(fmt_cell(r))
        if benchlib.ENQUEUE in modes:
            results.append(r)
        keys = list(runner.enq[before:]) if memcached else None
        r = runner.phase(benchlib.DEQUEUE, size, conns, keys=keys)
        if memcached:
            runner.read_back_errors += r["errors"] + (len(keys) - r["hits"])
        log(fmt_cell(r))
        if benchlib.DEQUEUE in modes:
            results.append(r)
        runner.drain()
    if benchlib.MIXED in modes:
        r = runner.phase(benchlib.MIXED, size, conns, duration=args.duration, prefill=2)
        if memcached:
            runner.read_back_errors += r["errors"] + r["misses"]
        log(fmt_cell(r))
        results.append(r)
        runner.drain()
    return results


def warm_up(runner) -> None:
    """First connections, queue creation, allocator growth: run once, not reported."""
    runner.phase(benchlib.ENQUEUE, 64, 16, duration=0.5)
    keys = list(runner.enq) if runner.server.name == "memcached" else None
    runner.phase(benchlib.DEQUEUE, 64, 16, keys=keys)
    runner.drain()


def run_all(plan, sizes, conn_counts, modes, args):
    """Start every server, then run each cell on each server in turn, so that a change
    in the machine's background load hits all servers alike; returns (results, verdicts)."""
    runners = []
    verdicts = {}
    try:
        for server, cells in plan:
            try:
                server.start()
            except Exception as exc:
                log(f"{server.label}: FAILED to start: {exc}")
                verdicts[server.label] = f"FAILED to start: {exc}"
                continue
            log(f"== {server.label}: pid {server.pid}, port {server.port}")
            runner = Runner(server, args.procs, args.max_ops)
            warm_up(runner)
            runners.append((runner, cells))
        results = []
        for rep in range(args.repeat):
            for size in sizes:
                for conns in conn_counts:
                    for runner, cells in runners:
                        if (size, conns) not in cells or runner.server.label in verdicts:
                            continue
                        try:
                            for r in run_cell(runner, size, conns, modes, args):
                                r["repeat"] = rep
                                results.append(r)
                        except Exception as exc:
                            log(f"   {runner.server.label}: FAILED: {exc}")
                            verdicts[runner.server.label] = f"FAILED: {exc}"
        for runner, _cells in runners:
            if runner.server.label not in verdicts:
                verdicts[runner.server.label] = runner.verify()
            log(f"   {runner.server.label}: {verdicts[runner.server.label]}")
    finally:
        for server, _cells in plan:
            server.stop()
    return results, verdicts


def median_results(results) -> list:
    """One result per (server, mode, size, conns): the median of each number over repeats."""
    groups = {}
    for r in results:
        groups.setdefault((r["server"], r["mode"], r["size"], r["conns"]), []).append(r)
    merged = []
    for runs in groups.values():
        m = dict(runs[0])
        for key, value in runs[0].items():
            if isinstance(value, float):
                m[key] = statistics.median(r[key] for r in runs)
        m["runs"] = len(runs)
        merged.append(m)
    return merged


# -- report --------------------------------------------------------------------------------


def _find(results, server, mode, size, conns):
    for r in results:
        if r["server"] == server and r["mode"] == mode and r["size"] == size and r["conns"] == conns:
            return r
    return None


def _rate(r):
    return f"{r['rate']:,.0f}" if r else "–"


def _lat(r):
    return f"{r['p50_us']:,.0f} / {r['p99_us']:,.0f}" if r else "–"


def _cpu(r):
    return f"{r['cpu_us']:.1f}" if r else "–"


def _ratio(a, b):
    return f"{a['rate'] / b['rate']:.2f}" if a and b and b["rate"] else "–"


def markdown(results, main_label, sizes, conn_counts, modes, extras) -> str:
    size_name = {64: "64 B", 1024: "1 KiB"}
    lines = [
        "| op | item | conns | erqpy ops/s | p50 / p99 µs | CPU µs/op "
        "| Redis ops/s | p50 / p99 µs | CPU µs/op "
        "| memcached ops/s | p50 / p99 µs | CPU µs/op | erqpy ÷ Redis | erqpy ÷ memcached |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    op_name = {benchlib.ENQUEUE: "enqueue", benchlib.DEQUEUE: "dequeue", benchlib.MIXED: "mixed"}
    for mode in (benchlib.ENQUEUE, benchlib.DEQUEUE, benchlib.MIXED):
        if mode not in modes:
            continue
        for size in sizes:
            for conns in conn_counts:
                e = _find(results, main_label, mode, size, conns)
                r = _find(results, "Redis", mode, size, conns)
                m = _find(results, "memcached", mode, size, conns)
                lines.append(
                    f"| {op_name[mode]} | {size_name.get(size, f'{size} B')} | {conns} "
                    f"| {_rate(e)} | {_lat(e)} | {_cpu(e)} "
                    f"| {_rate(r)} | {_lat(r)} | {_cpu(r)} "
                    f"| {_rate(m)} | {_lat(m)} | {_cpu(m)} | {_ratio(e, r)} | {_ratio(e, m)} |"
                )
    extra_rows = [r for r in results if r["server"] in extras]
    if extra_rows:
        lines += [
            "",
            "| server | op | item | conns | ops/s | p50 / p99 µs | CPU µs/op | ÷ Redis (no persistence) |",
            "|---|---|---|--:|--:|--:|--:|--:|",
        ]
        for r in extra_rows:
            base = _find(results, "Redis", r["mode"], r["size"], r["conns"])
            lines.append(
                f"| {r['server']} | {op_name[r['mode']]} | {size_name.get(r['size'], r['size'])} "
                f"| {r['conns']} | {_rate(r)} | {_lat(r)} | {_cpu(r)} | {_ratio(r, base)} |"
            )
    return "\n".join(lines)


def comparison(results, before_label, after_label) -> str:
    lines = [
        f"| op | item | conns | {before_label} ops/s | CPU µs/op | working tree ops/s "
        "| CPU µs/op | CPU change |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        if r["server"] != after_label:
            continue
        b = _find(results, before_label, r["mode"], r["size"], r["conns"])
        if not b:
            continue
        change = (r["cpu_us"] / b["cpu_us"] - 1) * 100 if b["cpu_us"] else 0.0
        lines.append(
            f"| {r['mode']} | {r['size']} B | {r['conns']} | {_rate(b)} | {_cpu(b)} "
            f"| {_rate(r)} | {_cpu(r)} | {change:+.0f}% |"
        )
    return "\n".join(lines)


def protocol_table(results, text_label, label, protocol) -> str:
    """Another protocol's cells against the text protocol's, on servers of one build in
    the same run: throughput and server CPU per op (issue 15's aim: within 15 %)."""
    lines = [
        f"{protocol} protocol against the text protocol (same build, same run):",
        "",
        f"| op | item | conns | {protocol} ops/s | text ops/s | {protocol} CPU µs/op | text CPU µs/op "
        f"| CPU {protocol} ÷ text | {protocol} ÷ Redis ops/s |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        if r["server"] != label:
            continue
        t = _find(results, text_label, r["mode"], r["size"], r["conns"])
        redis = _find(results, "Redis", r["mode"], r["size"], r["conns"])
        cpu_ratio = f"{r['cpu_us'] / t['cpu_us']:.2f}" if t and t["cpu_us"] else "–"
        lines.append(
            f"| {r['mode']} | {r['size']} B | {r['conns']} | {_rate(r)} | {_rate(t)} | {_cpu(r)} "
            f"| {_cpu(t)} | {cpu_ratio} | {_ratio(r, redis)} |"
        )
    return "\n".join(lines)


def aim_report(results, main_label) -> list:
    out = []
    for mode in (benchlib.ENQUEUE, benchlib.DEQUEUE, benchlib.MIXED):
        e = _find(results, main_label, mode, 64, 16)
        r = _find(results, "Redis", mode, 64, 16)
        if not e:
            continue
        ratio = e["rate"] / r["rate"] if r and r["rate"] else None
        half = "n/a" if ratio is None else ("met" if ratio >= 0.5 else "NOT met")
        floor = ("met" if e["rate"] >= 20_000 else "NOT met") if mode == benchlib.ENQUEUE else ""
        line = (f"- {mode} 64 B, 16 conns: {e['rate']:,.0f}/s, {e['cpu_us']:.1f} µs CPU/op; "
                f"÷ Redis = {ratio:.2f} (aim ≥ 0.5: {half})" if ratio is not None else
                f"- {mode} 64 B, 16 conns: {e['rate']:,.0f}/s, {e['cpu_us']:.1f} µs CPU/op")
        if floor:
            line += f"; ≥ 20,000 enqueues/s: {floor}"
        out.append(line)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true",
                        help="16 connections, 64 B, 1 s phases, no extra rows (about 20 s)")
    parser.add_argument("--duration", type=float, default=2.0,
                        help="seconds per timed phase (default 2; --quick: 1)")
    parser.add_argument("--conns", default="1,16,128", help="connection counts (default 1,16,128)")
    parser.add_argument("--sizes", default="64,1024", help="item sizes in bytes (default 64,1024)")
    parser.add_argument("--modes", default="enqueue,dequeue,mixed")
    parser.add_argument("--servers", default="erqpy,redis,memcached",
                        help="which of erqpy, erqpy-redis (engine mode on a redis-server it "
                        "starts; extra rows: WAIT 1 with a replica, two nodes), redis, "
                        "memcached to run (default erqpy,redis,memcached)")
    parser.add_argument("--protocols", default="text",
                        help="erqpy's protocols to run, of text, binary, meta (default text); each "
                        "other than text is a server of its own in the plan and a table of "
                        "its CPU per op against the text protocol's")
    parser.add_argument("--fsync", default="interval", choices=("always", "interval", "never"),
                        help="erqpy's fsync policy for the main table (default interval)")
    parser.add_argument("--no-extra", action="store_true",
                        help="skip the extra rows (erqpy fsync always at 16 and 128 "
                        "connections, Redis with AOF everysec)")
    parser.add_argument("--procs", type=int, default=os.cpu_count() or 2,
                        help="load generator processes (default: one per core)")
    parser.add_argument("--max-ops", type=int, default=5_000_000,
                        help="upper bound on requests per phase (default 5,000,000)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run every cell this many times, interleaved, and report "
                        "medians (default 1)")
    parser.add_argument("--baseline", metavar="REV",
                        help="also run erqpy as of git revision REV (e.g. HEAD), interleaved "
                        "with the working tree, and print the change")
    parser.add_argument("--source", metavar="DIR",
                        help="run erqpy from DIR (holding an erqpy/ package) instead of the "
                        "working tree")
    parser.add_argument("--levels", action="store_true",
                        help="also run erqpy with every set spread over 3 priority levels "
                        "(/pri=2, 5, 8), interleaved, and print its CPU per op against the "
                        "plain queue's")
    parser.add_argument("--pin", action="store_true",
                        help="run every server on core 0 and the load generator on the "
                        "others (needs 2 cores or more): steadier CPU per op, for A/B runs")
    parser.add_argument("--json", metavar="FILE", help="write every number to FILE")
    args = parser.parse_args(argv)
    if args.pin:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            parser.error("--pin needs at least 2 cores")
        global SERVER_CPUS, LOAD_CPUS
        SERVER_CPUS, LOAD_CPUS = {cores[0]}, set(cores[1:])
    if args.quick:
        args.conns, args.sizes = "16", "64"
        args.duration = min(args.duration, 1.0)
        args.no_extra = True
    conn_counts = [int(c) for c in args.conns.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    if min(sizes) < 16:
        parser.error("items are at least 16 bytes (they carry their id)")
    modes = set(args.modes.split(","))
    wanted = args.servers.split(",")

    present = ensure_installed({
        p: pkg for p, pkg in (("redis-server", "redis-server"), ("memcached", "memcached"))
        if (p == "redis-server" and ("redis" in wanted or "erqpy-redis" in wanted))
        or (p == "memcached" and "memcached" in wanted)
    })
    all_cells = {(size, conns) for size in sizes for conns in conn_counts}
    plan = []
    extras = []
    main_label = f"erqpy (fsync {args.fsync})"
    if "erqpy" in wanted:
        plan.append((Erqpy(args.fsync, source=args.source), all_cells))
        if args.baseline:
            plan.append((Erqpy(args.fsync, args.baseline), all_cells))
        if args.levels:
            plan.append((ErqpyLevels(args.fsync), all_cells))
    if "erqpy-redis" in wanted and "redis-server" in present:
        plan.append((ErqpyEngine(args.fsync), all_cells))
        extras.append("erqpy-redis")
        if not args.no_extra:
            for engine in (ErqpyEngine(args.fsync, wait=True),
                           ErqpyEngine(args.fsync, nodes=2)):
                plan.append((engine, {(64, 16)} & all_cells))
                extras.append(engine.label)
    protocols = [p for p in args.protocols.split(",") if p != "text"]
    for protocol in protocols:
        if f"erqpy-{protocol}" not in benchlib.PROTOCOLS:
            parser.error(f"unknown protocol {protocol!r}")
        plan.append((Erqpy(args.fsync, source=args.source, protocol=protocol), all_cells))
    if "redis" in wanted and "redis-server" in present:
        plan.append((Redis(), all_cells))
    if "memcached" in wanted and "memcached" in present:
        plan.append((Memcached(), all_cells))
    if not args.no_extra:
        if "erqpy" in wanted and args.fsync != "always":
            plan.append((Erqpy("always"), {(64, 16), (64, 128)} & all_cells))
            extras.append("erqpy (fsync always)")
        if "redis" in wanted and "redis-server" in present:
            plan.append((Redis(aof=True), {(64, 16)} & all_cells))
            extras.append("Redis (AOF everysec)")

    busy = benchlib.machine_busy_cores(1.0)
    pinned = (f"; servers pinned to core {min(SERVER_CPUS)}, load to {sorted(LOAD_CPUS)}"
              if SERVER_CPUS else "")
    log(f"load generator: {args.procs} processes{pinned}; {os.cpu_count()} cores; phases of "
        f"{args.duration:g} s; {args.repeat} run(s) of each cell; "
        f"before start the machine was busy with {busy:.2f} cores")
    if busy > 0.2:
        log("WARNING: other processes are using the CPU; expect noisy numbers")
    started = time.monotonic()
    raw, verdicts = run_all(plan, sizes, conn_counts, modes, args)
    results = median_results(raw)

    print(markdown(results, main_label, sizes, conn_counts, modes, extras))
    print()
    print(f"Exactly-once check ({time.monotonic() - started:.0f} s in all):")
    for label, verdict in verdicts.items():
        print(f"- {label}: {verdict}")
    if args.baseline:
        print(comparison(results, f"erqpy@{args.baseline} (fsync {args.fsync})", main_label))
        print()
    if args.levels:
        print("3 priority levels against a plain queue (CPU change: the issue's aim is at most +10%):")
        print(comparison(results, main_label, f"erqpy, 3 priority levels (fsync {args.fsync})"))
        print()
    for protocol in protocols:
        print(protocol_table(results, main_label, f"erqpy {protocol} (fsync {args.fsync})", protocol))
        print()
    print("Aim (fsync interval, 16 connections): at least half of Redis, at least 20,000 enqueues/s")
    for line in aim_report(results, main_label):
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": raw, "medians": results,
                       "verdicts": verdicts}, f, indent=1)
    failed = any(v.startswith("FAILED") for v in verdicts.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
