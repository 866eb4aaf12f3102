"""Payloads are client bytes, and a client can make them look exactly like journal
records.  Recovery must never read records out of a payload: not out of a record torn by
a crash mid-write, not out of a record whose head was damaged, and not out of an intact
one.  Each test writes through the protocol, kills the server (SIGKILL), damages or cuts
the journal on disk as a crash or a bad disk would, restarts on the same directory and
counts what comes back."""

import struct
import zlib

from recovery_support import add_records, drain, head_offsets, journal_file, log_mark, log_since, set_items

EARLIER = [b"earlier-%04d" % i for i in range(1000)]
LATER = [b"later-%02d" % i for i in range(10)]


def v1_flush() -> bytes:
    """The issue's forged record: a valid version 1 FLUSH (crc, length 0, opcode 6)."""
    return struct.pack("<IIB", zlib.crc32(b"\x06"), 0, 6)


def v2_record(opcode: int, body: bytes, salt: int) -> bytes:
    """A version 2 record for a guessed salt: the best a client can do without the file's."""
    frame = struct.pack("<IBI", len(body), opcode, zlib.crc32(body, salt >> 32))
    return frame + struct.pack("<I", zlib.crc32(frame, salt & 0xFFFFFFFF)) + body


def forged_payload(tail: int = 4000) -> bytes:
    forged = v1_flush() + v2_record(6, b"", 0) + v2_record(2, struct.pack("<Q", 1), 0)
    return b"A" * 64 + forged + b"B" * tail


def store_and_kill(server, payloads):
    raw = server.raw()
    set_items(raw, "q", payloads)
    raw.close()
    server.kill9()
    return journal_file(server, "q")


def test_forged_flush_inside_a_torn_record_is_not_applied(server):
    """The issue's reproduction: the item holding a FLUSH is torn 2,000 bytes before its
    end (its write never finished, so it was never acknowledged).  Every one of the
    1,000 earlier items comes back, and the torn item does not."""
    path = store_and_kill(server, EARLIER + [forged_payload()])
    content = path.read_bytes()
    path.write_bytes(content[:-2000])
    mark = log_mark(server)

    server.start()

    back = [data for data, _id in drain(server, "q")]
    assert (1000, EARLIER) == (len(back), back)
    log = log_since(server, mark)
    assert "truncated" in log, log


def test_forged_records_after_a_damaged_head_are_not_applied(server):
    """The record holding forged records has a byte of its length damaged, so recovery
    has to search for the next record, through that payload: the forgeries are passed
    over, only the damaged item is lost, the 1,000 before and 10 after come back."""
    path = store_and_kill(server, EARLIER + [forged_payload(tail=200)] + LATER)
    content = bytearray(path.read_bytes())
    offset = next(pos for pos, _size, data in add_records(bytes(content)) if data.startswith(b"A" * 64))
    content[offset + head_offsets(bytes(content))["length"] + 1] ^= 0x01
    path.write_bytes(bytes(content))
    mark = log_mark(server)

    server.start()

    back = [data for data, _id in drain(server, "q")]
    assert (1010, EARLIER + LATER) == (len(back), back)
    log = log_since(server, mark)
    assert any("DATA MAY HAVE BEEN LOST" in line and f"offset {offset}" in line for line in log.splitlines()), log


def test_intact_payload_full_of_records_comes_back_as_a_payload(server):
    """Valid framing is followed, so forged records inside an intact item are data: the
    item comes back byte for byte, after the earlier items, and nothing was applied."""
    payload = forged_payload(tail=100)
    store_and_kill(server, EARLIER[:10] + [payload] + LATER)
    mark = log_mark(server)

    server.start()

    assert EARLIER[:10] + [payload] + LATER == [data for data, _id in drain(server, "q")]
    assert "DATA MAY HAVE BEEN LOST" not in log_since(server, mark)
