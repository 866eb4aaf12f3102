"""Load generator for scripts/bench: raw sockets, epoll, one request in flight per connection.

Used only by ``scripts/bench.py``; erqpy never imports anything under scripts/.

A phase runs in several worker processes (one per core by default), each driving its share
of the connections from one epoll loop.  Every connection has exactly one request in
flight: it sends the next request only when the reply to the previous one is complete.
Workers connect first, then wait on a barrier, so connecting is never timed.

Item payloads start with the item's id as 16 hex digits, padded with ``.`` to the item
size; nothing in a payload is ``\\r\\n`` or ``END``, so a reply is complete when its tail
says so.  Dequeued ids are sent back to the parent, which checks that every acknowledged
item came out exactly once.
"""

import os
import select
import socket
import struct
import time
from array import array

# -- the protocols -------------------------------------------------------------------------
# Each protocol builds request bytes and knows when a reply is complete.  ``kind`` is one
# of SET (enqueue / store) and GET (dequeue / fetch).

SET = 0
GET = 1

QUEUE_KEY = b"bench"
#: ``scripts/bench --levels``: erqpy's sets spread over three priority levels (2, the
#: default 5, 8), one item in three each, so a queue with 3 levels in use is measured.
LEVEL_KEYS = (QUEUE_KEY + b"/pri=2", QUEUE_KEY, QUEUE_KEY + b"/pri=8")


def payload(item_id: int, size: int) -> bytes:
    head = b"%016x" % item_id
    return head + b"." * (size - len(head))


def reply_id(buf: bytes) -> int:
    """The item id in a value reply: the 16 hex digits after the first line."""
    start = buf.index(b"\n") + 1
    return int(buf[start : start + 16], 16)


class Memcache:
    """The memcache text protocol.  ``queue`` True: Kestrel dialect (erqpy), every set
    and get names one queue; False: plain memcached, each item is its own key."""

    def __init__(self, queue: bool, levels: bool = False):
        self.queue = queue
        self.get_queue = b"get " + QUEUE_KEY + b"\r\n"
        self.set_keys = LEVEL_KEYS if levels else None

    def set_request(self, item_id: int, size: int) -> bytes:
        if self.set_keys is not None:
            key = self.set_keys[item_id % len(self.set_keys)]
        else:
            key = QUEUE_KEY if self.queue else b"k%016x" % item_id
        return b"set %s 0 0 %d\r\n%s\r\n" % (key, size, payload(item_id, size))

    def get_request(self, item_id: int) -> bytes:
        if self.queue:
            return self.get_queue
        return b"get k%016x\r\n" % item_id

    @staticmethod
    def complete(kind: int, buf: bytes) -> bool:
        if kind == GET and buf[:1] == b"V":
            return buf.endswith(b"END\r\n")
        return buf.endswith(b"\r\n")

    @staticmethod
    def set_ok(buf: bytes) -> bool:
        return buf == b"STORED\r\n"

    @staticmethod
    def get_hit(buf: bytes):
        """True for a value, False for a miss, None for an error reply."""
        if buf[:6] == b"VALUE ":
            return True
        return False if buf == b"END\r\n" else None


class Redis:
    """RESP2: LPUSH to and RPOP from one list."""

    queue = True
    _rpop = b"*2\r\n$4\r\nRPOP\r\n$%d\r\n%s\r\n" % (len(QUEUE_KEY), QUEUE_KEY)

    def set_request(self, item_id: int, size: int) -> bytes:
        return b"*3\r\n$5\r\nLPUSH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
            len(QUEUE_KEY), QUEUE_KEY, size, payload(item_id, size),
        )

    def get_request(self, item_id: int) -> bytes:
        return self._rpop

    @staticmethod
    def complete(kind: int, buf: bytes) -> bool:
        if not buf.endswith(b"\r\n"):
            return False
        if buf[:1] == b"$" and buf[1:2] != b"-":
            return buf.count(b"\r\n") >= 2  # "$<len>\r\n<payload>\r\n"
        return True

    @staticmethod
    def set_ok(buf: bytes) -> bool:
        return buf[:1] == b":"

    @staticmethod
    def get_hit(buf: bytes):
        if buf[:1] == b"$":
            return buf[1:2] != b"-"
        return None


