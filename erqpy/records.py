"""Journal byte format: pure encode and decode, no files.

A journal file is a header followed by records.  All integers are little-endian.

Header (24 bytes)::

    magic    4s   b"ERQJ"
    version  u16  JOURNAL_VERSION
    reserved u16  0
    next_id  u64  the lowest item id this file may hand out (ids never go backwards,
                  even after a compaction left the file empty)
    crc      u32  crc32 of the 16 bytes above
    pad      u32  0

Record (9-byte head, then the body)::

    crc      u32  crc32 of opcode byte + body
    length   u32  length of the body
    opcode   u8   one of the OP_* values below
    body     length bytes

Opcodes and bodies:

========== == ====================================================================
ADD         1  id u64, flags u32, added_ms i64, expires_ms i64 (0 = never), data
REMOVE      2  id u64: the item left the queue for good (plain get, expiry, discard)
OPEN        3  id u64: the item left the queue as a reliable read
CONFIRM     4  id u64: an open read was confirmed, the item is gone
UNREMOVE    5  id u64: an open read went back to the head of the queue
FLUSH       6  (empty): every waiting item was removed; open reads are untouched
FRONT       7  as ADD: snapshot only; an item given back to the head, out of id order
HELD        8  as ADD: snapshot only; an open read, kept with its data
HEAD        9  id u64: items stored in segment files start at this id (read-behind)
SEAL       10  count u64, bytes u64, last_id u64: closes a segment file (its last record)
========== == ====================================================================

Two kinds of files use this format.  A queue's *journal* (``<q>.journal``) holds every
operation, and the items added while the queue fits in memory.  When a queue grows past
``max_memory_size`` (read-behind), new items go to *segment* files
(``<q>.<first id>.seg``) that hold only ADD records and, once full, a SEAL; the journal
then records only operations on them.  A rewrite of the journal (a snapshot) starts with
HEAD, then HELD, FRONT and ADD records for the items whose data must be kept; segment
files whose ids all fall below HEAD are deleted whole.

Ids name items, so replay does not depend on the order of removes, and a removal whose
item is not where it is expected (after corruption) can still be applied or ignored.

Changing the format: bump ``JOURNAL_VERSION`` on any change to the header or to a record
layout, even an unreleased one; keep the reader for every older version and dispatch on
the header's version in ``journal.replay``; add a test that replays a file written in the
old format.  Version 1 is the first.
"""

import struct
import zlib

JOURNAL_VERSION = 1
MAGIC = b"ERQJ"

_HEADER_BODY = struct.Struct("<4sHHQ")
_HEADER_TAIL = struct.Struct("<II")
HEADER_SIZE = _HEADER_BODY.size + _HEADER_TAIL.size  # 24

_RECORD_HEAD = struct.Struct("<IIB")
RECORD_HEAD_SIZE = _RECORD_HEAD.size  # 9

OP_ADD = 1
OP_REMOVE = 2
OP_OPEN = 3
OP_CONFIRM = 4
OP_UNREMOVE = 5
OP_FLUSH = 6
OP_FRONT = 7
OP_HELD = 8
OP_HEAD = 9
OP_SEAL = 10
OPCODES = frozenset(
    (OP_ADD, OP_REMOVE, OP_OPEN, OP_CONFIRM, OP_UNREMOVE, OP_FLUSH, OP_FRONT, OP_HELD, OP_HEAD, OP_SEAL)
)
ITEM_OPCODES = frozenset((OP_ADD, OP_FRONT, OP_HELD))

_ADD_FIELDS = struct.Struct("<QIqq")
ADD_FIELDS_SIZE = _ADD_FIELDS.size  # 28
_ID = struct.Struct("<Q")
_SEAL = struct.Struct("<QQQ")
SEAL_RECORD_SIZE = 9 + _SEAL.size  # 33: a sealed segment ends with exactly this many bytes

#: A record body longer than this is treated as corruption, not as a huge item; it is
#: above the largest item limit anyone should configure (1 GiB) plus the ADD fields.
MAX_BODY = (1 << 30) + ADD_FIELDS_SIZE

_crc32 = zlib.crc32
_pack_head = _RECORD_HEAD.pack
_pack_add = _ADD_FIELDS.pack
_pack_id = _ID.pack
_unpack_head = _RECORD_HEAD.unpack_from
_unpack_add = _ADD_FIELDS.unpack_from
_unpack_id = _ID.unpack_from
#: crc32 of each opcode byte: every record's checksum starts from its opcode.
_OPCODE_CRC = tuple(_crc32(bytes((opcode,))) for opcode in range(256))


class BadHeader(ValueError):
    """The file does not start with a valid erqpy journal header."""


