"""Priorities across SIGKILL, restarts and compaction: each item keeps its level (its
ATTRS record, rewritten by a snapshot), the order within a level holds, and a read open
when the server died comes back to the head of its own level."""

from recovery_support import drain, journal_file, queue_stats, read_values, set_items, write_config
from test_delayed_recovery import attrs_records


def set_with_priority(raw, queue: str, data: bytes, priority: int) -> None:
    reply = raw.call(b"set %s/pri=%d 0 0 %d\r\n%s\r\n" % (queue.encode(), priority, len(data), data))
    assert b"STORED\r\n" == reply


def payloads(server, queue: str) -> list[bytes]:
    return [data for data, _id in drain(server, queue)]


def fill(raw) -> None:
    set_items(raw, "jobs", [b"d1"])
    set_with_priority(raw, "jobs", b"low1", 9)
    set_with_priority(raw, "jobs", b"hi1", 0)
    set_items(raw, "jobs", [b"d2"])
    set_with_priority(raw, "jobs", b"hi2", 0)
    set_with_priority(raw, "jobs", b"mid1", 3)
    set_with_priority(raw, "jobs", b"low2", 9)


EXPECTED = [b"hi1", b"hi2", b"mid1", b"d1", b"d2", b"low1", b"low2"]


def test_levels_survive_sigkill(server):
    fill(server.raw())
    server.kill9()
    server.start()
    assert 7 == queue_stats(server, "jobs")["items"]
    assert EXPECTED == payloads(server, "jobs")


def test_levels_survive_compaction_and_sigkill(make_server, tmp_path):
    config = write_config(tmp_path, "[queues.jobs]\nmax_journal_size = 4096\n")
    server = make_server("--config", str(config))
    raw = server.raw()
    for _ in range(30):  # churn: the journal is rewritten as it passes max_journal_size
        set_with_priority(raw, "jobs", b"x" * 300, 0)
        raw.send(b"get jobs\r\n")
        assert [b"x" * 300] == [data for data, _id in read_values(raw)]
    fill(raw)
    server.ctl("compact", "jobs", check=True)
    assert queue_stats(server, "jobs")["journal_rewrites"] >= 1
    assert 5 == len(attrs_records(journal_file(server, "jobs").read_bytes()))

    server.kill9()
    server.start()

    assert EXPECTED == payloads(server, "jobs")


def test_a_read_open_at_the_crash_comes_back_to_the_head_of_its_level(server):
    raw = server.raw()
    set_with_priority(raw, "jobs", b"two-a", 2)
    set_with_priority(raw, "jobs", b"two-b", 2)
    set_items(raw, "jobs", [b"plain"])
    holder = server.raw()
    holder.send(b"get jobs/open\r\n")
    assert [b"two-a"] == [data for data, _id in read_values(holder)]

    server.kill9()
    holder.close()
    server.start()

    assert [b"two-a", b"two-b", b"plain"] == payloads(server, "jobs")


def test_levels_with_a_queue_reading_behind(make_server, tmp_path):
    """The default level spills to segment files; the other levels stay in memory and
    are served first, across a restart."""
    config = write_config(tmp_path, "[queues.jobs]\nmax_memory_size = 2048\nmax_journal_size = 8192\n")
    server = make_server("--config", str(config))
    raw = server.raw()
    spilled = [b"%04d" % i + b"s" * 200 for i in range(30)]
    set_items(raw, "jobs", spilled)
    set_with_priority(raw, "jobs", b"urgent", 1)
    set_with_priority(raw, "jobs", b"lazy", 8)
    assert queue_stats(server, "jobs")["mem_items"] < 32

    server.kill9()
    server.start()

    assert [b"urgent", *spilled, b"lazy"] == payloads(server, "jobs")
