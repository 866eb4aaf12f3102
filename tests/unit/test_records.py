"""The journal byte format (erqpy.records): round trips, header checks, the outcomes of a
record that is cut short (INCOMPLETE), damaged in its body (DAMAGED) or in its head
(UNFRAMED), and ``walk``, which must never read a record out of bytes it has not framed.
Expected bytes are built here with struct/zlib from the documented layout, not with the
module under test, so the tests also pin the format down."""

import struct
import zlib

import pytest

from erqpy.storage import records, recordwalk

SALT = 0x1122334455667788
HEAD_SEED = SALT & 0xFFFFFFFF
BODY_SEED = SALT >> 32
FMT = records.V2Format(SALT)
V1_HEAD = struct.Struct("<IIB")


def raw_record(opcode: int, body: bytes, salt: int = SALT, length: int | None = None) -> bytes:
    """A version 2 record as the records docstring lays it out: length u32, opcode u8,
    body_crc u32 (from the salt's high half), head_crc u32 (of those 9 bytes, from its
    low half), body."""
    frame = struct.pack("<IBI", len(body) if length is None else length, opcode, zlib.crc32(body, salt >> 32))
    return frame + struct.pack("<I", zlib.crc32(frame, salt & 0xFFFFFFFF)) + body


def raw_header(version: int = 4, next_id: int = 1, magic: bytes = b"ERQJ", salt: int = SALT) -> bytes:
    body = struct.pack("<4sHHQQ", magic, version, 0, next_id, salt)
    return body + struct.pack("<II", zlib.crc32(body), 0)


def v1_record(opcode: int, body: bytes) -> bytes:
    return V1_HEAD.pack(zlib.crc32(bytes((opcode,)) + body), len(body), opcode) + body


def v1_header(next_id: int = 1) -> bytes:
    body = struct.pack("<4sHHQ", b"ERQJ", 1, 0, next_id)
    return body + struct.pack("<II", zlib.crc32(body), 0)


def add_body(item_id: int, data: bytes) -> bytes:
    return struct.pack("<QIqq", item_id, 0, 1000 + item_id, 0) + data


def walked(fmt, buf):
    return [(event, pos, end, record.opcode if record else None, record.item_id if record else None)
            for event, pos, end, record in recordwalk.walk(fmt, buf, fmt.header_size)]


# -- header ------------------------------------------------------------------------------


def test_header_round_trip_keeps_next_id_and_salt():
    """A header encodes next_id and the salt and decodes back to a format with that salt."""
    encoded = FMT.encode_header(123456789)

    fmt, next_id = records.decode_header(encoded)

    assert records.HEADER_SIZE == len(encoded) == 32
    assert (records.JOURNAL_VERSION, SALT, 123456789) == (fmt.version, fmt.salt, next_id)


def test_header_matches_documented_layout():
    """The header bytes are exactly magic, version, reserved, next_id, salt, crc, pad."""
    assert raw_header(next_id=42) == FMT.encode_header(42)


def test_new_formats_get_different_random_salts():
    """Each new file draws its own salt, which is what a client cannot guess."""
    assert len({records.V2Format().salt for _ in range(8)}) == 8


def test_header_with_wrong_magic_is_refused():
    """A file that is not an erqpy journal is refused with BadHeader naming the magic."""
    with pytest.raises(records.BadHeader, match="magic"):
        records.decode_header(raw_header(magic=b"NOPE"))


def test_header_with_bad_checksum_is_refused():
    """A flipped bit in the header body (the salt included) is caught by the header CRC."""
    for offset in (10, 20):
        damaged = bytearray(FMT.encode_header(7))
        damaged[offset] ^= 0x01
        with pytest.raises(records.BadHeader, match="checksum"):
            records.decode_header(bytes(damaged))


def test_header_with_unknown_version_is_refused():
    """A well-formed header of another format version is refused, not misread."""
    with pytest.raises(records.BadHeader, match="version 5"):
        records.decode_header(raw_header(version=5))


