"""A seeded grammar fuzzer for the data port, shared by tests/fuzz and ``scripts/fuzz``.

It speaks raw bytes to a real server and never imports erqpy, so a parser bug cannot hide
behind the code under test.  Three families of cases, each a pure function of a
``random.Random`` so that a failing seed replays exactly:

* ``well_framed``: requests with correct framing and hostile values (huge, negative and
  non-numeric numbers, odd options, long and odd keys, noreply).  Oracle: every request is
  answered in step (a ``version`` sent after it comes back) and the connection stays open.
* ``split``: a sequence of valid requests sent in two writes split at an offset.  Oracle:
  the replies are byte-for-byte those of the same sequence sent in one write.
* ``refused_storage``: storage commands whose line is refused (too long, a bad or huge
  length, bad fields) and whose data block is itself a request, a ``set`` of the canary
  queue.  Oracle: the block never runs as a command (the canary queue stays empty), and
  the connection is either in step or closed.
* ``mutated``: valid requests with bytes flipped, inserted, dropped or duplicated, sent in
  random pieces, then the write side is shut.  Oracle: the server stays up and never
  answers ``SERVER_ERROR internal error``; it may close the connection.

Every case uses queues of its own (``fz<case>_...``), never the protected queue, and
never ``flush_all``; ``Fuzzer.check_protected`` then proves that the queue set up before
the fuzz is intact.
"""

import random
import socket
import time

INTERNAL_ERROR = b"SERVER_ERROR internal error"
PROTECTED = "fuzz_protected_queue"
#: A queue that only a smuggled command (a data block run as a request) would write to.
CANARY = "fuzz_canary"
CANARY_BLOCK = b"set %s 0 0 1\r\nX\r\n" % CANARY.encode()
#: Replies after which a server may drop the connection: the framing was lost.
FRAMING_LOST = (b"CLIENT_ERROR line too long", b"CLIENT_ERROR bad data chunk", b"CLIENT_ERROR bad command line format")

HUGE_NUMBERS = (
    b"0", b"-1", b"-0", b"1", b"4294967295", b"4294967296", b"18446744073709551616",
    b"9223372036854775807", b"-9223372036854775809", b"99999999999999999999999", b"1e9",
    b"0x10", b"+5", b"\xff", b"1000000", b"999999", b"2147483648",
)
OPTIONS = (b"open", b"close", b"abort", b"peek", b"t=0", b"t=1", b"t=-5", b"t=abc",
           b"t=999999999999999999999", b"x", b"", b"t=", b"OPEN", b"t=20")


class FuzzFailure(AssertionError):
    """An oracle failed; the message names the case and seed to replay it."""


class Conn:
    """A raw loopback connection with bounded reads."""

    def __init__(self, address, timeout=5.0):
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_until(self, marker: bytes, timeout: float) -> bool:
        """Read until ``marker`` is in the buffer; False on EOF or timeout."""
        deadline = time.monotonic() + timeout
        while marker not in self.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.eof:
                return False
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(1 << 16)
            except (socket.timeout, TimeoutError):
                return False
            except ConnectionError:
                self.eof = True
                return False
            if not chunk:
                self.eof = True
                return False
            self.buf += chunk
        return True

    def drain(self, timeout: float) -> None:
        """Read until EOF or ``timeout``."""
        self.read_until(b"\x00never\x00", timeout)

    def close(self) -> None:
        self.sock.close()


def _key(rng, case: int) -> bytes:
    base = f"fz{case}_{rng.randrange(3)}".encode()
    roll = rng.random()
    if roll < 0.6:
        return base
    if roll < 0.75:
        return base + b"/" + b"/".join(rng.choice(OPTIONS) for _ in range(rng.randrange(1, 4)))
    if roll < 0.85:
        return base + b"+" + rng.choice((b"c1", b"c2", b"", b"+"))
    return rng.choice((b"fz" + b"k" * rng.randrange(200, 300), b"fz.x", b"fz~", b"fz/../x",
                       b"fz\x01x", b"fz" + b"\xc3\xa9", b"fz%s" % rng.choice(HUGE_NUMBERS)))


def _number(rng) -> bytes:
    return rng.choice(HUGE_NUMBERS) if rng.random() < 0.4 else str(rng.randrange(0, 100)).encode()


def well_framed_request(rng, case: int) -> bytes:
    """One request whose framing is right and whose values are hostile."""
    kind = rng.randrange(10)
    if kind < 4:  # set: the length is always right, everything else may be wrong
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        fields = [b"set", _key(rng, case), _number(rng), _number(rng), str(len(data)).encode()]
        if rng.random() < 0.2:
            fields.append(rng.choice((b"noreply", b"noreply", b"junk")))
        return b" ".join(fields) + b"\r\n" + data + b"\r\n"
    if kind < 7:
        command = rng.choice((b"get", b"gets", b"GET"))
        keys = b" ".join(_key(rng, case) for _ in range(rng.randrange(1, 4)))
        return command + b" " + keys + b"\r\n"
    line = rng.choice((
        b"delete %s", b"flush %s", b"flush_expired %s", b"confirm %s %s", b"monitor %s 0 %s",
        b"stats", b"stats %s", b"dump_stats %s", b"version", b"status", b"status readonly",
        b"reload", b"shutdown", b"bogus %s", b"", b"add %s 0 0 0\r\n", b"incr %s %s",
    ))
    while b"%s" in line:
        line = line.replace(b"%s", rng.choice((_key(rng, case), _number(rng))), 1)
    return line + b"\r\n"


