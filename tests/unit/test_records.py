"""The journal byte format (erqpy.records): round trips, header checks, and the
difference between a record that is cut short (INCOMPLETE) and one that is damaged
(CORRUPT).  Expected bytes are built here with struct/zlib from the documented layout,
not with the module under test, so the tests also pin the format down."""

import struct
import zlib

import pytest

from erqpy import records

HEAD = struct.Struct("<IIB")


def raw_record(opcode: int, body: bytes, crc: int | None = None) -> bytes:
    """A record laid out as the records docstring says: crc u32, length u32, opcode u8, body."""
    if crc is None:
        crc = zlib.crc32(bytes((opcode,)) + body)
    return HEAD.pack(crc, len(body), opcode) + body


def raw_header(version: int = records.JOURNAL_VERSION, next_id: int = 1, magic: bytes = b"ERQJ") -> bytes:
    body = struct.pack("<4sHHQ", magic, version, 0, next_id)
    return body + struct.pack("<II", zlib.crc32(body), 0)


# -- header ------------------------------------------------------------------------------


def test_header_round_trip_keeps_next_id():
    """A header encodes next_id and decodes back to (version, next_id)."""
    encoded = records.encode_header(123456789)

    assert records.HEADER_SIZE == len(encoded)
    assert (records.JOURNAL_VERSION, 123456789) == records.decode_header(encoded)


def test_header_matches_documented_layout():
    """The header bytes are exactly magic, version, reserved, next_id, crc, pad."""
    assert raw_header(next_id=42) == records.encode_header(42)


def test_header_with_wrong_magic_is_refused():
    """A file that is not an erqpy journal is refused with BadHeader naming the magic."""
    with pytest.raises(records.BadHeader, match="magic"):
        records.decode_header(raw_header(magic=b"NOPE"))


def test_header_with_bad_checksum_is_refused():
    """A flipped bit in the header body is caught by the header CRC."""
    damaged = bytearray(records.encode_header(7))
    damaged[10] ^= 0x01  # inside next_id

    with pytest.raises(records.BadHeader, match="checksum"):
        records.decode_header(bytes(damaged))


def test_header_with_unknown_version_is_refused():
    """A well-formed header of another format version is refused, not misread."""
    with pytest.raises(records.BadHeader, match="version 2"):
        records.decode_header(raw_header(version=records.JOURNAL_VERSION + 1))


def test_truncated_header_is_refused():
    """Fewer bytes than a header is a BadHeader, not an IndexError."""
    with pytest.raises(records.BadHeader, match="truncated"):
        records.decode_header(records.encode_header(1)[:-1])


# -- round trips ---------------------------------------------------------------------------


def test_add_record_round_trip_keeps_every_field():
    """An ADD record decodes to the same id, flags, times and binary data."""
    data = b"binary \r\n\x00\xff payload"
    encoded = records.encode_add(99, 0xFFFFFFFF, 1_700_000_000_123, 1_700_000_060_000, data)

    record, next_pos = records.decode_at(encoded, 0)

    assert len(encoded) == next_pos
    assert (records.OP_ADD, 99, 0xFFFFFFFF, 1_700_000_000_123, 1_700_000_060_000, data) == (
        record.opcode, record.item_id, record.flags, record.added_ms, record.expires_ms, record.data,
    )


def test_add_record_matches_documented_layout():
    """ADD is head + id u64, flags u32, added_ms i64, expires_ms i64, data."""
    body = struct.pack("<QIqq", 5, 3, 1000, 0) + b"hello"

    assert raw_record(records.OP_ADD, body) == records.encode_add(5, 3, 1000, 0, b"hello")


def test_empty_item_round_trips():
    """A zero-length item is a valid ADD record."""
    record, next_pos = records.decode_at(records.encode_add(1, 0, 1, 0, b""), 0)

    assert (b"", records.RECORD_HEAD_SIZE + records.ADD_FIELDS_SIZE) == (record.data, next_pos)


@pytest.mark.parametrize("opcode", [records.OP_REMOVE, records.OP_OPEN, records.OP_CONFIRM, records.OP_UNREMOVE])
def test_id_records_round_trip(opcode):
    """REMOVE, OPEN, CONFIRM and UNREMOVE carry exactly one u64 id."""
    encoded = records.encode_id_op(opcode, 2**64 - 1)

    record, next_pos = records.decode_at(encoded, 0)

    assert raw_record(opcode, struct.pack("<Q", 2**64 - 1)) == encoded
    assert (opcode, 2**64 - 1, len(encoded)) == (record.opcode, record.item_id, next_pos)