def test_truncated_header_is_refused():
    """Fewer bytes than a header is a BadHeader, not an IndexError."""
    for cut in (0, 3, 10, records.HEADER_SIZE - 1):
        with pytest.raises(records.BadHeader, match="truncated"):
            records.decode_header(FMT.encode_header(1)[:cut])


def test_version_1_header_is_still_read():
    """A version 1 header (old data directories) decodes to the version 1 reader."""
    fmt, next_id = records.decode_header(v1_header(next_id=9))

    assert (1, 24, 9) == (fmt.version, fmt.header_size, next_id)


# -- round trips ---------------------------------------------------------------------------


def test_add_record_round_trip_keeps_every_field():
    """An ADD record decodes to the same id, flags, times and binary data."""
    data = b"binary \r\n\x00\xff payload"
    encoded = FMT.encode_add(99, 0xFFFFFFFF, 1_700_000_000_123, 1_700_000_060_000, data)

    record, next_pos = FMT.decode_at(encoded, 0)

    assert len(encoded) == next_pos
    assert (records.OP_ADD, 99, 0xFFFFFFFF, 1_700_000_000_123, 1_700_000_060_000, data) == (
        record.opcode, record.item_id, record.flags, record.added_ms, record.expires_ms, record.data,
    )


def test_add_record_matches_documented_layout():
    """ADD is head + id u64, flags u32, added_ms i64, expires_ms i64, data."""
    body = struct.pack("<QIqq", 5, 3, 1000, 0) + b"hello"

    assert raw_record(records.OP_ADD, body) == FMT.encode_add(5, 3, 1000, 0, b"hello")
    assert raw_record(records.OP_HELD, body) == FMT.encode_item(records.OP_HELD, 5, 3, 1000, 0, b"hello")


def test_empty_item_round_trips():
    """A zero-length item is a valid ADD record."""
    record, next_pos = FMT.decode_at(FMT.encode_add(1, 0, 1, 0, b""), 0)

    assert (b"", records.RECORD_HEAD_SIZE + records.ADD_FIELDS_SIZE) == (record.data, next_pos)


@pytest.mark.parametrize("opcode", [records.OP_REMOVE, records.OP_OPEN, records.OP_CONFIRM, records.OP_UNREMOVE])
def test_id_records_round_trip(opcode):
    """REMOVE, OPEN, CONFIRM and UNREMOVE carry exactly one u64 id."""
    encoded = FMT.encode_id_op(opcode, 2**64 - 1)

    record, next_pos = FMT.decode_at(encoded, 0)

    assert raw_record(opcode, struct.pack("<Q", 2**64 - 1)) == encoded
    assert (opcode, 2**64 - 1, len(encoded)) == (record.opcode, record.item_id, next_pos)


def test_flush_and_seal_records_round_trip():
    """FLUSH has an empty body; SEAL carries count, bytes and last id."""
    flush, seal = FMT.encode_flush(), FMT.encode_seal(3, 300, 77)

    assert raw_record(records.OP_FLUSH, b"") == flush
    assert records.SEAL_RECORD_SIZE == len(seal)
    assert (records.OP_FLUSH, records.RECORD_HEAD_SIZE) == (FMT.decode_at(flush, 0)[0].opcode, FMT.decode_at(flush, 0)[1])
    assert (3, 300, 77) == records.decode_seal(FMT.decode_at(seal, 0)[0])


def test_a_record_of_another_salt_does_not_decode():
    """The same record written for another file (another salt) fails its head check."""
    foreign = records.V2Format(SALT ^ 1).encode_add(1, 0, 1, 0, b"x")

    assert (records.UNFRAMED, 0) == FMT.decode_at(foreign, 0)


# -- INCOMPLETE, DAMAGED, UNFRAMED -------------------------------------------------------------


def test_buffer_ending_inside_the_head_is_incomplete():
    """Fewer than 13 bytes of a record is INCOMPLETE (a torn write), at the same position."""
    encoded = FMT.encode_add(1, 0, 1, 0, b"data")

    for cut in range(records.RECORD_HEAD_SIZE):
        assert (records.INCOMPLETE, 0) == FMT.decode_at(encoded[:cut], 0)


