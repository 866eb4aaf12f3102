"""Crash tests for queues far deeper than memory.

Every server here runs with a tiny configuration (``max_memory_size = 4096``,
``max_journal_size = 8192``), so that with items of about 1 KiB a queue reads behind after
four items, seals a segment file every eight or so, and snapshots its journal whenever the
head moves past a segment: read-behind, segment rotation and compaction happen all the
time.  The server is killed (SIGKILL, or the exit of a named fail point, status 86) and
restarted on the same directory; then the queue is drained and compared with what the
clients were told: nothing acknowledged is lost or duplicated, order holds, and reads that
were open at the crash come back first, in the order they were opened.
"""

import errno
import os
import random
import threading
import time
from collections import defaultdict, deque

import pytest

from recovery_support import (
    TIMEOUT,
    drain,
    log_mark,
    log_since,
    queue_stats,
    read_values,
    set_items,
    wait_for,
    write_config,
)

TINY = "[queues.default]\nmax_memory_size = 4096\nmax_journal_size = 8192\n"
MEMORY_BUDGET = 4096
FAILPOINT_EXIT = 86
COMPACTION_FAILPOINTS = [
    "snapshot-before-segment-delete",
    "segment-after-seal",
    "rewrite-before-rename",
    "rewrite-after-rename",
]


def tiny_server(make_server, tmp_path, env=None):
    config = write_config(tmp_path, TINY)
    return make_server("--config", str(config), env=env)


def payload(tag: bytes, seq: int, size: int = 1000) -> bytes:
    head = b"%s-%07d-" % (tag, seq)
    return head + b"." * (size - len(head))


def data_files(server) -> dict:
    """Name -> size of every queue file in the data directory (journals, segments)."""
    out = {}
    for name in os.listdir(server.data_dir):
        if name.startswith("erqpy.") or name in ("status", "paused.json"):
            continue
        try:
            out[name] = os.path.getsize(server.data_dir / name)
        except FileNotFoundError:
            pass  # deleted between listdir and stat by a compaction
    return out


def segment_names(server) -> list[str]:
    return sorted(n for n in data_files(server) if n.endswith(".seg"))


class Driver:
    """A producer, a plain reader and a reliable reader on one queue, one request at a
    time, with an exact model of the queue: ``waiting`` in queue order and ``held`` (the
    reliable reader's open reads, oldest first).  Every reply is checked as it comes."""

    def __init__(self, server, queue: str = "q", tag: bytes = b"d", sizes=(1000,)):
        self.queue = queue.encode()
        self.tag = tag
        self.sizes = sizes
        self.seq = 0
        self.waiting = deque()
        self.held = []
        self.in_flight = None  # (operation, item) sent and not yet answered
        self.connect(server)

    def connect(self, server) -> None:
        self.producer, self.taker, self.holder = server.raw(), server.raw(), server.raw()

    def close(self) -> None:
        for raw in (self.producer, self.taker, self.holder):
            raw.close()

    def restarted(self, server) -> None:
        """After a crash between requests: open reads are back at the head, in order.
        ``server`` None: it is not up (it died again while starting)."""
        assert self.in_flight is None
        self.close()
        self.waiting.extendleft(reversed(self.held))
        self.held = []
        if server is not None:
            self.connect(server)

    def put(self, count: int = 1) -> None:
        for _ in range(count):
            data = payload(self.tag, self.seq, self.sizes[self.seq % len(self.sizes)])
            self.in_flight = ("set", data)
            reply = self.producer.call(b"set %s 0 0 %d\r\n%s\r\n" % (self.queue, len(data), data), timeout=TIMEOUT)
            assert b"STORED\r\n" == reply
            self.seq += 1
            self.waiting.append(data)
            self.in_flight = None

    def take(self, count: int = 1) -> None:
        for _ in range(count):
            expected = self.waiting[0] if self.waiting else None
            self.in_flight = ("get", expected)
            self.taker.send(b"get %s\r\n" % self.queue)
            got = [data for data, _cas in read_values(self.taker)]
            assert ([expected] if expected is not None else []) == got
            if expected is not None:
                self.waiting.popleft()
            self.in_flight = None

    def open(self, count: int = 1) -> None:
        for _ in range(count):
            expected = self.waiting[0] if self.waiting else None
            # Opened or not, the item sits at the same place after a crash (the newest
            # open read comes back right before the old head): no ambiguity to record.
            self.in_flight = ("open", expected)
            self.holder.send(b"get %s/open\r\n" % self.queue)
            got = [data for data, _cas in read_values(self.holder)]
            assert ([expected] if expected is not None else []) == got
            if expected is not None:
                self.held.append(self.waiting.popleft())
            self.in_flight = None

    def close_oldest(self, count: int = 1) -> None:
        for _ in range(count):
            if not self.held:
                return
            self.in_flight = ("close", self.held[0])
            assert b"END\r\n" == self.holder.call(b"get %s/close\r\n" % self.queue, b"END\r\n", timeout=TIMEOUT)
            self.held.pop(0)
            self.in_flight = None

    def acceptable_after_crash(self) -> list[list[bytes]]:
        """Every queue content a correct server may have after dying right now."""
        base = self.held + list(self.waiting)
        if self.in_flight is None:
            return [base]
        operation, item = self.in_flight
        if operation == "set":  # stored or not: at the tail if stored
            return [base, base + [item]]
        if operation == "get" and item is not None:  # the removal is journaled first
            return [base, base[: len(self.held)] + base[len(self.held) + 1 :]]
        if operation == "close":  # confirmed or still open (then first)
            return [base, base[1:]]
        return [base]


