"""End-to-end jobs per second through ``erqpy consume`` (empty handler), against the raw
protocol rate of the same reliable-read loop, measured in the same run.  Run it as
``scripts/bench_consumer`` (see --help).

What it does:

1. starts its own erqpy server on 127.0.0.1, port 0, with a temporary data directory;
2. for each row: puts ``--jobs`` envelopes (``erqpy.producer.Producer.put_many``, about
   150 bytes each) on a fresh queue, then consumes them all:
   - **raw**: N processes, each one connection doing what the consumer does per job, one
     ``gets <q>/close/open/t=500`` round trip, with a tiny raw-socket loop (no decoding);
   - **erqpy consume**: real ``erqpy consume`` subprocesses with an empty handler, as N
     processes or as one process with ``--concurrency N``;
3. timing starts when every consumer is connected and holds its first job (a start
   barrier, so process start-up is never timed) and ends with the last job handled;
   server CPU per job is utime + stime from /proc/PID/stat over the same span;
4. checks that every job was handled exactly once and the queue is empty, then stops the
   server.

The empty handler is also this module's ``noop``: ``erqpy consume`` imports it from
scripts/ (``--handler bench_consumer:noop``).  Its first call in each thread waits at the
start barrier; the rest do nothing but count.
"""

import argparse
import atexit
import json
import multiprocessing as mp
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ERQPY = os.path.join(ROOT, ".venv", "bin", "erqpy")
HOST = "127.0.0.1"
PHASE_TIMEOUT = 300.0
WAIT_MS = 500

# -- the empty handler, run inside `erqpy consume` --------------------------------------------

_local = threading.local()
_counts = {"jobs": 0, "last": 0.0}
_count_lock = threading.Lock()


def noop(job):
    """The benchmark's empty handler: waits at the start barrier on a thread's first job."""
    if not getattr(_local, "started", False):
        _local.started = True
        directory = os.environ["BENCH_DIR"]
        open(os.path.join(directory, f"ready-{os.getpid()}-{threading.get_ident()}"), "w").close()
        go = os.path.join(directory, "go")
        deadline = time.monotonic() + PHASE_TIMEOUT
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.001)
    with _count_lock:
        _counts["jobs"] += 1
        _counts["last"] = time.time()


def _write_counts():
    directory = os.environ.get("BENCH_DIR")
    if directory and _counts["jobs"]:
        with open(os.path.join(directory, f"done-{os.getpid()}"), "w") as f:
            json.dump(_counts, f)


if os.environ.get("BENCH_DIR"):
    atexit.register(_write_counts)

# -- the benchmark ------------------------------------------------------------------------------


def log(message):
    print(message, file=sys.stderr, flush=True)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ErqpyServer:
    def __init__(self, fsync):
        self.tmp = tempfile.mkdtemp(prefix="erqpy-bench-consumer-")
        self.log = open(os.path.join(self.tmp, "server.log"), "wb")
        self.proc = subprocess.Popen(
            [ERQPY, "serve", "--host", HOST, "--port", "0", "--fsync", fsync,
             "--data-dir", os.path.join(self.tmp, "data"), "--log-level", "warning"],
            stdout=subprocess.PIPE, stderr=self.log)
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline().decode() if ready else ""
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"erqpy did not start: {line!r}")
        self.port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
        self.spec = f"{HOST}:{self.port}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def preload(spec, queue, jobs):
    from erqpy.client.producer import Producer

    with Producer([spec]) as producer:
        for start in range(0, jobs, 1000):
            producer.put_many(queue, [("bench", {"n": n}) for n in range(start, min(jobs, start + 1000))])


def queue_state(spec, queue, client=None):
    """(items, open reads) of ``queue``; pass a ``Client`` to poll on one connection."""
    from erqpy.client import Client

    own = client is None
    client = client or Client([spec])
    try:
        fields = client.stats()[spec] or {}
    finally:
        if own:
            client.close()
    return fields.get(f"queue_{queue}_items", 0), fields.get(f"queue_{queue}_open_transactions", 0)


# -- raw: one connection per process, one round trip per job --------------------------------------