def test_buffer_ending_inside_the_body_is_incomplete():
    """A valid head whose body is cut short is INCOMPLETE, never damage."""
    encoded = FMT.encode_add(1, 0, 1, 0, b"some data")

    for cut in range(records.RECORD_HEAD_SIZE, len(encoded)):
        assert (records.INCOMPLETE, 0) == FMT.decode_at(encoded[:cut], 0)


def test_flipped_body_byte_is_damaged_with_a_trusted_end():
    """A body that fails its CRC under a valid head is DAMAGED, and the end is known."""
    damaged = bytearray(FMT.encode_add(1, 0, 1, 0, b"some data"))
    damaged[-3] ^= 0x40

    assert (records.DAMAGED, len(damaged)) == FMT.decode_at(bytes(damaged), 0)


@pytest.mark.parametrize("offset", range(records.RECORD_HEAD_SIZE))
def test_any_flipped_head_byte_is_unframed(offset):
    """Damage anywhere in the head (length, opcode, either CRC) leaves no trusted frame."""
    damaged = bytearray(FMT.encode_id_op(records.OP_REMOVE, 8))
    damaged[offset] ^= 0x01

    assert (records.UNFRAMED, 0) == FMT.decode_at(bytes(damaged), 0)


@pytest.mark.parametrize("opcode", [0, 11, 0xFF])
def test_unknown_opcode_under_a_valid_head_is_damaged(opcode):
    """An opcode outside the table is skipped by its (validated) length."""
    assert (records.DAMAGED, records.RECORD_HEAD_SIZE + 8) == FMT.decode_at(raw_record(opcode, b"\0" * 8), 0)


def test_absurd_length_is_unframed_not_incomplete():
    """A length beyond MAX_BODY is damage, so replay does not wait for a 4 GiB record."""
    assert (records.UNFRAMED, 0) == FMT.decode_at(raw_record(records.OP_ADD, b"", length=records.MAX_BODY + 1), 0)


@pytest.mark.parametrize(
    "opcode, body",
    [(records.OP_ADD, b"\0" * 27), (records.OP_CONFIRM, b"\0" * 9), (records.OP_FLUSH, b"x"), (records.OP_SEAL, b"\0" * 8)],
)
def test_body_that_does_not_fit_its_opcode_is_damaged(opcode, body):
    """Valid checksums over a body of the wrong shape: skipped, not misread."""
    assert (records.DAMAGED, records.RECORD_HEAD_SIZE + len(body)) == FMT.decode_at(raw_record(opcode, body), 0)


# -- walk: what recovery does with damage -------------------------------------------------------


def test_walk_skips_a_damaged_body_by_exactly_its_length():
    """Only the damaged record is lost; the record after it is read."""
    first, second, third = (FMT.encode_add(i, 0, i, 0, b"item %d" % i) for i in (1, 2, 3))
    damaged = bytearray(second)
    damaged[-1] ^= 0xFF
    buf = FMT.encode_header(1) + first + bytes(damaged) + third
    at = records.HEADER_SIZE

    assert [
        (recordwalk.RECORD, at, at + len(first), records.OP_ADD, 1),
        (recordwalk.SKIPPED, at + len(first), at + len(first) + len(second), None, None),
        (recordwalk.RECORD, at + len(first) + len(second), len(buf), records.OP_ADD, 3),
    ] == walked(FMT, buf)


def test_walk_never_searches_a_torn_tail():
    """A valid head cut off by the end is a torn tail, even when the bytes after the
    head hold a record (the issue's forged FLUSH): nothing in it is applied."""
    forged = raw_record(records.OP_FLUSH, b"")
    torn = FMT.encode_add(2, 0, 2, 0, b"A" * 64 + forged + b"B" * 4000)[:-2000]
    buf = FMT.encode_header(1) + FMT.encode_add(1, 0, 1, 0, b"kept") + torn

    events = walked(FMT, buf)

    assert [recordwalk.RECORD, recordwalk.TORN] == [e[0] for e in events]
    assert (len(buf) - len(torn), len(buf)) == events[-1][1:3]