def drained_data(server, queue: str = "q") -> list[bytes]:
    return [data for data, _id in drain(server, queue, limit=20_000)]


def test_open_reads_of_a_deep_queue_come_back_first_after_sigkill(make_server, tmp_path):
    """Reads opened while the head crosses segment after segment (each crossing snapshots
    the journal) all come back, first and in opening order, after SIGKILL; the rest
    follows in order and nothing taken or confirmed returns."""
    server = tiny_server(make_server, tmp_path)
    driver = Driver(server)
    driver.put(300)
    stats = queue_stats(server, "q")
    assert 300 == stats["items"]
    assert stats["mem_bytes"] <= MEMORY_BUDGET
    assert stats["journal_rotations"] >= 20
    driver.open(40)
    driver.take(20)
    driver.close_oldest(10)
    driver.open(5)
    assert 35 == len(driver.held)
    assert queue_stats(server, "q")["journal_rewrites"] > 0

    server.kill9()
    mark = log_mark(server)
    server.start()

    assert driver.acceptable_after_crash() == [drained_data(server)]
    assert "DATA MAY HAVE BEEN LOST" not in log_since(server, mark)


def test_an_open_read_survives_sigkill_right_after_its_open_compacted_the_journal(make_server, tmp_path):
    """An open read whose own removal made the head cross into the next segment (so the
    journal was snapshotted under it) is still there after a SIGKILL that follows at once:
    after every such crash the item count is whole and the reads come back first."""
    server = tiny_server(make_server, tmp_path)
    driver = Driver(server)
    driver.put(300)
    crashes = 0
    for _ in range(200):
        if len(driver.held) >= 3:
            driver.close_oldest(1)  # few held reads, so that a restart gives back few
        rewrites = queue_stats(server, "q")["journal_rewrites"]
        driver.open(1)
        if queue_stats(server, "q")["journal_rewrites"] == rewrites:
            continue
        server.kill9()
        server.start()
        crashes += 1
        assert len(driver.held) + len(driver.waiting) == queue_stats(server, "q")["items"]
        driver.restarted(server)
        if crashes == 5:
            break
    assert 5 == crashes

    server.kill9()
    server.start()

    assert driver.acceptable_after_crash() == [drained_data(server)]


def _build_deep_state(driver: Driver) -> None:
    driver.put(240)
    driver.open(12)
    driver.take(30)
    driver.close_oldest(4)
    driver.put(40)
    driver.open(3)


def _mixed_traffic(driver: Driver, rounds: int = 400) -> None:
    for _ in range(rounds):
        driver.put(6)
        driver.take(2)
        driver.open(2)
        driver.close_oldest(1 if len(driver.held) < 20 else 2)  # stay under max_open_reads
        driver.take(1)