def refused_storage_request(rng, case: int) -> bytes:
    """A storage command the server must refuse, whose block is a smuggled request."""
    block = CANARY_BLOCK * rng.randrange(1, 3)
    length = str(len(block)).encode()
    key = f"fzr{case}".encode()
    shape = rng.randrange(6)
    if shape == 0:  # line over 64 KiB, length readable: the block must be skipped
        line = b"set " + b"k" * rng.choice((65_536, 70_000)) + b" 0 0 " + length
    elif shape == 1:  # a length too long to be one: the framing is lost
        line = b"set %s 0 0 %s" % (key, rng.choice((b"1234567890123456", b"99999999999999999999")))
    elif shape == 2:  # not a number
        line = b"set %s 0 0 %s" % (key, rng.choice((b"abc", b"-5", b"12x", b"")))
    elif shape == 3:  # bad flags or exptime, good length
        line = b"set %s %s %s %s" % (key, rng.choice((b"x", b"-1", b"99999999999")), _number(rng), length)
    elif shape == 4:  # too many or too few fields
        line = rng.choice((b"set %s 0 0 %s 1 2 3" % (key, length), b"set %s %s" % (key, length)))
    else:  # another storage verb erqpy does not serve
        line = b"%s %s 0 0 %s" % (rng.choice((b"add", b"cas", b"append", b"REPLACE")), key, length)
    return line + b"\r\n" + block + b"\r\n"


def valid_sequence(rng, case: int) -> bytes:
    """Requests that a correct server answers the same way however they are split."""
    queue = f"fzs{case}".encode()
    parts = []
    for _ in range(rng.randrange(2, 6)):
        kind = rng.randrange(4)
        if kind == 0:
            data = bytes(rng.choice(b"abc\r\n ") for _ in range(rng.randrange(0, 12)))
            parts.append(b"set %s 0 0 %d\r\n%s\r\n" % (queue, len(data), data))
        elif kind == 1:
            parts.append(b"get %s\r\n" % queue)
        elif kind == 2:
            parts.append(b"get %s/peek\r\n" % queue)
        else:
            parts.append(b"version\r\n")
    return b"".join(parts)