def test_walk_after_a_damaged_head_skips_records_forged_in_the_payload():
    """A damaged head makes walk search, and the payload after it holds records that
    are well formed for every guess a client could make (version 1, salt 0, another
    salt): none is taken; the next real record is."""
    forged = (
        v1_record(records.OP_FLUSH, b"")
        + raw_record(records.OP_FLUSH, b"", salt=0)
        + raw_record(records.OP_FLUSH, b"", salt=SALT ^ (1 << 40))
        + raw_record(records.OP_REMOVE, struct.pack("<Q", 1), salt=0)
    )
    victim = bytearray(FMT.encode_add(2, 0, 2, 0, b"A" * 64 + forged + b"B" * 100))
    victim[1] ^= 0x10  # the length
    after = FMT.encode_add(3, 0, 3, 0, b"after")
    buf = FMT.encode_header(1) + FMT.encode_add(1, 0, 1, 0, b"before") + bytes(victim) + after

    events = walked(FMT, buf)

    assert [(recordwalk.RECORD, 1), (recordwalk.SKIPPED, None), (recordwalk.RECORD, 3)] == [(e[0], e[4]) for e in events]
    assert len(buf) - len(after) == events[1][2]


def test_walk_reads_a_payload_full_of_records_as_a_payload():
    """An intact record whose data holds valid records is one ADD; nothing inside applies."""
    inner = FMT.encode_flush() + FMT.encode_id_op(records.OP_REMOVE, 1)
    buf = FMT.encode_header(1) + FMT.encode_add(1, 0, 1, 0, b"x") + FMT.encode_add(2, 0, 2, 0, inner)

    assert [(recordwalk.RECORD, records.OP_ADD, 1), (recordwalk.RECORD, records.OP_ADD, 2)] == [
        (e[0], e[3], e[4]) for e in walked(FMT, buf)
    ]


def test_walk_treats_a_damaged_last_head_as_a_torn_tail():
    """A bad head with nothing valid after it: the rest is cut off as a torn tail."""
    last = bytearray(FMT.encode_add(2, 0, 2, 0, b"last"))
    last[0] ^= 0x01
    buf = FMT.encode_header(1) + FMT.encode_add(1, 0, 1, 0, b"x") + bytes(last)

    assert [recordwalk.RECORD, recordwalk.TORN] == [e[0] for e in walked(FMT, buf)]


# -- version 1 files ---------------------------------------------------------------------------


def test_version_1_records_are_read():
    """The version 1 reader decodes what version 1 wrote."""
    buf = v1_header() + v1_record(records.OP_ADD, add_body(1, b"one")) + v1_record(records.OP_REMOVE, struct.pack("<Q", 1))
    fmt, _next_id = records.decode_header(buf)

    assert [(recordwalk.RECORD, records.OP_ADD, 1), (recordwalk.RECORD, records.OP_REMOVE, 1)] == [
        (e[0], e[3], e[4]) for e in walked(fmt, buf)
    ]


def test_version_1_torn_tail_is_not_searched():
    """The issue's reproduction in a version 1 file: the FLUSH inside the torn payload
    is never applied."""
    torn = v1_record(records.OP_ADD, add_body(2, b"A" * 64 + v1_record(records.OP_FLUSH, b"") + b"B" * 4000))[:-2000]
    buf = v1_header() + v1_record(records.OP_ADD, add_body(1, b"kept")) + torn
    fmt, _next_id = records.decode_header(buf)

    assert [recordwalk.RECORD, recordwalk.TORN] == [e[0] for e in walked(fmt, buf)]