class MemcacheBinary:
    """memcached's binary protocol, on erqpy: SET and GET of one queue (``--protocols``)."""

    queue = True
    _header = struct.Struct(">BBHBBHIIQ")
    _get = _header.pack(0x80, 0x00, len(QUEUE_KEY), 0, 0, 0, len(QUEUE_KEY), 0, 0) + QUEUE_KEY

    def set_request(self, item_id: int, size: int) -> bytes:
        body = 8 + len(QUEUE_KEY) + size
        return (self._header.pack(0x80, 0x01, len(QUEUE_KEY), 8, 0, 0, body, 0, 0) + b"\0" * 8
                + QUEUE_KEY + payload(item_id, size))

    def get_request(self, item_id: int) -> bytes:
        return self._get

    @staticmethod
    def complete(kind: int, buf: bytes) -> bool:
        return len(buf) >= 24 and len(buf) >= 24 + int.from_bytes(buf[8:12], "big")

    @staticmethod
    def set_ok(buf: bytes) -> bool:
        return buf[6:8] == b"\0\0"

    @staticmethod
    def get_hit(buf: bytes):
        status = buf[6:8]
        if status == b"\0\0":
            return True
        return False if status == b"\0\1" else None

    @staticmethod
    def reply_id(buf: bytes) -> int:
        start = 24 + buf[4]  # after the header and the extras (the flags); no key
        return int(buf[start : start + 16], 16)
class Meta:
    """memcached's meta protocol on erqpy (``ms`` enqueues, ``mg ... v`` dequeues): the same
    queue as ``Memcache(queue=True)``, for the CPU per operation of the meta path."""

    queue = True
    # What a text set and get carry: flags and exptime in, the flags back out.
    _mg = b"mg " + QUEUE_KEY + b" v f\r\n"

    def set_request(self, item_id: int, size: int) -> bytes:
        return b"ms %s %d F0 T0\r\n%s\r\n" % (QUEUE_KEY, size, payload(item_id, size))

    def get_request(self, item_id: int) -> bytes:
        return self._mg

    @staticmethod
    def complete(kind: int, buf: bytes) -> bool:
        if kind == GET and buf[:3] == b"VA ":
            return buf.count(b"\r\n") >= 2  # "VA <len>\r\n<payload>\r\n"
        return buf.endswith(b"\r\n")

    @staticmethod
    def set_ok(buf: bytes) -> bool:
        return buf == b"HD\r\n"

    @staticmethod
    def get_hit(buf: bytes):
        if buf[:3] == b"VA ":
            return True
        return False if buf == b"EN\r\n" else None


PROTOCOLS = {
    "erqpy": lambda: Memcache(queue=True),
    "erqpy-levels": lambda: Memcache(queue=True, levels=True),
    "erqpy-binary": MemcacheBinary,
    "erqpy-meta": Meta,
    "memcached": lambda: Memcache(queue=False),
    "redis": Redis,
}

# -- phases --------------------------------------------------------------------------------
# ENQUEUE: every connection sets new items until the deadline (or ``max_ops``).
# DEQUEUE: queue servers: every connection gets until its first miss (the queue is empty);
#          memcached: every connection gets its share of ``keys`` (the ids set before).
# MIXED:   every connection alternates set and get, after setting ``prefill`` items of its
#          own before the clock starts, so every get finds an item: half the requests
#          produce, half consume.  memcached gets the keys the connection set, oldest first.
# DRAIN:   as DEQUEUE, untimed: empties the queue between phases and at the end.

ENQUEUE = "enqueue"
DEQUEUE = "dequeue"
MIXED = "mixed"
DRAIN = "drain"