def _raw_worker(port, queue, barrier, results):
    sock = socket.create_connection((HOST, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = b"gets %s/close/open/t=%d\r\n" % (queue.encode(), WAIT_MS)
    empty = b"END\r\n"
    barrier.wait()
    handled = 0
    ids = []
    last = time.time()
    while True:
        sock.sendall(request)
        buf = sock.recv(65536)
        while not buf.endswith(empty):
            more = sock.recv(65536)
            if not more:
                raise ConnectionError("server closed the connection")
            buf += more
        if buf == empty:
            break
        last = time.time()
        handled += 1
        ids.append(int(buf.split(b" ", 4)[4].split(b"\r\n", 1)[0]))  # the cas field: item id
    sock.sendall(b"get %s/close\r\n" % queue.encode())
    sock.recv(64)
    sock.close()
    results.put((handled, last, ids))


def run_raw(server, queue, procs, jobs):
    preload(server.spec, queue, jobs)
    barrier = mp.Barrier(procs + 1)
    results = mp.Queue()
    workers = [mp.Process(target=_raw_worker, args=(server.port, queue, barrier, results))
               for _ in range(procs)]
    for worker in workers:
        worker.start()
    barrier.wait(timeout=60)
    cpu0, started = cpu_seconds(server.proc.pid), time.time()
    outcomes = [results.get(timeout=PHASE_TIMEOUT) for _ in workers]
    cpu1 = cpu_seconds(server.proc.pid)
    for worker in workers:
        worker.join(timeout=30)
    handled = sum(o[0] for o in outcomes)
    ids = [i for o in outcomes for i in o[2]]
    # Until the last job, not the final empty reply (which waited WAIT_MS for nothing).
    elapsed = max(max(o[1] for o in outcomes) - started, 1e-6)
    check(server, queue, jobs, handled, len(set(ids)))
    return jobs / elapsed, (cpu1 - cpu0) / jobs


# -- erqpy consume subprocesses -------------------------------------------------------------------


def run_consume(server, queue, procs, threads, jobs, empty_before=0):
    """``empty_before``: empty queues named before ``queue`` (``erqpy consume e1,e2,q``): every
    read is then one ``get e1/any/open e2/any/open q/any/open`` that finds its job last."""
    preload(server.spec, queue, jobs)
    queues = ",".join([f"{queue}_empty{n}" for n in range(empty_before)] + [queue])
    bench_dir = tempfile.mkdtemp(prefix="bench-consume-", dir=server.tmp)
    env = dict(os.environ, BENCH_DIR=bench_dir,
               PYTHONPATH=os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")])))
    cmd = [ERQPY, "consume", queues, "--servers", server.spec, "--handler", "bench_consumer:noop",
           "--concurrency", str(threads), "--wait", str(WAIT_MS / 1000.0)]
    consumers = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                  stderr=open(os.path.join(bench_dir, f"consumer{n}.log"), "wb"))
                 for n in range(procs)]
    try:
        deadline = time.monotonic() + 60
        while sum(name.startswith("ready-") for name in os.listdir(bench_dir)) < procs * threads:
            if time.monotonic() > deadline or any(c.poll() is not None for c in consumers):
                raise RuntimeError(f"consumers did not start; see {bench_dir}")
            time.sleep(0.01)
        cpu0, started = cpu_seconds(server.proc.pid), time.time()
        open(os.path.join(bench_dir, "go"), "w").close()
        deadline = time.monotonic() + PHASE_TIMEOUT
        from erqpy.client import Client

        # Polled on one connection, a few times a second: the poll costs the server little.
        with Client([server.spec]) as poller:
            while queue_state(server.spec, queue, poller) != (0, 0):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"jobs left after {PHASE_TIMEOUT} s")
                time.sleep(0.1)
        cpu1 = cpu_seconds(server.proc.pid)
    finally:
        for consumer in consumers:
            consumer.send_signal(signal.SIGTERM)
        for consumer in consumers:
            consumer.wait(timeout=60)
    counts = []
    for name in os.listdir(bench_dir):
        if name.startswith("done-"):
            with open(os.path.join(bench_dir, name)) as f:
                counts.append(json.load(f))
    handled = sum(c["jobs"] for c in counts)
    elapsed = max(max(c["last"] for c in counts) - started, 1e-6)
    check(server, queue, jobs, handled, handled)
    return jobs / elapsed, (cpu1 - cpu0) / jobs


