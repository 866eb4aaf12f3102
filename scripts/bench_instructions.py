"""Instructions per request of the erqpy server, counted by valgrind's callgrind.

Run it as ``scripts/bench_instructions`` (see --help).  On a shared VM the CPU time of a
request swings by a factor of two from one minute to the next (other tenants, CPU
steal), so an A/B of a few per cent cannot be read off ``scripts/bench``.  The number of
user-space instructions the server executes per request does not depend on what else the
machine does: it repeats to well under 1 % between runs of the same code, so it shows
what a change to the Python hot path saves.  It does not see the kernel (system calls,
copies, wake-ups) nor cache misses: ``scripts/bench`` remains the measure of speed.

What it does, for the working tree and (``--baseline REV``) erqpy as of a git revision,
alternately, ``--runs`` times each:

1. starts ``erqpy serve`` under ``valgrind --tool=callgrind --instr-atstart=no`` on
   127.0.0.1, port 0, with a temporary data directory (fsync ``interval``);
2. warms up with ``--conns`` connections, each setting then getting 50 items;
3. counts, with instrumentation switched on only around each phase
   (``callgrind_control -i on/off``), ``--rounds`` rounds in which every connection
   sends one ``set q 0 0 64`` (then, in the next phase, one ``get q``) and all replies
   are read before the next round;
4. prints instructions per request of each phase, and the change.

Under valgrind the server runs some 50 times slower, so time-bound rules (a loop turn
that ran past its 2 ms, the fsync interval) fire more often than at full speed: compare
counts with each other, not with the work of one request at full speed.
"""

import argparse
import glob
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
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
HOST = "127.0.0.1"
START_TIMEOUT = 300.0  # the interpreter's start under valgrind takes a while
REPLY_TIMEOUT = 60.0
ITEM = b"x" * 64
SET = b"set q 0 0 %d\r\n%s\r\n" % (len(ITEM), ITEM)
GET = b"get q\r\n"
PHASES = (("set", SET, b"STORED\r\n"), ("get", GET, b"END\r\n"))
SERVE = ("import sys; from erqpy.cli import main; "
         "sys.argv = ['erqpy', 'serve', '--port', '0', '--host', '127.0.0.1', '--fsync', "
         "'interval', '--data-dir', sys.argv[1], '--log-level', 'warning']; main()")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def source_of(revision: str, tmp: str) -> str:
    """A directory holding erqpy/ as of ``revision`` (git archive)."""
    src = os.path.join(tmp, "src")
    os.makedirs(src)
    archive = subprocess.run(["git", "-C", ROOT, "archive", revision, "erqpy"],
                             capture_output=True, check=True, timeout=60).stdout
    subprocess.run(["tar", "-x", "-C", src], input=archive, check=True, timeout=60)
    return src


def rounds_of(socks, request: bytes, end: bytes, count: int) -> None:
    for _ in range(count):
        for sock in socks:
            sock.sendall(request)
        for sock in socks:
            reply = b""
            while not reply.endswith(end):
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError("the server closed a connection")
                reply += chunk


def control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, check=True, timeout=120)


def count_once(source: str, conns: int, rounds: int) -> dict:
    """Instructions per request of each phase, for the erqpy in ``source`` (None: the
    working tree)."""
    tmp = tempfile.mkdtemp(prefix="erqpy-instructions-")
    out = os.path.join(tmp, "callgrind.out")
    env = dict(os.environ)
    if source:
        env["PYTHONPATH"] = source
    logfile = open(os.path.join(tmp, "server.log"), "wb")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         PYTHON, "-c", SERVE, os.path.join(tmp, "data")],
        # Not in the project's root: ``python -c`` puts the current directory first on
        # sys.path, and the working tree's erqpy/ would shadow the baseline's.
        stdout=subprocess.PIPE, stderr=logfile, env=env, cwd=tmp)
    socks = []
    try:
        ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
        line = proc.stdout.readline().decode() if ready else ""
        if " listening on " not in line:
            raise RuntimeError(f"erqpy did not start: {line!r}; see {logfile.name}")
        port = int(line.split(" listening on ")[1].split()[0].rsplit(":", 1)[1])
        for _ in range(conns):
            sock = socket.create_connection((HOST, port), timeout=REPLY_TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks.append(sock)
        for _name, request, end in PHASES:
            rounds_of(socks, request, end, 50)
        for name, request, end in PHASES:
            control(proc.pid, "-i", "on")
            rounds_of(socks, request, end, rounds)
            control(proc.pid, "-i", "off")
            control(proc.pid, "-d", name)
            control(proc.pid, "-z")
    finally:
        for sock in socks:
            sock.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
    counts = {}
    for path in glob.glob(out + ".*"):
        with open(path, errors="replace") as f:
            text = f.read()
        trigger = re.search(r"^desc: Trigger: dump (\w+)$", text, re.M)
        total = re.search(r"^totals: (\d+)$", text, re.M)
        if trigger and total:
            counts[trigger.group(1)] = int(total.group(1)) / (rounds * conns)
    shutil.rmtree(tmp, ignore_errors=True)
    if set(counts) != {name for name, _r, _e in PHASES}:
        raise RuntimeError(f"callgrind wrote no count for some phase: {sorted(counts)}")
    return counts


def ensure_valgrind() -> None:
    if shutil.which("valgrind") and shutil.which("callgrind_control"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("installing valgrind with apt-get")
        subprocess.run(["apt-get", "install", "-y", "-q", "valgrind"], stdout=subprocess.DEVNULL,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), check=False, timeout=600)
    if not shutil.which("valgrind"):
        sys.exit("bench_instructions: valgrind is missing (apt-get install valgrind)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench_instructions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", metavar="REV", help="also count erqpy as of git revision REV")
    parser.add_argument("--runs", type=int, default=2, help="runs of each version (default 2)")
    parser.add_argument("--conns", type=int, default=16, help="connections (default 16)")
    parser.add_argument("--rounds", type=int, default=300,
                        help="counted rounds per phase (default 300: 4,800 requests at 16 conns)")
    args = parser.parse_args(argv)
    ensure_valgrind()
    versions = [("working tree", None)]
    tmp = tempfile.mkdtemp(prefix="erqpy-instructions-src-")
    try:
        if args.baseline:
            versions.insert(0, (args.baseline, source_of(args.baseline, tmp)))
        results = {label: [] for label, _src in versions}
        started = time.monotonic()
        for run in range(args.runs):
            for label, source in versions:
                counts = count_once(source, args.conns, args.rounds)
                log(f"run {run + 1}, {label}: " + ", ".join(f"{k} {v:,.0f}" for k, v in counts.items()))
                results[label].append(counts)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"Instructions per request (callgrind, user space; {args.conns} connections, "
          f"{args.rounds} rounds, 64 B items; median of {args.runs}; {time.monotonic() - started:.0f} s)")
    print()
    print("| version | " + " | ".join(name for name, _r, _e in PHASES) + " |")
    print("|---|" + "--:|" * len(PHASES))
    medians = {}
    for label, runs in results.items():
        medians[label] = {name: statistics.median(r[name] for r in runs) for name, _r, _e in PHASES}
        print(f"| {label} | " + " | ".join(f"{medians[label][n]:,.0f}" for n, _r, _e in PHASES) + " |")
    if args.baseline:
        before, after = medians[args.baseline], medians["working tree"]
        print("| change | " + " | ".join(f"{after[n] / before[n] - 1:+.1%}" for n, _r, _e in PHASES) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
