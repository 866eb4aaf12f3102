"""Delayed items across what a crash does to a server: SIGKILL and restart, compaction
(the journal rewritten as a snapshot), read-behind (a queue larger than its memory), and
a reliable read given back with a delay.  The item must come back, once, and not before
its time.  Delays are 8 s: a restart on this loaded machine can take seconds, and the
items must still be delayed when it is up."""

import struct
import time

from recovery_support import (
    HEADER_SIZE,
    RECORD_HEAD,
    drain,
    journal_file,
    queue_stats,
    read_values,
    record_offsets,
    set_items,
    wait_for,
    write_config,
)

OP_ATTRS = 12  # erqpy/storage/records.py's table: id u64, due_ms i64, priority u8


def set_delayed(raw, queue: str, data: bytes, delay_ms: int) -> None:
    reply = raw.call(b"set %s/delay=%d 0 0 %d\r\n%s\r\n" % (queue.encode(), delay_ms, len(data), data))
    assert b"STORED\r\n" == reply


def payloads(server, queue: str) -> list[bytes]:
    return [data for data, _id in drain(server, queue)]


def attrs_records(data: bytes) -> list[tuple[int, int]]:
    """(item id, due_ms) of every ATTRS record of a journal, by the documented layout."""
    out = []
    for pos, _size, opcode in record_offsets(data):
        if opcode == OP_ATTRS:
            out.append(struct.unpack_from("<Qq", data, pos + RECORD_HEAD.size))
    return out


def wait_visible(server, queue: str, timeout: float = 20.0) -> list[bytes]:
    found = []
    wait_for(lambda: found.extend(payloads(server, queue)) or found, timeout, what=f"items on {queue}")
    return found


def test_delayed_items_survive_sigkill_and_come_back_at_their_time(server):
    raw = server.raw()
    set_items(raw, "jobs", [b"ready"])
    stored = time.time()
    set_delayed(raw, "jobs", b"late", 9000)
    set_delayed(raw, "jobs", b"early", 8000)
    data = journal_file(server, "jobs").read_bytes()
    assert HEADER_SIZE < len(data)
    assert 2 == len(attrs_records(data))

    server.kill9()
    server.start()

    assert 2 == queue_stats(server, "jobs")["delayed"]
    assert [b"ready"] == payloads(server, "jobs")
    if time.time() < stored + 7.9:  # still before the first due time
        assert [] == payloads(server, "jobs")
    first = wait_visible(server, "jobs")
    assert time.time() >= stored + 8.0 - 0.002
    rest = [] if len(first) == 2 else wait_visible(server, "jobs")
    assert [b"early", b"late"] == first + rest
    assert time.time() >= stored + 9.0 - 0.002 or len(first) == 2
    assert 0 == queue_stats(server, "jobs")["delayed"]


def test_an_item_due_while_the_server_was_down_is_there_at_start(server):
    raw = server.raw()
    set_delayed(raw, "jobs", b"x", 300)
    server.kill9()
    time.sleep(0.5)
    server.start()
    assert [b"x"] == payloads(server, "jobs")


def test_a_delayed_item_taken_before_the_crash_does_not_come_back(server):
    raw = server.raw()
    set_delayed(raw, "jobs", b"x", 200)
    set_items(raw, "jobs", [b"after"])
    time.sleep(0.3)
    assert [b"after", b"x"] == payloads(server, "jobs")
    server.kill9()
    server.start()
    assert [] == payloads(server, "jobs")
    assert 0 == queue_stats(server, "jobs")["delayed"]


def test_delayed_items_survive_compaction_and_sigkill(make_server, tmp_path):
    config = write_config(tmp_path, "[queues.jobs]\nmax_journal_size = 4096\n")
    server = make_server("--config", str(config))
    raw = server.raw()
    set_delayed(raw, "jobs", b"delayed-1", 8000)
    set_delayed(raw, "jobs", b"delayed-2", 8000)
    stored = time.time()
    for _ in range(20):  # churn past max_journal_size: the journal is rewritten
        set_items(raw, "jobs", [b"x" * 500])
        assert [b"x" * 500] == payloads(server, "jobs")
    server.ctl("compact", "jobs", check=True)
    assert queue_stats(server, "jobs")["journal_rewrites"] >= 1
    assert 2 == len(attrs_records(journal_file(server, "jobs").read_bytes()))

    server.kill9()
    server.start()

    assert 2 == queue_stats(server, "jobs")["delayed"]
    if time.time() < stored + 7.8:
        assert [] == payloads(server, "jobs")
    found = wait_visible(server, "jobs")
    found += [] if len(found) == 2 else wait_visible(server, "jobs")
    assert time.time() >= stored + 8.0 - 0.002
    assert [b"delayed-1", b"delayed-2"] == found


def test_delayed_items_in_a_queue_reading_behind(make_server, tmp_path):
    """Delayed items stay in memory while the queue spills to segment files; every
    item comes back once, across SIGKILL, the delayed ones at their time."""
    config = write_config(tmp_path, "[queues.jobs]\nmax_memory_size = 2048\nmax_journal_size = 8192\n")
    server = make_server("--config", str(config))
    raw = server.raw()
    spilled = [b"%04d" % i + b"s" * 200 for i in range(40)]
    set_items(raw, "jobs", spilled[:20])
    set_delayed(raw, "jobs", b"delayed", 8000)
    stored = time.time()
    set_items(raw, "jobs", spilled[20:])
    assert queue_stats(server, "jobs")["mem_items"] < 40  # reading behind

    server.kill9()
    server.start()

    assert 1 == queue_stats(server, "jobs")["delayed"]
    taken = payloads(server, "jobs")
    before = time.time() < stored + 7.9
    assert spilled == [item for item in taken if item != b"delayed"]
    if before:
        assert b"delayed" not in taken
        assert [b"delayed"] == wait_visible(server, "jobs")
    assert time.time() >= stored + 8.0 - 0.002
    assert 0 == queue_stats(server, "jobs")["delayed"]


def test_a_read_given_back_with_a_delay_survives_sigkill_with_its_delivery_count(make_server, tmp_path):
    config = write_config(tmp_path, "[queues.jobs]\nmax_deliveries = 2\n")
    server = make_server("--config", str(config))
    set_items(server.raw(), "jobs", [b"job"])
    raw = server.raw()
    raw.send(b"get jobs/open\r\n")
    assert [b"job"] == [data for data, _id in read_values(raw)]
    aborted = time.time()
    raw.send(b"get jobs/abort/delay=8000\r\n")
    assert [] == read_values(raw)
    assert 1 == len(attrs_records(journal_file(server, "jobs").read_bytes()))

    server.kill9()
    raw.close()
    server.start()

    assert 1 == queue_stats(server, "jobs")["delayed"]
    if time.time() < aborted + 7.9:
        assert [] == payloads(server, "jobs")
    raw = server.raw()
    raw.send(b"get jobs/open/t=20000\r\n")
    assert [b"job"] == [data for data, _id in read_values(raw)]
    assert time.time() >= aborted + 8.0 - 0.002
    raw.reset()  # the second delivery ends: max_deliveries is used up
    wait_for(lambda: queue_stats(server, "jobs").get("open_transactions") == 0, what="the read back")
    assert [] == payloads(server, "jobs")
    assert [b"job"] == payloads(server, "jobs_errors")