def test_flush_record_round_trip():
    """FLUSH has an empty body and decodes to a FLUSH record."""
    encoded = records.encode_flush()

    record, next_pos = records.decode_at(encoded, 0)

    assert raw_record(records.OP_FLUSH, b"") == encoded
    assert (records.OP_FLUSH, records.RECORD_HEAD_SIZE) == (record.opcode, next_pos)


def test_records_decode_one_after_another_from_offsets():
    """decode_at walks a buffer of several records, each next_pos starting the next."""
    parts = [
        records.encode_add(1, 0, 10, 0, b"a"),
        records.encode_id_op(records.OP_OPEN, 1),
        records.encode_add(2, 0, 11, 0, b"bb"),
        records.encode_id_op(records.OP_UNREMOVE, 1),
        records.encode_flush(),
    ]
    buf = records.encode_header(1) + b"".join(parts)

    pos = records.HEADER_SIZE
    seen = []
    while pos < len(buf):
        record, pos = records.decode_at(buf, pos)
        seen.append((record.opcode, record.item_id))

    expected = [(1, 1), (3, 1), (1, 2), (5, 1), (6, 0)]
    assert expected == seen


# -- INCOMPLETE versus CORRUPT ---------------------------------------------------------------


def test_buffer_ending_inside_the_head_is_incomplete():
    """Fewer than 9 bytes of a record is INCOMPLETE (a torn write), at the same position."""
    encoded = records.encode_add(1, 0, 1, 0, b"data")

    for cut in range(records.RECORD_HEAD_SIZE):
        assert (records.INCOMPLETE, 0) == records.decode_at(encoded[:cut], 0)


def test_buffer_ending_inside_the_body_is_incomplete():
    """A complete head whose body is cut short is INCOMPLETE, never CORRUPT."""
    encoded = records.encode_add(1, 0, 1, 0, b"some data")

    for cut in range(records.RECORD_HEAD_SIZE, len(encoded)):
        assert (records.INCOMPLETE, 0) == records.decode_at(encoded[:cut], 0)


def test_flipped_data_byte_is_corrupt():
    """A complete record whose body does not match its CRC is CORRUPT."""
    damaged = bytearray(records.encode_add(1, 0, 1, 0, b"some data"))
    damaged[-3] ^= 0x40

    assert (records.CORRUPT, 0) == records.decode_at(bytes(damaged), 0)


def test_flipped_crc_byte_is_corrupt():
    """Damage in the CRC field itself is CORRUPT too."""
    damaged = bytearray(records.encode_id_op(records.OP_REMOVE, 8))
    damaged[0] ^= 0x01

    assert (records.CORRUPT, 0) == records.decode_at(bytes(damaged), 0)


@pytest.mark.parametrize("opcode", [0, 7, 0xFF])
def test_unknown_opcode_is_corrupt(opcode):
    """An opcode outside the table is CORRUPT even when its CRC matches."""
    assert (records.CORRUPT, 0) == records.decode_at(raw_record(opcode, b"\0" * 8), 0)


def test_absurd_length_is_corrupt_not_incomplete():
    """A length beyond MAX_BODY is damage, so replay does not wait for a 4 GiB record."""
    head = HEAD.pack(0, records.MAX_BODY + 1, records.OP_ADD)

    assert (records.CORRUPT, 0) == records.decode_at(head + b"\0" * 64, 0)


def test_add_shorter_than_its_fields_is_corrupt():
    """An ADD with a valid CRC but a body shorter than its fixed fields is CORRUPT."""
    assert (records.CORRUPT, 0) == records.decode_at(raw_record(records.OP_ADD, b"\0" * 27), 0)


def test_id_record_of_wrong_length_is_corrupt():
    """An id record whose body is not 8 bytes is CORRUPT even with a valid CRC."""
    assert (records.CORRUPT, 0) == records.decode_at(raw_record(records.OP_CONFIRM, b"\0" * 9), 0)


def test_flush_with_a_body_is_corrupt():
    """A FLUSH record with a body is CORRUPT even with a valid CRC."""
    assert (records.CORRUPT, 0) == records.decode_at(raw_record(records.OP_FLUSH, b"x"), 0)


def test_decode_at_reports_the_offset_it_was_given():
    """INCOMPLETE and CORRUPT come back with the offset of the bad record, for reports."""
    good = records.encode_id_op(records.OP_REMOVE, 1)
    bad = bytearray(records.encode_id_op(records.OP_REMOVE, 2))
    bad[-1] ^= 0xFF
    buf = good + bytes(bad) + records.encode_add(3, 0, 0, 0, b"xyz")[:-1]

    first, after_first = records.decode_at(buf, 0)

    assert (records.OP_REMOVE, len(good)) == (first.opcode, after_first)
    assert (records.CORRUPT, len(good)) == records.decode_at(buf, len(good))
    assert (records.INCOMPLETE, 2 * len(good)) == records.decode_at(buf, 2 * len(good))