def traffic_in_a_thread(driver: Driver, rounds: int) -> tuple[threading.Thread, dict]:
    """``_mixed_traffic`` in a thread until the server dies, under way on return; the
    outcome gets ``died`` (True: the connection dropped) or ``error``."""
    outcome: dict = {}

    def traffic():
        try:
            outcome["died"] = _until_the_server_dies(_mixed_traffic, driver, rounds)
        except Exception as exc:  # reported by the main thread
            outcome["error"] = repr(exc)

    before = driver.seq
    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    wait_for(lambda: driver.seq > before + 6 or outcome, what="traffic under way before the snapshot starts")
    return thread, outcome


def _until_the_server_dies(work, *args) -> bool:
    """Run ``work`` until the connection drops (True), or to its end (False)."""
    try:
        work(*args)
    except ConnectionError:
        return True
    return False


@pytest.mark.parametrize("failpoint", COMPACTION_FAILPOINTS)
@pytest.mark.parametrize("start", ["fresh", "after-sigkill"])
def test_crash_at_a_compaction_failpoint_under_read_behind_loses_nothing(make_server, tmp_path, failpoint, start):
    """The server dies at the fail point (exit 86): "fresh" while a deep queue is built
    and read with open reads held; "after-sigkill" when it is restarted on a deep queue
    with open reads (in its start-up compaction, or in traffic after it).  The clean
    restart after that has exactly what the clients were promised, open reads first, and
    no temporary file."""
    env = {"ERQPY_FAILPOINT": failpoint}
    server = tiny_server(make_server, tmp_path, env=env if start == "fresh" else None)
    driver = Driver(server, sizes=(1000, 300, 1500, 700))
    mark = log_mark(server)
    if start == "fresh":
        died_in = "traffic" if _until_the_server_dies(_build_deep_state, driver) else None
        if died_in is None:
            died_in = "traffic" if _until_the_server_dies(_mixed_traffic, driver) else None
    else:
        _build_deep_state(driver)
        assert len(segment_names(server)) >= 10
        server.kill9()
        driver.close()
        server.env = env
        mark = log_mark(server)
        try:
            server.start()
        except RuntimeError:
            died_in = "start-up"
            driver.restarted(server=None)
        else:
            driver.restarted(server)
            died_in = "traffic" if _until_the_server_dies(_mixed_traffic, driver) else None
    assert died_in is not None, "the fail point was never reached"
    if died_in == "traffic":
        server.proc.wait(timeout=TIMEOUT)
        driver.close()
    server._close_pipes()
    assert FAILPOINT_EXIT == server.proc.returncode
    assert f"failpoint {failpoint} reached" in log_since(server, mark)
    leftovers = [n for n in os.listdir(server.data_dir) if "~~" in n]
    assert (["q.journal~~"] if failpoint == "rewrite-before-rename" else []) == leftovers

    server.env = {}
    mark = log_mark(server)
    server.start()

    log = log_since(server, mark)
    assert [] == [n for n in os.listdir(server.data_dir) if "~~" in n]
    if failpoint == "rewrite-before-rename":
        assert "removed leftover temporary file q.journal~~" in log
    assert "DATA MAY HAVE BEEN LOST" not in log
    assert drained_data(server) in driver.acceptable_after_crash(), f"died in {died_in}"


# A window of 2 MiB of journal items makes a snapshot larger than 1 MiB, which the server
# writes from a worker thread while traffic goes on (records appended meanwhile are
# carried over into the new journal).
WIDE = "[queues.default]\nmax_memory_size = 2097152\nmax_journal_size = 262144\n"


@pytest.mark.parametrize("failpoint", ["rewrite-before-rename", "rewrite-after-rename",
                                       "snapshot-before-segment-delete"])
def test_crash_in_a_large_snapshot_written_during_traffic_loses_nothing(make_server, tmp_path, failpoint):
    """A queue with 2 MiB of journal items in memory, more in segments and open reads
    held is compacted (erqctl compact) while a client keeps setting, getting, opening
    and closing; the server dies at the fail point.  After a clean restart the queue has
    exactly what that client was promised, open reads first."""
    config = write_config(tmp_path, WIDE)
    server = make_server("--config", str(config), env={"ERQPY_FAILPOINT": failpoint})
    driver = Driver(server, sizes=(1000, 700, 1300))
    driver.put(2600)
    driver.open(5)
    driver.take(5)
    assert [] != segment_names(server)
    thread, outcome = traffic_in_a_thread(driver, 2000)
    server.ctl("compact", "q", timeout=TIMEOUT)
    restart_after_traffic_died(server, driver, thread, outcome, FAILPOINT_EXIT)