def test_version_1_damaged_payload_is_skipped_by_its_length_when_that_lands_on_a_record():
    buf_records = [v1_record(records.OP_ADD, add_body(i, b"item %d" % i)) for i in (1, 2, 3)]
    damaged = bytearray(buf_records[1])
    damaged[-1] ^= 0xFF
    buf = v1_header() + buf_records[0] + bytes(damaged) + buf_records[2]
    fmt, _next_id = records.decode_header(buf)

    assert [(recordwalk.RECORD, 1), (recordwalk.SKIPPED, None), (recordwalk.RECORD, 3)] == [(e[0], e[4]) for e in walked(fmt, buf)]


def test_version_1_damaged_length_gives_up_instead_of_searching():
    """With no checksum over a version 1 length, a record whose length is damaged gives
    no boundary: the rest is given up (kept in the damaged copy), never searched, so the
    FLUSH forged in its payload is not applied."""
    victim = bytearray(v1_record(records.OP_ADD, add_body(2, b"A" * 64 + v1_record(records.OP_FLUSH, b"") + b"B" * 100)))
    victim[4] ^= 0x01  # the length, now one byte longer or shorter
    buf = v1_header() + v1_record(records.OP_ADD, add_body(1, b"kept")) + bytes(victim) + v1_record(records.OP_ADD, add_body(3, b"x"))
    fmt, _next_id = records.decode_header(buf)

    events = walked(fmt, buf)

    assert [recordwalk.RECORD, recordwalk.GIVEN_UP] == [e[0] for e in events]


def test_v2_encode_record_reencodes_every_kind():
    """Upgrading a file re-encodes each decoded record to an equal record."""
    originals = [
        FMT.encode_add(1, 2, 3, 4, b"data"),
        FMT.encode_item(records.OP_FRONT, 5, 0, 6, 0, b"f"),
        FMT.encode_item(records.OP_HELD, 7, 0, 8, 0, b"h"),
        FMT.encode_id_op(records.OP_HEAD, 9),
        FMT.encode_flush(),
        FMT.encode_seal(1, 2, 3),
    ]
    other = records.V2Format(7)
    for encoded in originals:
        record, _end = FMT.decode_at(encoded, 0)
        again, _end = other.decode_at(other.encode_record(record), 0)
        assert (record.opcode, record.item_id, record.flags, record.added_ms, record.expires_ms, record.data) == (
            again.opcode, again.item_id, again.flags, again.added_ms, again.expires_ms, again.data)


def test_resync_finds_a_record_right_after_damage_and_none_in_a_short_tail():
    """The search looks at every offset after the damaged head, up to the last one that
    can hold a head, and never past the end of the buffer."""
    good = FMT.encode_id_op(records.OP_REMOVE, 5)
    for junk in (b"", b"\x01", b"\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00"):
        buf = b"\xff" + good + junk
        assert 1 == FMT.resync(buf, 0)
        tail = b"\xff" + b"\x00\x00\x00\x00\x01" * 3
        assert FMT.resync(tail, 0) is None


def test_version_2_header_is_read_with_the_same_layout():
    """Version 2 is version 3 without DELIVERIES: same header, same records, same salt."""
    fmt, next_id = records.decode_header(raw_header(version=2, next_id=9))

    assert (2, SALT, 9) == (fmt.version, fmt.salt, next_id)
    assert records.Record is type(fmt.decode_at(FMT.encode_add(5, 1, 2, 0, b"x"), 0)[0])


def test_deliveries_record_round_trips_its_count():
    encoded = FMT.encode_deliveries(77, 3)

    record, end = FMT.decode_at(encoded, 0)

    assert (records.OP_DELIVERIES, 77, 3, len(encoded)) == (record.opcode, record.item_id, record.count, end)
    assert encoded == FMT.encode_record(record)


def test_deliveries_record_with_a_wrong_body_length_is_damaged():
    """A DELIVERIES body is exactly id u64 + count u32; any other length is not trusted."""
    body = struct.pack("<Q", 77)
    frame = struct.pack("<IBI", len(body), records.OP_DELIVERIES, zlib.crc32(body, SALT >> 32))
    encoded = frame + struct.pack("<I", zlib.crc32(frame, SALT & 0xFFFFFFFF)) + body

    assert (records.DAMAGED, len(encoded)) == FMT.decode_at(encoded, 0)