def mutate(rng, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        if not data:
            data += bytes([rng.randrange(256)])
            continue
        at = rng.randrange(len(data))
        op = rng.randrange(6)
        if op == 0:
            data[at] = rng.randrange(256)
        elif op == 1:
            data[at:at] = rng.choice((b"\r\n", b" ", b"\n", b"\x00", b"99999999", b"-1", b"\r"))
        elif op == 2:
            del data[at : at + rng.randrange(1, 8)]
        elif op == 3:
            data[at:at] = data[at : at + rng.randrange(1, 16)]
        elif op == 4:
            data[at:at] = b"x" * rng.choice((1, 100, 70_000))
        else:
            data = data[:at]
    return bytes(data)


def _safe(data: bytes) -> bool:
    """Never aim at the protected queue or at every queue."""
    lowered = data.lower()
    return PROTECTED.encode() not in lowered and b"flush_all" not in lowered


class Fuzzer:
    """Runs cases against one server at ``address``; raises ``FuzzFailure`` on a broken oracle."""

    def __init__(self, address, seed: int, alive=lambda: True):
        self.address = address
        self.seed = seed
        self.alive = alive
        self.counts = {"well_framed": 0, "refused_storage": 0, "split": 0, "mutated": 0}

    def _fail(self, case, family, what, data):
        raise FuzzFailure(f"seed {self.seed} case {case} ({family}): {what}; input {data[:400]!r}")

    def _check_reply(self, case, family, conn, data):
        if INTERNAL_ERROR in conn.buf:
            self._fail(case, family, "SERVER_ERROR internal error", data)
        if not self.alive():
            self._fail(case, family, "the server died", data)

    def well_framed(self, case: int, rng) -> None:
        data = well_framed_request(rng, case)
        if not _safe(data):
            return
        conn = Conn(self.address)
        try:
            conn.send(data + b"version\r\n")
            answered = conn.read_until(b"VERSION ", 5.0)
            self._check_reply(case, "well_framed", conn, data)
            if not answered:
                what = "connection closed" if conn.eof else "no reply in step within 5 s"
                self._fail(case, "well_framed", what, data)
        finally:
            conn.close()
        self.counts["well_framed"] += 1

    def refused_storage(self, case: int, rng) -> None:
        data = refused_storage_request(rng, case)
        conn = Conn(self.address)
        try:
            try:
                conn.send(data + b"version\r\n")
            except ConnectionError:
                pass  # closed at once: the framing was lost, which is allowed
            conn.read_until(b"VERSION ", 5.0)
            self._check_reply(case, "refused_storage", conn, data)
            if not conn.eof and b"VERSION " not in conn.buf:
                self._fail(case, "refused_storage", "neither in step nor closed", data)
        finally:
            conn.close()
        probe = Conn(self.address)
        try:
            probe.send(b"get %s/peek\r\n" % CANARY.encode())
            probe.read_until(b"END\r\n", 5.0)
            if probe.buf != b"END\r\n":
                self._fail(case, "refused_storage", f"the data block ran as a command: {probe.buf!r}", data)
        finally:
            probe.close()
        self.counts["refused_storage"] += 1

    def _replies(self, pieces) -> bytes:
        conn = Conn(self.address)
        try:
            for piece in pieces:
                conn.send(piece)
                time.sleep(0.001)  # separate segments; the server must not care
            conn.send(b"version\r\nquit\r\n")
            conn.drain(5.0)
            return conn.buf
        finally:
            conn.close()

    def split(self, case: int, rng, every_offset: bool = False) -> None:
        base = valid_sequence(rng, case)
        queue = b"fzs%d" % case
        offsets = range(1, len(base)) if every_offset else [rng.randrange(1, len(base))]
        for offset in offsets:
            whole = self._replies([base])
            self._replies([b"flush %s\r\n" % queue])
            pieces = self._replies([base[:offset], base[offset:]])
            self._replies([b"flush %s\r\n" % queue])
            if whole != pieces or INTERNAL_ERROR in whole:
                self._fail(case, "split", f"split at {offset}: {pieces!r} != {whole!r}", base)
            self.counts["split"] += 1

    def mutated(self, case: int, rng) -> None:
        source = b"".join(well_framed_request(rng, case) for _ in range(rng.randrange(1, 4)))
        data = mutate(rng, source)
        if not _safe(data):
            return
        conn = Conn(self.address)
        try:
            pos = 0
            while pos < len(data):
                step = rng.choice((1, 2, 7, 64, len(data)))
                try:
                    conn.send(data[pos : pos + step])
                except ConnectionError:
                    break  # the server may drop a connection whose framing is lost
                pos += step
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            conn.drain(3.0)
            self._check_reply(case, "mutated", conn, data)
        finally:
            conn.close()
        self.counts["mutated"] += 1

    def run(self, cases: int, deadline: float, every_offset_cases: int = 0) -> dict:
        """Up to ``cases`` rounds of the three families, stopping at ``deadline`` (monotonic)."""
        for case in range(cases):
            if time.monotonic() > deadline:
                break
            rng = random.Random(f"{self.seed}:{case}")
            self.well_framed(case, rng)
            self.refused_storage(case, rng)
            self.split(case, rng, every_offset=case < every_offset_cases)
            self.mutated(case, rng)
        return dict(self.counts)


def put_protected(address, count: int) -> list[bytes]:
    """Enqueue ``count`` known items on the protected queue; return them in order."""
    items = [b"protected-%06d" % n for n in range(count)]
    conn = Conn(address)
    try:
        for item in items:
            conn.send(b"set %s 0 0 %d\r\n%s\r\n" % (PROTECTED.encode(), len(item), item))
            if not conn.read_until(b"STORED\r\n", 5.0):
                raise FuzzFailure(f"could not store the protected items: {conn.buf[-200:]!r}")
            conn.buf = b""
    finally:
        conn.close()
    return items


def check_protected(address, items: list[bytes]) -> None:
    """The protected queue holds exactly ``items`` in order (peeked, then left in place)."""
    conn = Conn(address)
    try:
        conn.send(b"stats\r\n")
        conn.read_until(b"END\r\n", 10.0)
        line = next((l for l in conn.buf.split(b"\r\n") if l.startswith(b"STAT queue_%s_items " % PROTECTED.encode())), None)
        if line is None or int(line.split()[-1]) != len(items):
            raise FuzzFailure(f"protected queue count: {line!r}, expected {len(items)}")
        conn.buf = b""
        # Read them all through reliable reads and abort: the order is checked, nothing is lost.
        got = []
        for _ in items:
            conn.send(b"get %s/open\r\n" % PROTECTED.encode())
            if not conn.read_until(b"END\r\n", 5.0):
                raise FuzzFailure("protected read timed out")
            reply, conn.buf = conn.buf, b""
            got.append(reply.split(b"\r\n")[1] if reply.startswith(b"VALUE") else None)
        if got != items:
            raise FuzzFailure(f"protected queue changed: first difference at {next(i for i, (a, b) in enumerate(zip(got, items)) if a != b)}")
    finally:
        conn.close()  # the open reads go back to the head, in order