def restart_after_traffic_died(server, driver: Driver, thread, outcome: dict, exit_status: int | None) -> None:
    """The traffic thread ends with the server (``exit_status``: a fail point's, or None
    after SIGKILL); a clean restart then holds exactly what that client was promised."""
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert {"died": True} == outcome, "the server did not die under traffic, or traffic failed"
    if exit_status is not None:
        assert exit_status == server.proc.wait(timeout=TIMEOUT)
    server._close_pipes()
    driver.close()

    server.env = {}
    mark = log_mark(server)
    server.start()

    assert "DATA MAY HAVE BEEN LOST" not in log_since(server, mark)
    assert drained_data(server) in driver.acceptable_after_crash()


def test_stray_temporary_files_are_removed_at_start(make_server, tmp_path):
    """Files marked ~~ (an interrupted rewrite's output) are deleted when the server
    starts, and the queue beside them keeps its items."""
    server = tiny_server(make_server, tmp_path)
    driver = Driver(server)
    driver.put(40)
    server.kill9()
    driver.close()
    for name in ("q.journal~~", "q.0000000000000009.seg~~", "other.journal~~"):
        (server.data_dir / name).write_bytes(b"\0" * 100)

    server.start()

    assert [] == [n for n in os.listdir(server.data_dir) if "~~" in n]
    assert list(driver.waiting) == drained_data(server)


def _total_queue_bytes(server) -> int:
    return sum(data_files(server).values())


def test_disk_use_falls_back_to_a_few_kib_after_draining(make_server, tmp_path):
    """After a deep queue is drained (by a reader that then stays blocked on the empty
    queue, as consumers do), the periodic sweep compacts it: within seconds the files of
    the queue take a few KiB, with no segment left."""
    server = tiny_server(make_server, tmp_path)
    driver = Driver(server)
    driver.put(600)
    full = _total_queue_bytes(server)
    assert full > 600 * 1000
    driver.take(600)
    blocked = server.raw()
    blocked.send(b"get q/t=60000\r\n")
    wait_for(lambda: queue_stats(server, "q")["waiters"] == 1, what="a blocked reader")

    wait_for(
        lambda: not segment_names(server) and _total_queue_bytes(server) < 4096,
        timeout=15,
        what="no segment left and disk use back to a few KiB",
    )

    assert 0 == queue_stats(server, "q")["items"]
    driver.put(1)
    assert [(driver.waiting[0], None)] == read_values(blocked)


# -- SIGKILL at random moments under concurrent load ------------------------------------

LOAD_QUEUE = "deep"
ROUNDS = 4
PREFILL = 1500
ROUND_DEADLINE = 30.0  # seconds a worker may run; every loop also has a count bound


class LoadWorker(threading.Thread):
    """One client connection in a thread; records what it was told.  The crash ends it
    with a ConnectionError; any other error is kept for the main thread."""

    def __init__(self, server, stop):
        super().__init__(daemon=True)
        self.raw = server.raw()
        self.raw.sock.settimeout(TIMEOUT)
        self.stop = stop
        self.deadline = time.monotonic() + ROUND_DEADLINE
        self.in_flight = None
        self.error = None

    def run(self):
        try:
            self.work()
        except ConnectionError:
            pass
        except Exception as exc:
            self.error = exc
        finally:
            self.raw.close()

    def running(self) -> bool:
        return not self.stop.is_set() and time.monotonic() < self.deadline


class LoadProducer(LoadWorker):
    def __init__(self, server, stop, tag: bytes, rng):
        super().__init__(server, stop)
        self.tag = tag
        self.sizes = [rng.randint(100, 1500) for _ in range(16)]
        self.acked = []

    def work(self):
        for seq in range(20_000):
            if not self.running():
                return
            data = payload(self.tag, seq, self.sizes[seq % len(self.sizes)])
            self.in_flight = data
            reply = self.raw.call(b"set %s 0 0 %d\r\n%s\r\n" % (LOAD_QUEUE.encode(), len(data), data), timeout=TIMEOUT)
            if reply != b"STORED\r\n":
                raise AssertionError(f"set answered {reply!r}")
            self.acked.append(data)
            self.in_flight = None


