"""HTTP API throughput beside the memcache rate, in the same run on the same server.

Run it as ``scripts/bench_http`` (see --help).  It starts one erqpy server (from ./.venv,
with the erqpy-http plugin on a free port, a temporary data directory) and runs, with the
same load generator and the same number of connections:

    memcache set / get          the data port, one item per request
    HTTP POST /q / POST /q/take     one JSON job per request, keep-alive connections
    HTTP POST /qb / POST /qb/take   batches of --batch jobs per request
    HTTP reserve + confirm          POST /q/NAME/take?reserve=1 then POST /q/NAME/confirm/ID

Enqueue phases run for --duration seconds; dequeue phases run until the queue is empty
(each connection stops at its first miss).  One request is in flight per connection; the
load generator is one process per core, each with an epoll loop over its connections.
Server CPU per item is utime + stime from /proc/PID/stat over the phase.  Prints a
Markdown table on stdout; progress goes to stderr.
"""

import argparse
import json
import multiprocessing as mp
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402  (scripts/ is not a package; process_cpu comes from there)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ERQPY = os.path.join(ROOT, ".venv", "bin", "erqpy")
HOST = "127.0.0.1"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def job(n: int, size: int) -> bytes:
    head = b'{"id":%d,"pad":"' % n
    return head + b"x" * max(size - len(head) - 2, 0) + b'"}'


# -- protocols: request bytes, "is this reply complete", and how many items it carried -------


class MemcacheSet:
    queue = b"bench-mc"

    def request(self, n, size):
        data = job(n, size)
        return b"set %s 0 0 %d\r\n%s\r\n" % (self.queue, len(data), data)

    def complete(self, buf):
        return buf.endswith(b"\r\n")

    def items(self, buf):
        return 1 if buf == b"STORED\r\n" else -1


class MemcacheGet(MemcacheSet):
    def request(self, n, size):
        return b"get %s\r\n" % self.queue

    def complete(self, buf):
        return buf.endswith(b"END\r\n") if buf.startswith(b"VALUE") else buf.endswith(b"\r\n")

    def items(self, buf):
        if buf.startswith(b"VALUE"):
            return 1
        return 0 if buf == b"END\r\n" else -1


