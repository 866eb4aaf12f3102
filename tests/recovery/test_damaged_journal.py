"""A real server restarted on a journal damaged while it was stopped: a torn last record
is cut off with a warning; a corrupt record in the middle is skipped loudly, the damaged
file is kept, and the journal is rewritten so that the next start is clean."""

import pytest

from recovery_support import (
    HEAD_OFFSETS,
    HEADER_SIZE,
    RECORD_HEAD,
    add_records,
    drain,
    journal_file,
    log_mark,
    log_since,
    record_offsets,
    set_items,
)

PAYLOADS = [b"alpha", b"bravo-" + b"b" * 100, b"charlie-" + b"c" * 300, b"delta", b"echo-" + b"e" * 50]


def stored_and_stopped(server, payloads=PAYLOADS):
    raw = server.raw()
    set_items(raw, "q", payloads)
    raw.close()
    assert 0 == server.terminate()
    return journal_file(server, "q")


def test_torn_tail_is_truncated_with_a_warning_and_earlier_items_kept(server):
    """A journal cut in the middle of its last record restarts with every earlier item,
    a WARNING naming the truncation, and the file cut back to the last whole record."""
    path = stored_and_stopped(server)
    last_offset, last_size, _data = add_records(path.read_bytes())[-1]
    path.write_bytes(path.read_bytes()[: last_offset + last_size // 2])
    mark = log_mark(server)

    server.start()

    size_after_start = path.stat().st_size
    log = log_since(server, mark)
    assert last_offset == size_after_start
    assert any(
        "WARNING" in line and "truncated" in line and f"offset {last_offset}" in line
        for line in log.splitlines()
    ), log
    assert "DATA MAY HAVE BEEN LOST" not in log
    assert [] == list(server.data_dir.glob("q.journal.corrupt-*"))
    assert PAYLOADS[:-1] == [data for data, _id in drain(server, "q")]


def test_torn_tail_inside_the_record_head_is_truncated(server):
    """A cut inside the 9-byte head of the last record is handled like any torn tail."""
    path = stored_and_stopped(server)
    last_offset, _size, _data = add_records(path.read_bytes())[-1]
    path.write_bytes(path.read_bytes()[: last_offset + 4])

    server.start()

    assert last_offset == path.stat().st_size
    assert PAYLOADS[:-1] == [data for data, _id in drain(server, "q")]


@pytest.mark.parametrize("where", ["payload", "crc", "length", "opcode"])
def test_corrupt_record_in_the_middle_is_skipped_reported_and_repaired(server, where):
    """Damage inside one record keeps the records before and after it (a later REMOVE
    included), logs DATA MAY HAVE BEEN LOST with the offset, keeps a copy of the damaged
    file, and rewrites the journal so the next restart reports nothing."""
    raw = server.raw()
    set_items(raw, "q", PAYLOADS)
    assert b"VALUE q 0 5\r\nalpha\r\nEND\r\n" == raw.call(b"get q\r\n", b"END\r\n")  # REMOVE after the damage
    raw.close()
    assert 0 == server.terminate()
    path = journal_file(server, "q")
    content = bytearray(path.read_bytes())
    damaged_offset, _size, data = add_records(bytes(content))[2]
    assert PAYLOADS[2] == data
    flip = {"payload": RECORD_HEAD.size + 28 + 10, "crc": HEAD_OFFSETS["body_crc"] + 2,
            "length": HEAD_OFFSETS["length"] + 2, "opcode": HEAD_OFFSETS["opcode"]}[where]
    content[damaged_offset + flip] ^= 0x5A
    path.write_bytes(bytes(content))
    mark = log_mark(server)

    server.start()

    log = log_since(server, mark)
    assert any(
        "DATA MAY HAVE BEEN LOST" in line and f"offset {damaged_offset}" in line for line in log.splitlines()
    ), log
    copies = list(server.data_dir.glob("q.journal.corrupt-*"))
    assert 1 == len(copies)
    assert bytes(content) == copies[0].read_bytes()
    repaired = path.read_bytes()
    whole = record_offsets(repaired)
    assert len(repaired) == (whole[-1][0] + whole[-1][1] if whole else HEADER_SIZE)
    assert [PAYLOADS[1], PAYLOADS[3], PAYLOADS[4]] == [d for _o, _s, d in add_records(repaired)]

    assert 0 == server.terminate()
    mark = log_mark(server)
    server.start()

    log = log_since(server, mark)
    assert "DATA MAY HAVE BEEN LOST" not in log
    assert "truncated" not in log
    assert 1 == len(list(server.data_dir.glob("q.journal.corrupt-*")))
    assert [PAYLOADS[1], PAYLOADS[3], PAYLOADS[4]] == [d for d, _id in drain(server, "q")]


def test_damage_in_one_queue_leaves_other_queues_alone(server):
    """A corrupt journal of one queue does not touch another queue's journal or items."""
    raw = server.raw()
    set_items(raw, "q", PAYLOADS)
    set_items(raw, "other", [b"o1", b"o2"])
    raw.close()
    assert 0 == server.terminate()
    other_before = journal_file(server, "other").read_bytes()
    path = journal_file(server, "q")
    content = bytearray(path.read_bytes())
    offset, _size, _data = add_records(bytes(content))[1]
    content[offset + RECORD_HEAD.size + 30] ^= 0xFF
    path.write_bytes(bytes(content))

    server.start()

    assert other_before == journal_file(server, "other").read_bytes()
    assert [] == list(server.data_dir.glob("other.journal.corrupt-*"))
    assert [b"o1", b"o2"] == [d for d, _id in drain(server, "other")]
    assert [PAYLOADS[0]] + PAYLOADS[2:] == [d for d, _id in drain(server, "q")]
