"""A byte flipped in a sealed segment file costs only the record it hit.  The server
reads behind (``max_memory_size = 65536``, ``max_journal_size = 262144``), 5,000 items of
100 bytes fill the journal and three segments; after SIGKILL one byte of record 10 of the
second segment is flipped, in its payload or in its head; the restarted server gives
back the other 4,999 items in order and logs the loss."""

import pytest

from recovery_support import (
    add_records,
    drain,
    head_offsets,
    head_size,
    log_mark,
    log_since,
    queue_stats,
    set_items,
    write_config,
)

CONFIG = "[queues.default]\nmax_memory_size = 65536\nmax_journal_size = 262144\n"
ITEMS = [b"item-%05d-" % i + b"x" * 89 for i in range(5000)]


@pytest.mark.parametrize("where", ["payload", "length", "opcode"])
def test_flipped_byte_in_a_sealed_segment_costs_one_item(make_server, tmp_path, where):
    server = make_server("--config", str(write_config(tmp_path, CONFIG)))
    raw = server.raw()
    set_items(raw, "q", ITEMS)
    raw.close()
    server.kill9()
    segments = sorted(server.data_dir.glob("q.*.seg"))
    assert len(segments) >= 3, segments
    content = bytearray(segments[1].read_bytes())
    offset, _size, victim = add_records(bytes(content))[10]
    fields = head_offsets(bytes(content))
    payload_start = head_size(bytes(content)) + 28  # head, then the ADD fields
    flip = {"payload": payload_start + 50, "length": fields["length"] + 1, "opcode": fields["opcode"]}[where]
    content[offset + flip] ^= 0x01
    segments[1].write_bytes(bytes(content))
    mark = log_mark(server)

    server.start()

    back = [data for data, _id in drain(server, "q", limit=1000)]
    expected = [item for item in ITEMS if item != victim]
    assert (4999, expected) == (len(back), back)
    log = log_since(server, mark)
    assert any("DATA MAY HAVE BEEN LOST" in line and segments[1].name in line for line in log.splitlines()), log
    assert 0 == queue_stats(server, "q")["items"]
    if where == "payload":  # a valid head: the skipped record is taken off the counts at once
        assert "could not be read" not in log, log