class LoadTaker(LoadWorker):
    """Plain gets, a little slower than the producers so the queue stays deep."""

    def __init__(self, server, stop):
        super().__init__(server, stop)
        self.received = []

    def work(self):
        for _ in range(20_000):
            if not self.running():
                return
            self.in_flight = True
            self.raw.send(b"get %s/t=100\r\n" % LOAD_QUEUE.encode())
            values = read_values(self.raw)
            self.in_flight = None
            self.received.extend(data for data, _cas in values)
            time.sleep(0.002)


class LoadHolder(LoadWorker):
    """Reliable reads: keeps one to three open, closing the oldest after opening more."""

    def __init__(self, server, stop, rng):
        super().__init__(server, stop)
        self.rng = rng
        self.held = []  # opened and not confirmed, oldest first
        self.confirmed = []
        self.open_in_flight = False
        self.close_in_flight = None

    def work(self):
        key = LOAD_QUEUE.encode()
        for _ in range(20_000):
            if not self.running():
                return
            while len(self.held) < self.rng.randint(1, 3):
                self.open_in_flight = True
                self.raw.send(b"get %s/open/t=100\r\n" % key)
                values = read_values(self.raw)
                self.open_in_flight = False
                if not values:
                    break
                self.held.append(values[0][0])
            time.sleep(self.rng.choice((0, 0.001, 0.004)))
            if self.held:
                self.close_in_flight = self.held[0]
                if self.raw.call(b"get %s/close\r\n" % key, b"END\r\n", timeout=TIMEOUT) != b"END\r\n":
                    raise AssertionError("close did not answer END")
                self.confirmed.append(self.held.pop(0))
                self.close_in_flight = None


def _prefill(server, count: int) -> list[bytes]:
    raw = server.raw()
    items = [payload(b"pre", seq, 200 + (seq * 37) % 1300) for seq in range(count)]
    try:
        for start in range(0, count, 100):
            chunk = items[start : start + 100]
            raw.send(b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (LOAD_QUEUE.encode(), len(d), d) for d in chunk))
            for _ in chunk:
                assert b"STORED\r\n" == raw.line(TIMEOUT)
    finally:
        raw.close()
    return items