class Conn:
    __slots__ = ("sock", "fd", "kind", "buf", "t0", "next_id", "todo", "done")

    def __init__(self, sock, first_id):
        self.sock = sock
        self.fd = sock.fileno()
        self.kind = SET
        self.buf = b""
        self.t0 = 0
        self.next_id = first_id
        self.todo = None  # ids still to get (memcached), oldest first
        self.done = False


class PhaseError(Exception):
    pass


def _blocking_call(proto, sock, request: bytes, kind: int) -> bytes:
    """Send one request and read its whole reply (set-up before the clock starts)."""
    sock.sendall(request)
    buf = b""
    while True:
        data = sock.recv(1 << 16)
        if not data:
            raise PhaseError("server closed the connection")
        buf += data
        if proto.complete(kind, buf):
            return buf


def run_worker(spec: dict, barrier, results) -> None:
    """Run one worker's share of a phase; put a result dict (or an error) on ``results``."""
    try:
        results.put(_run(spec, barrier))
    except BaseException as exc:  # the parent must hear about it, or it waits in vain
        try:
            barrier.abort()
        except Exception:
            pass
        results.put({"error": f"worker {spec['worker']}: {type(exc).__name__}: {exc}"})


def _run(spec: dict, barrier) -> dict:
    if spec.get("cpus"):  # scripts/bench --pin: off the server's core
        os.sched_setaffinity(0, spec["cpus"])
    proto = PROTOCOLS[spec["server"]]()
    mode = spec["mode"]
    size = spec["size"]
    conns = []
    enq_ids = array("Q")
    deq_ids = array("Q")
    for index, base in enumerate(spec["id_bases"]):
        sock = socket.create_connection((spec["host"], spec["port"]), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Conn(sock, base)
        if spec.get("keys") is not None:
            conn.todo = list(spec["keys"][index])
        conns.append(conn)
    if mode == MIXED:
        for conn in conns:
            if not proto.queue:
                conn.todo = []
            for _ in range(spec["prefill"]):
                item_id = conn.next_id
                conn.next_id += 1
                reply = _blocking_call(proto, conn.sock, proto.set_request(item_id, size), SET)
                if not proto.set_ok(reply):
                    raise PhaseError(f"prefill set refused: {reply[:80]!r}")
                enq_ids.append(item_id)
                if conn.todo is not None:
                    conn.todo.append(item_id)
    for conn in conns:
        conn.sock.setblocking(False)

    duration = spec["duration"]
    max_ops = spec["max_ops"]
    timed = mode in (ENQUEUE, MIXED)
    barrier.wait(timeout=60)
    cpu0 = os.times()
    t_start = time.monotonic()
    # Sending stops at ``deadline``; the replies still in flight are awaited until
    # ``hard_deadline``, which also bounds a dequeue that never ends.
    deadline = t_start + duration if timed else t_start + spec["max_seconds"]
    hard_deadline = deadline + 30.0
    ep = select.epoll()
    by_fd = {}
    lat = array("q")
    ops = hits = misses = errors = 0
    first_error = ""
    perf = time.perf_counter_ns
    complete = proto.complete
    item_id_of = getattr(proto, "reply_id", reply_id)
    set_request = proto.set_request
    get_request = proto.get_request

    def send_next(conn) -> bool:
        """Send this connection's next request; False when it has nothing more to do."""
        if mode == ENQUEUE or (mode == MIXED and conn.kind == GET):
            conn.kind = SET
            item_id = conn.next_id
            conn.next_id = item_id + 1
            request = set_request(item_id, size)
        else:
            conn.kind = GET
            if conn.todo is not None and not proto.queue:
                if not conn.todo:
                    return False
                request = get_request(conn.todo[0])
            else:
                request = get_request(0)
        conn.t0 = perf()
        conn.sock.send(request)  # small, into an empty socket buffer: sent whole
        return True

    active = 0
    for conn in conns:
        by_fd[conn.fd] = conn
        ep.register(conn.fd, select.EPOLLIN)
        if send_next(conn):
            active += 1
        else:
            conn.done = True
    t_last = t_start
    while active:
        now = time.monotonic()
        if now > hard_deadline:
            raise PhaseError(f"{active} connections still waiting for a reply after the deadline")
        stopping = now >= deadline or ops >= max_ops
        for fd, _event in ep.poll(1.0):
            conn = by_fd[fd]
            data = conn.sock.recv(1 << 18)
            if not data:
                raise PhaseError("server closed a connection")
            buf = conn.buf + data if conn.buf else data
            kind = conn.kind
            if not complete(kind, buf):
                conn.buf = buf
                continue
            conn.buf = b""
            lat.append(perf() - conn.t0)
            ops += 1
            more = True
            if kind == SET:
                if proto.set_ok(buf):
                    enq_ids.append(conn.next_id - 1)
                    if conn.todo is not None:
                        conn.todo.append(conn.next_id - 1)
                else:
                    errors += 1
                    first_error = first_error or repr(buf[:100])
            else:
                hit = proto.get_hit(buf)
                if hit:
                    hits += 1
                    item_id = item_id_of(buf)
                    deq_ids.append(item_id)
                    if not proto.queue:
                        expected = conn.todo.pop(0)
                        if expected != item_id:
                            errors += 1
                            first_error = first_error or f"key {expected:x} returned item {item_id:x}"
                elif hit is None:
                    errors += 1
                    first_error = first_error or repr(buf[:100])
                    more = False
                else:
                    misses += 1
                    # An empty queue ends a dequeue; a miss anywhere else is reported.
                    if mode in (DEQUEUE, DRAIN) or not proto.queue:
                        more = False
                        if not proto.queue and conn.todo:
                            conn.todo.pop(0)
            if mode == MIXED and stopping and kind == SET:
                # Finish on a get so that producers and consumers stay balanced.
                stopping_now = False
            else:
                stopping_now = stopping
            if not more or stopping_now or not send_next(conn):
                conn.done = True
                active -= 1
                ep.unregister(fd)
                t_last = time.monotonic()
    cpu1 = os.times()
    ep.close()
    for conn in conns:
        conn.sock.close()
    return {
        "worker": spec["worker"],
        "ops": ops,
        "hits": hits,
        "misses": misses,
        "errors": errors,
        "first_error": first_error,
        "t_start": t_start,
        "t_end": t_last,
        "client_cpu": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
        "lat": lat.tobytes(),
        "enq": enq_ids.tobytes(),
        "deq": deq_ids.tobytes(),
    }


# -- server CPU ----------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int):
    """(user, system) CPU seconds of a process and all its threads, from /proc."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # The command name (field 2) may contain spaces; fields after it are fixed.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def processes_cpu(pids):
    """(user, system) CPU seconds summed over several processes."""
    times = [process_cpu(pid) for pid in pids]
    return sum(t[0] for t in times), sum(t[1] for t in times)


def machine_busy():
    """(busy, irq) CPU seconds of the whole machine since boot, from /proc/stat: busy is
    everything but idle and iowait; irq is the interrupt and softirq part of it, which
    the kernel charges to no process (loopback packet delivery lands there in part)."""
    with open("/proc/stat", "rb") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    busy = sum(fields[:8]) - idle  # user..steal; guest time is inside user
    return busy / _TICK, (fields[5] + fields[6]) / _TICK


def machine_busy_cores(seconds: float) -> float:
    """How many cores' worth of CPU the machine is using now, measured over ``seconds``."""
    before = machine_busy()[0]
    time.sleep(seconds)
    return (machine_busy()[0] - before) / seconds


def percentile(sorted_values, fraction: float):
    if not sorted_values:
        return 0
    index = min(len(sorted_values) - 1, int(round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]