def encode_header(next_id: int) -> bytes:
    body = _HEADER_BODY.pack(MAGIC, JOURNAL_VERSION, 0, next_id)
    return body + _HEADER_TAIL.pack(_crc32(body), 0)


def decode_header(data: bytes) -> tuple[int, int]:
    """Return ``(version, next_id)`` or raise ``BadHeader``."""
    if len(data) < HEADER_SIZE:
        raise BadHeader("header is truncated")
    magic, version, _reserved, next_id = _HEADER_BODY.unpack_from(data)
    crc, _pad = _HEADER_TAIL.unpack_from(data, _HEADER_BODY.size)
    if magic != MAGIC:
        raise BadHeader(f"bad magic {magic!r}")
    if crc != _crc32(data[: _HEADER_BODY.size]):
        raise BadHeader("header checksum mismatch")
    if version != JOURNAL_VERSION:
        raise BadHeader(f"unsupported journal version {version}")
    return version, next_id


def encode_add(item_id: int, flags: int, added_ms: int, expires_ms: int, data: bytes) -> bytes:
    body = _pack_add(item_id, flags, added_ms, expires_ms)
    crc = _crc32(data, _crc32(body, _OPCODE_CRC[OP_ADD]))
    return _pack_head(crc, ADD_FIELDS_SIZE + len(data), OP_ADD) + body + data


def encode_item(opcode: int, item_id: int, flags: int, added_ms: int, expires_ms: int, data: bytes) -> bytes:
    """An ADD, FRONT or HELD record."""
    body = _pack_add(item_id, flags, added_ms, expires_ms)
    crc = _crc32(data, _crc32(body, _crc32(bytes((opcode,)))))
    return _pack_head(crc, ADD_FIELDS_SIZE + len(data), opcode) + body + data


def encode_seal(count: int, total_bytes: int, last_id: int) -> bytes:
    body = _SEAL.pack(count, total_bytes, last_id)
    return _pack_head(_crc32(body, _crc32(bytes((OP_SEAL,)))), _SEAL.size, OP_SEAL) + body


def decode_seal(record) -> tuple[int, int, int]:
    """``(count, bytes, last_id)`` of a SEAL record."""
    return _SEAL.unpack(record.data)


def encode_id_op(opcode: int, item_id: int) -> bytes:
    body = _pack_id(item_id)
    return _pack_head(_crc32(body, _OPCODE_CRC[opcode]), 8, opcode) + body


def encode_flush() -> bytes:
    return _pack_head(_crc32(bytes((OP_FLUSH,))), 0, OP_FLUSH)


class Record:
    """A decoded record: ``opcode``, ``item_id`` and, for ADD, the item fields."""

    __slots__ = ("opcode", "item_id", "flags", "added_ms", "expires_ms", "data")

    def __init__(self, opcode, item_id=0, flags=0, added_ms=0, expires_ms=0, data=b""):
        self.opcode = opcode
        self.item_id = item_id
        self.flags = flags
        self.added_ms = added_ms
        self.expires_ms = expires_ms
        self.data = data


# Outcomes of decode_at besides a Record.
INCOMPLETE = "incomplete"  # the buffer ends inside this record
CORRUPT = "corrupt"  # the record is complete but fails its checks


def decode_at(buf, pos: int):
    """Decode the record at ``pos`` of ``buf``.

    Returns ``(record, next_pos)`` on success, ``(INCOMPLETE, pos)`` when the buffer ends
    before the record does, and ``(CORRUPT, pos)`` when the head or checksum is wrong.
    """
    end = len(buf)
    if end - pos < RECORD_HEAD_SIZE:
        return INCOMPLETE, pos
    crc, length, opcode = _unpack_head(buf, pos)
    if opcode not in OPCODES or length > MAX_BODY:
        return CORRUPT, pos
    body_start = pos + RECORD_HEAD_SIZE
    body_end = body_start + length
    if body_end > end:
        return INCOMPLETE, pos
    if _crc32(buf[body_start:body_end], _crc32(bytes((opcode,)))) != crc:
        return CORRUPT, pos
    if opcode in ITEM_OPCODES:
        if length < ADD_FIELDS_SIZE:
            return CORRUPT, pos
        item_id, flags, added_ms, expires_ms = _unpack_add(buf, body_start)
        data = bytes(buf[body_start + ADD_FIELDS_SIZE : body_end])
        return Record(opcode, item_id, flags, added_ms, expires_ms, data), body_end
    if opcode == OP_SEAL:
        if length != _SEAL.size:
            return CORRUPT, pos
        return Record(OP_SEAL, data=bytes(buf[body_start:body_end])), body_end
    if opcode == OP_FLUSH:
        return (Record(OP_FLUSH), body_end) if length == 0 else (CORRUPT, pos)
    if length != 8:
        return CORRUPT, pos
    return Record(opcode, _unpack_id(buf, body_start)[0]), body_end
