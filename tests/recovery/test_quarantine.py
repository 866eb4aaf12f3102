"""A file whose header cannot be read holds nothing recovery can validate (the header
carries the salt every record checksum starts from).  Such a file must not stop the
server: the queue is quarantined (its files moved aside under a name start-up never
loads or deletes, an ERROR naming the file and the reason), every other queue is served,
and a later ``set`` on that name starts a fresh queue.  A segment with an unreadable
header costs that segment only."""

import pytest

from recovery_support import (
    add_records,
    drain,
    journal_file,
    log_mark,
    log_since,
    set_items,
    write_config,
)

GOOD = [b"good-%d" % i for i in range(20)]
BAD = [b"bad-%d" % i for i in range(5)]


def damage_header(path):
    content = bytearray(path.read_bytes())
    content[10] ^= 0xFF  # inside next_id: the header checksum no longer matches
    path.write_bytes(bytes(content))
    return bytes(content)


def cut_to_ten_bytes(path):
    content = path.read_bytes()[:10]
    path.write_bytes(content)
    return content


def error_lines(log: str, *needles: str) -> list[str]:
    return [line for line in log.splitlines() if "ERROR" in line and all(n in line for n in needles)]


@pytest.mark.parametrize("damage", [damage_header, cut_to_ten_bytes], ids=["damaged-header", "ten-bytes"])
def test_unreadable_journal_quarantines_its_queue_and_the_rest_is_served(server, damage):
    raw = server.raw()
    set_items(raw, "good", GOOD)
    set_items(raw, "bad", BAD)
    raw.close()
    server.kill9()
    path = journal_file(server, "bad")
    found = damage(path)
    mark = log_mark(server)

    server.start()

    log = log_since(server, mark)
    assert error_lines(log, str(path), "QUARANTINED"), log
    moved = list(server.data_dir.glob("bad.journal.quarantined-*"))
    assert 1 == len(moved), sorted(p.name for p in server.data_dir.iterdir())
    assert found == moved[0].read_bytes()
    assert not path.exists()
    assert GOOD == [data for data, _id in drain(server, "good")]
    assert [] == drain(server, "bad")

    raw = server.raw()
    set_items(raw, "bad", [b"fresh"])
    raw.close()
    assert 0 == server.terminate()
    server.start()

    assert [b"fresh"] == [data for data, _id in drain(server, "bad")]
    assert [moved[0]] == list(server.data_dir.glob("bad.journal.quarantined-*"))
    assert found == moved[0].read_bytes()


TINY = "[queues.default]\nmax_memory_size = 4096\nmax_journal_size = 8192\n"
DEEP = [b"deep-%03d-" % i + b"." * 990 for i in range(60)]


@pytest.mark.parametrize("which", ["sealed", "last"])
def test_segment_with_an_unreadable_header_is_moved_aside_and_the_queue_served(make_server, tmp_path, which):
    """Only that segment's items are lost to the queue (they stay in the moved file); the
    items before and after it, and other queues, come back."""
    server = make_server("--config", str(write_config(tmp_path, TINY)))
    raw = server.raw()
    set_items(raw, "q", DEEP)
    set_items(raw, "other", GOOD[:3])
    raw.close()
    server.kill9()
    segments = sorted(server.data_dir.glob("q.*.seg"))
    assert len(segments) >= 4, segments
    victim = segments[1] if which == "sealed" else segments[-1]
    lost = {data for _pos, _size, data in add_records(victim.read_bytes())}
    assert lost
    found = damage_header(victim)
    mark = log_mark(server)

    server.start()

    log = log_since(server, mark)
    assert error_lines(log, str(victim), "DATA MAY HAVE BEEN LOST"), log
    moved = list(server.data_dir.glob(victim.name + ".quarantined-*"))
    assert 1 == len(moved) and found == moved[0].read_bytes()
    assert [item for item in DEEP if item not in lost] == [data for data, _id in drain(server, "q")]
    assert GOOD[:3] == [data for data, _id in drain(server, "other")]
    raw = server.raw()
    set_items(raw, "q", [b"after"])
    assert b"VALUE q 0 5\r\nafter\r\nEND\r\n" == raw.call(b"get q\r\n", b"END\r\n")
    raw.close()


def test_quarantined_queue_takes_its_segments_along(make_server, tmp_path):
    """A quarantined queue's segments go aside with its journal: a fresh queue of that
    name must not pick up items whose journal (and so whose removals) is unreadable."""
    server = make_server("--config", str(write_config(tmp_path, TINY)))
    raw = server.raw()
    set_items(raw, "q", DEEP[:30])
    raw.close()
    server.kill9()
    segments = sorted(server.data_dir.glob("q.*.seg"))
    assert segments
    damage_header(journal_file(server, "q"))

    server.start()

    assert [] == sorted(server.data_dir.glob("q.*.seg"))
    assert len(segments) == len(list(server.data_dir.glob("q.*.seg.quarantined-*")))
    raw = server.raw()
    set_items(raw, "q", [b"fresh"])
    raw.close()
    server.kill9()
    server.start()
    assert [b"fresh"] == [data for data, _id in drain(server, "q")]