def median_run(runs):
    """The run with the median rate: (jobs/s, server CPU seconds per job)."""
    return sorted(runs)[len(runs) // 2]


def check(server, queue, jobs, handled, distinct):
    left = queue_state(server.spec, queue)
    if (handled, distinct, left) != (jobs, jobs, (0, 0)):
        raise RuntimeError(f"{queue}: {handled} handled ({distinct} distinct) of {jobs}, "
                           f"left (items, open reads) = {left}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10000, help="jobs per run (default 10000)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per row, interleaved raw/consume; the median is shown (default 3)")
    parser.add_argument("--consumers", type=int, default=8, help="the N of the many-consumer rows (default 8)")
    parser.add_argument("--queues", type=int, default=3,
                        help="queues of the multi-queue row, all empty but the last (default 3)")
    parser.add_argument("--fsync", default="interval", choices=["always", "interval", "never"])
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    if not os.path.exists(ERQPY):
        sys.exit(f"{ERQPY} is missing: run scripts/bench_consumer (it creates .venv)")

    n = args.consumers
    rows = [
        ("1 consumer", 1, 1, 0),
        (f"1 consumer of {args.queues} queues, jobs on the last", 1, 1, args.queues - 1),
        (f"{n} consumers ({n} processes)", n, 1, 0),
        (f"{n} consumers (1 process, --concurrency {n})", 1, n, 0),
    ]
    server = ErqpyServer(args.fsync)
    results = []
    try:
        raw_runs = {}
        for label, procs, threads, empty_before in rows:
            # The raw loop with as many connections as the row has consumers; shared by
            # the two many-consumer rows.
            raw_key = "raw1" if procs * threads == 1 else "rawN"
            raw_procs = 1 if raw_key == "raw1" else n
            runs = []
            for run in range(args.repeat):
                if len(raw_runs.setdefault(raw_key, [])) <= run:
                    log(f"raw protocol, {raw_procs} connection(s), run {run + 1} ...")
                    raw_runs[raw_key].append(run_raw(server, f"raw_{raw_procs}_{run}", raw_procs, args.jobs))
                log(f"erqpy consume, {label}, run {run + 1} ...")
                runs.append(run_consume(server, f"consume_{procs}x{threads}_{empty_before}_{run}", procs, threads,
                                        args.jobs, empty_before))
                log(f"  raw {raw_runs[raw_key][run][0]:,.0f} jobs/s, consume {runs[-1][0]:,.0f} jobs/s")
            raw_rate, raw_cpu = median_run(raw_runs[raw_key])
            rate, cpu = median_run(runs)
            results.append({"row": label, "raw_jobs_per_s": round(raw_rate), "consume_jobs_per_s": round(rate),
                            "ratio": round(rate / raw_rate, 2), "raw_server_cpu_us": round(raw_cpu * 1e6, 1),
                            "consume_server_cpu_us": round(cpu * 1e6, 1),
                            "consume_runs": [round(r[0]) for r in runs],
                            "raw_runs": [round(r[0]) for r in raw_runs[raw_key]]})
    finally:
        server.stop()

    print(f"erqpy consume, empty handler, {args.jobs} jobs per run, median of {args.repeat} runs, "
          f"fsync {args.fsync}, "
          f"{os.cpu_count()} cores; raw = one `gets q/close/open/t={WAIT_MS}` round trip per job "
          "on raw sockets, one process per connection\n")
    print("| consumers | raw protocol jobs/s | erqpy consume jobs/s | consume / raw "
          "| server CPU µs/job raw · consume |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['row']} | {r['raw_jobs_per_s']:,} | {r['consume_jobs_per_s']:,} | {r['ratio']:.2f} "
              f"| {r['raw_server_cpu_us']} · {r['consume_server_cpu_us']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"jobs": args.jobs, "repeat": args.repeat, "fsync": args.fsync, "rows": results}, f, indent=2)


if __name__ == "__main__":
    main()