@pytest.mark.slow
def test_sigkill_at_random_moments_under_load_on_a_deep_queue(make_server, tmp_path):
    """Producers, plain readers and reliable readers hammer a queue hundreds of items
    deeper than its memory while snapshots and segment deletions run; the server is
    SIGKILLed at a random moment, restarted, loaded again, several times.  At the end every
    acknowledged item neither taken nor confirmed is there exactly once, each producer's
    items in order, and the reads open at the last crash come first."""
    rng = random.Random(20240604)
    server = tiny_server(make_server, tmp_path)
    acked = set(_prefill(server, PREFILL))
    producer_logs = defaultdict(list)  # tag -> acknowledged items in sending order
    unacked = set()
    received, confirmed, maybe_confirmed = set(), set(), set()
    plain_in_flight = 0
    ever_held = set()
    # Opens in flight at a crash: the server may have opened (and journaled) an item whose
    # reply never arrived, so it comes back at the head without the test knowing it.
    opens_in_flight = 0
    last_holders = []
    depths = []
    for round_number in range(ROUNDS):
        if round_number:
            server.start()
        stop = threading.Event()
        producers = [LoadProducer(server, stop, b"r%dp%d" % (round_number, n), rng) for n in range(3)]
        takers = [LoadTaker(server, stop)]
        holders = [LoadHolder(server, stop, random.Random(rng.random())) for _ in range(2)]
        workers = producers + takers + holders
        for worker in workers:
            worker.start()
        try:
            time.sleep(rng.uniform(0.8, 2.5))
            # The last crash must find a read open (what the end checks comes first);
            # on a loaded machine the holders may not have one yet.
            deadline = time.monotonic() + 10
            while round_number == ROUNDS - 1 and not any(h.held for h in holders) and time.monotonic() < deadline:
                time.sleep(0.005)
            stats = queue_stats(server, LOAD_QUEUE)
            depths.append((stats["items"], stats["mem_items"], stats["journal_rewrites"]))
            server.kill9()
        finally:
            stop.set()
            for worker in workers:
                worker.join(timeout=TIMEOUT)
        assert [] == [w for w in workers if w.is_alive()]
        assert [] == [repr(w.error) for w in workers if w.error is not None]
        for producer in producers:
            acked.update(producer.acked)
            producer_logs[producer.tag] = list(producer.acked)
            if producer.in_flight is not None:
                unacked.add(producer.in_flight)
                # Written but not acknowledged when the server died: it may be on disk,
                # and if it comes back it must come after the producer's acked items.
                producer_logs[producer.tag].append(producer.in_flight)
        for taker in takers:
            received.update(taker.received)
            plain_in_flight += 1 if taker.in_flight else 0
        for holder in holders:
            confirmed.update(holder.confirmed)
            ever_held.update(holder.held)
            opens_in_flight += 1 if holder.open_in_flight else 0
            if holder.close_in_flight is not None:
                maybe_confirmed.add(holder.close_in_flight)
        last_holders = holders

    server.start()
    drained = drain(server, LOAD_QUEUE, limit=20_000)
    items = [data for data, _id in drained]
    present = set(items)

    # Deep in read-behind at every crash, with snapshots running.
    assert all(items_ > 200 and mem_items < 20 and rewrites > 0 for items_, mem_items, rewrites in depths), depths
    assert len(items) == len(present), "an item came back twice"
    assert set() == present - acked - unacked, "items nobody sent"
    assert set() == present & received, "a plain get's item came back"
    assert set() == present & confirmed, "a confirmed item came back"
    last_held = [data for holder in last_holders for data in holder.held]
    assert set() == set(last_held) - maybe_confirmed - present, "a read open at the last crash was lost"
    front = [data for data in items if data in ever_held]
    head = items[: len(front) + opens_in_flight]
    assert front == [data for data in head if data in ever_held], "reads open at a crash are not at the head"
    for holder in last_holders:
        kept = [data for data in holder.held if data in present]
        assert kept == [data for data in items if data in set(kept)], "open reads out of opening order"
    ids = [item_id for _data, item_id in drained]
    assert ids == sorted(ids), "ids out of order"
    for tag, sent in producer_logs.items():
        mine = [data for data in items if data.startswith(tag + b"-")]
        assert mine == [data for data in sent if data in present], f"producer {tag!r} out of order"
    prefill_left = [data for data in items if data.startswith(b"pre-")]
    assert prefill_left == sorted(prefill_left)
    missing = acked - received - confirmed - maybe_confirmed - present
    assert len(missing) <= plain_in_flight, f"lost acknowledged items {sorted(missing)[:5]}"
    assert received and confirmed and last_held


def never_waiting_reads_on(directory) -> bool:
    """Whether the file system of ``directory`` takes preadv2's RWF_NOWAIT."""
    probe = os.path.join(str(directory), "nowait-probe")
    fd = os.open(probe, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"x" * 4096)
        os.preadv(fd, [bytearray(4096)], 0, os.RWF_NOWAIT)
        return True
    except OSError as exc:
        assert exc.errno == errno.EOPNOTSUPP, exc
        return False
    finally:
        os.close(fd)
        os.unlink(probe)


def test_a_drain_through_read_behind_has_the_segments_read_ahead_by_a_thread(make_server, tmp_path):
    """The refill's pages are read first by the read-ahead thread (storage/readahead),
    which ``erqctl --json status`` counts; the items come out whole and in order."""
    import json

    server = tiny_server(make_server, tmp_path)
    raw = server.raw()
    sent = [payload(b"ra", n) for n in range(200)]
    set_items(raw, "q", sent)
    raw.close()

    assert sent == drained_data(server)

    def status() -> dict:
        return json.loads(server.ctl("--json", "status", check=True).stdout)

    assert status()["read_ahead_requests"] > 0
    # Refills while memory held items took only cached pages, where the file system
    # offers such reads (ext4 does; tmpfs, whose pages are never on a device, does not).
    assert status()["read_behind_never_waits"] is never_waiting_reads_on(tmp_path)
    # A segment may be deleted before the thread gets to it (a failure, counted), but
    # the first ones are read.
    wait_for(lambda: status()["read_ahead_bytes"] > 0, what="read-ahead bytes")