def _http_complete(buf):
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    length = 0
    for line in buf[:end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return len(buf) >= end + 4 + length


def _status(buf):
    return int(buf[9:12])


def _http(method, path, body=b""):
    head = b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % (method, path)
    if body or method == b"POST":
        head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


class HttpPost:
    path = b"/q/bench-http"

    def request(self, n, size):
        return _http(b"POST", self.path, job(n, size))

    complete = staticmethod(_http_complete)

    def items(self, buf):
        return 1 if _status(buf) == 201 else -1


class HttpTake(HttpPost):
    def request(self, n, size):
        return _http(b"POST", self.path + b"/take")

    def items(self, buf):
        status = _status(buf)
        return 1 if status == 200 else 0 if status == 404 else -1


class HttpBatchPost:
    path = b"/qb/bench-batch"

    def __init__(self, batch):
        self.batch = batch

    def request(self, n, size):
        jobs = b",".join(job(n * self.batch + i, size) for i in range(self.batch))
        return _http(b"POST", self.path, b'{"jobs":[' + jobs + b"]}")

    complete = staticmethod(_http_complete)

    def items(self, buf):
        return self.batch if _status(buf) == 201 else -1


class HttpBatchTake(HttpBatchPost):
    def request(self, n, size):
        return _http(b"POST", self.path + b"/take?batch_size=%d" % self.batch)

    def items(self, buf):
        status = _status(buf)
        if status == 200:
            return buf.count(b'{"job":')
        return 0 if status == 404 else -1


class HttpReserveConfirm:
    """Two requests per item: reserve, then confirm the id the reserve returned."""

    path = b"/q/bench-http"

    def __init__(self):
        self.pending = {}  # connection fd -> reservation id to confirm next

    def request_for(self, fd, n, size):
        rid = self.pending.pop(fd, None)
        if rid is None:
            return _http(b"POST", self.path + b"/take?reserve=1")
        return _http(b"POST", self.path + b"/confirm/" + rid)

    complete = staticmethod(_http_complete)

    def items_for(self, fd, buf):
        status = _status(buf)
        if status == 404:
            return 0
        if status != 200:
            return -1
        body = json.loads(buf[buf.index(b"\r\n\r\n") + 4:])
        if "id" in body and "confirmed" not in body:
            self.pending[fd] = body["id"].encode()
            return None  # half done: the confirm follows
        return 1


# -- the load generator ------------------------------------------------------------------------


def worker(spec, barrier, results):
    try:
        results.put(_drive(spec, barrier))
    except BaseException as exc:
        try:
            barrier.abort()
        except Exception:
            pass
        results.put({"error": f"{type(exc).__name__}: {exc}"})


def _drive(spec, barrier):
    proto = spec["proto"]
    socks = []
    for _ in range(spec["conns"]):
        sock = socket.create_connection((HOST, spec["port"]), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        socks.append(sock)
    paired = hasattr(proto, "request_for")
    counter = [spec["first_id"]]

    def send(sock):
        n = counter[0]
        counter[0] += 1
        data = proto.request_for(sock.fileno(), n, spec["size"]) if paired else proto.request(n, spec["size"])
        sock.sendall(data)

    barrier.wait(timeout=60)
    timed = spec["timed"]
    start = time.monotonic()
    deadline = start + (spec["duration"] if timed else spec["max_seconds"])
    ep = select.epoll()
    by_fd = {s.fileno(): s for s in socks}
    bufs = {fd: b"" for fd in by_fd}
    items = requests = errors = 0
    active = len(socks)
    for sock in socks:
        ep.register(sock.fileno(), select.EPOLLIN)
        send(sock)
    end = start
    while active:
        if time.monotonic() > deadline + 30:
            raise RuntimeError("replies still missing 30 s after the deadline")
        for fd, _ in ep.poll(1.0):
            data = by_fd[fd].recv(1 << 18)
            if not data:
                raise RuntimeError("server closed a connection")
            buf = bufs[fd] + data
            if not proto.complete(buf):
                bufs[fd] = buf
                continue
            bufs[fd] = b""
            requests += 1
            got = proto.items_for(fd, buf) if paired else proto.items(buf)
            more = True
            if got is None:
                pass  # the first half of a reserve + confirm pair
            elif got < 0:
                errors += 1
                more = False
            elif got == 0:
                more = False  # empty queue: this connection is done
            else:
                items += got
            if more and (got is None or not timed or time.monotonic() < deadline):
                send(by_fd[fd])
            else:
                ep.unregister(fd)
                active -= 1
                end = time.monotonic()
    for sock in socks:
        sock.close()
    return {"items": items, "requests": requests, "errors": errors, "start": start, "end": end}


def run_phase(name, proto, port, args, server_pid, timed, first_id=0):
    procs = max(1, min(args.procs, args.conns))
    shares = [args.conns // procs + (1 if i < args.conns % procs else 0) for i in range(procs)]
    barrier = mp.Barrier(procs + 1)
    results = mp.Queue()
    workers = []
    for i, share in enumerate(shares):
        spec = {"proto": proto, "port": port, "conns": share, "size": args.size, "timed": timed,
                "duration": args.duration, "max_seconds": 120.0, "first_id": first_id + i * 10**9}
        p = mp.Process(target=worker, args=(spec, barrier, results))
        p.start()
        workers.append(p)
    barrier.wait(timeout=60)
    cpu0 = sum(benchlib.process_cpu(server_pid))
    outs = [results.get(timeout=200) for _ in workers]
    cpu1 = sum(benchlib.process_cpu(server_pid))
    for p in workers:
        p.join(timeout=10)
    failed = [o["error"] for o in outs if "error" in o]
    if failed:
        raise RuntimeError(f"{name}: {failed[0]}")
    items = sum(o["items"] for o in outs)
    requests = sum(o["requests"] for o in outs)
    errors = sum(o["errors"] for o in outs)
    seconds = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    row = {
        "phase": name, "items": items, "requests": requests, "errors": errors, "seconds": seconds,
        "items_per_s": items / seconds if seconds > 0 else 0.0,
        "requests_per_s": requests / seconds if seconds > 0 else 0.0,
        "cpu_us_per_item": (cpu1 - cpu0) * 1e6 / items if items else 0.0,
    }
    log(f"  {name}: {items} items, {requests} requests in {seconds:.2f} s, {errors} errors")
    return row


# -- the server ---------------------------------------------------------------------------------


def start_server(tmp, fsync):
    mc_port, http_port = free_port(), free_port()
    config = os.path.join(tmp, "erqpy.toml")
    with open(config, "w") as f:
        f.write(f"[http]\nport = {http_port}\nmax_batch = 10000\n")
    cmd = [ERQPY, "serve", "--host", HOST, "--port", str(mc_port), "--data-dir", os.path.join(tmp, "data"),
           "--config", config, "--fsync", fsync, "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "server.log"), "wb"))
    deadline = time.monotonic() + 30
    for port in (mc_port, http_port):
        while True:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    raise RuntimeError(f"erqpy did not start; see {tmp}/server.log")
                time.sleep(0.05)
    return proc, mc_port, http_port


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conns", type=int, default=16, help="connections (default 16)")
    parser.add_argument("--size", type=int, default=64, help="job size in bytes (default 64)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per enqueue phase (default 3)")
    parser.add_argument("--batch", type=int, default=100, help="jobs per batch request (default 100)")
    parser.add_argument("--procs", type=int, default=os.cpu_count() or 1, help="load generator processes")
    parser.add_argument("--fsync", default="interval", help="server fsync policy (default interval)")
    parser.add_argument("--json", help="also write every number to this file")
    args = parser.parse_args(argv)
    if not os.path.exists(ERQPY):
        sys.exit("no ./.venv/bin/erqpy: run scripts/test once (or scripts/serve) to create the venv")
    tmp = tempfile.mkdtemp(prefix="erqpy-bench-http-")
    proc, mc_port, http_port = start_server(tmp, args.fsync)
    log(f"erqpy pid {proc.pid}: memcache {mc_port}, HTTP {http_port}; {args.conns} conns, {args.size} B, "
        f"fsync {args.fsync}, {args.procs} load processes")
    rows = []
    try:
        rows.append(run_phase("memcache set", MemcacheSet(), mc_port, args, proc.pid, True))
        rows.append(run_phase("memcache get", MemcacheGet(), mc_port, args, proc.pid, False))
        rows.append(run_phase("HTTP POST /q", HttpPost(), http_port, args, proc.pid, True))
        rows.append(run_phase("HTTP POST /q/take", HttpTake(), http_port, args, proc.pid, False))
        rows.append(run_phase(f"HTTP POST /qb ×{args.batch}", HttpBatchPost(args.batch), http_port, args, proc.pid, True))
        rows.append(run_phase(f"HTTP POST /qb/take ×{args.batch}", HttpBatchTake(args.batch), http_port, args, proc.pid, False))
        rows.append(run_phase("HTTP POST /q (refill)", HttpPost(), http_port, args, proc.pid, True, first_id=10**12))
        rows.append(run_phase("HTTP reserve+confirm", HttpReserveConfirm(), http_port, args, proc.pid, False))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nerqpy HTTP API vs memcache port, {args.conns} connections, {args.size} B jobs, fsync {args.fsync}\n")
    print("| phase | items/s | requests/s | server CPU µs/item | errors |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['phase']} | {row['items_per_s']:,.0f} | {row['requests_per_s']:,.0f} | "
              f"{row['cpu_us_per_item']:.0f} | {row['errors']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
