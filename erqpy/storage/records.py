"""Journal byte format: pure encode and decode, no files.

A journal file is a header followed by records.  All integers are little-endian.

Header, versions 2 to 4 (32 bytes)::

    magic    4s   b"ERQJ"
    version  u16  4 (3: before ATTRS; 2: before DELIVERIES; the same layout)
    reserved u16  0
    next_id  u64  the lowest item id this file may hand out (ids never go backwards,
                  even after a compaction left the file empty)
    salt     u64  random, chosen when the file is created; kept by rewrites
    crc      u32  crc32 of the 24 bytes above
    pad      u32  0

Record, versions 2 to 4 (13-byte head, then the body)::

    length   u32  length of the body
    opcode   u8   one of the OP_* values below
    body_crc u32  crc32 of the body, started from the high half of the salt
    head_crc u32  crc32 of the 9 bytes above, started from the low half of the salt
    body     length bytes

Why two checksums and a salt.  Recovery must never read meaning into bytes whose frame
it has not validated: a record's body is whatever a client sent, so it can hold bytes
that look exactly like records.  ``head_crc`` validates the frame (length and opcode)
apart from the body, so a record whose body is damaged is skipped by exactly its
length, and a torn last record (a crash mid-write) is recognised as such and cut off,
never searched.  Only when a head itself is damaged must recovery search the bytes
after it for the next record, and those bytes may be the damaged record's body, or the
body of a later one.  The salt makes that search sound: a client never sees it, so a
record it forges inside a payload passes both checks only by guessing 64 secret bits,
and random bytes pass by the same 1 in 2**64 (SQLite's WAL salts, used here against
forged rather than stale frames).  The salt is as secret as the data files are (no
reply, stat or log shows it); whoever can read those can rewrite them anyway.  The alternatives were weaker: skipping a damaged
record's declared length trusts an unvalidated length; accepting a candidate followed
by N valid records is fooled by a payload that forges N records and ends where the next
real record starts.

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
DELIVERIES 11  id u64, count u32: snapshot only (version 3); how often the item before it
               (a HELD or FRONT record) was handed out as a reliable read
ATTRS      12  id u64, due_ms i64 (0 = now), priority u8 (version 4): the item record or
               UNREMOVE of this id that follows carries these (a delayed or prioritised
               item); written just before it, so a torn write loses both or neither
========== == ====================================================================

An item without ATTRS is due at once and has the default priority: a queue that never
sees a delay or a priority writes exactly the records of version 3.  A delayed item's
ADD stays in the journal (it never spills to a segment); it becomes visible when due
without a record: replay finds its due time in ATTRS again.

Two kinds of files use this format.  A queue's *journal* (``<q>.journal``) holds every
operation, and the items added while the queue fits in memory.  When a queue grows past
``max_memory_size`` (read-behind), new items go to *segment* files
(``<q>.<first id>.seg``) that hold only ADD records and, once full, a SEAL; the journal
then records only operations on them.  A rewrite of the journal (a snapshot) starts with
HEAD, then HELD, FRONT and ADD records for the items whose data must be kept; segment
files whose ids all fall below HEAD are deleted whole.

An item's delivery count (``max_deliveries``) is not written on each delivery: replay
counts an item's OPEN records, and a snapshot, which drops those, writes the count so
far as DELIVERIES after the item's HELD or FRONT record.  Only those items can have been
delivered: an item that was never handed out is still in id order.

Ids name items, so replay does not depend on the order of removes, and a removal whose
item is not where it is expected (after corruption) can still be applied or ignored.

Version 3 is version 4 without ATTRS, and version 2 is version 3 without DELIVERIES; a version 2 journal is rewritten as version 3
when it is opened, and version 2 segments (ADD and SEAL only, the same bytes) are kept.

Version 1 (read only, rewritten when opened): ``records_v1``.

Changing the format: bump ``JOURNAL_VERSION`` on any change to the header or to a record
layout, even an unreleased one; keep a reader for every older version, chosen by the
header's version in ``decode_header``; add a test that replays a file written in the old
format.
"""

import os
import re
import struct
import zlib

JOURNAL_VERSION = 4
#: Header versions read by ``V2Format``: the same header and record layouts.
SALTED_VERSIONS = (2, 3, 4)
MAGIC = b"ERQJ"

_MAGIC_VERSION = struct.Struct("<4sH")
_V1_HEADER_BODY = struct.Struct("<4sHHQ")
_V2_HEADER_BODY = struct.Struct("<4sHHQQ")
_HEADER_TAIL = struct.Struct("<II")
V1_HEADER_SIZE = _V1_HEADER_BODY.size + _HEADER_TAIL.size  # 24
HEADER_SIZE = _V2_HEADER_BODY.size + _HEADER_TAIL.size  # 32, the current version's

_FRAME = struct.Struct("<IBI")  # length, opcode, body_crc: what head_crc covers
_U32 = struct.Struct("<I")
RECORD_HEAD_SIZE = _FRAME.size + 4  # 13

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
OP_DELIVERIES = 11
OP_ATTRS = 12
OPCODES = frozenset(
    (OP_ADD, OP_REMOVE, OP_OPEN, OP_CONFIRM, OP_UNREMOVE, OP_FLUSH, OP_FRONT, OP_HELD, OP_HEAD, OP_SEAL,
     OP_DELIVERIES, OP_ATTRS)
)
ITEM_OPCODES = frozenset((OP_ADD, OP_FRONT, OP_HELD))

_ADD_FIELDS = struct.Struct("<QIqq")
ADD_FIELDS_SIZE = _ADD_FIELDS.size  # 28
ADD_RECORD_OVERHEAD = RECORD_HEAD_SIZE + ADD_FIELDS_SIZE  # an ADD record without its data: 41
_ID = struct.Struct("<Q")
_SEAL = struct.Struct("<QQQ")
_DELIVERIES = struct.Struct("<QI")
_ATTRS = struct.Struct("<QqB")
SEAL_BODY_SIZE = _SEAL.size
SEAL_RECORD_SIZE = RECORD_HEAD_SIZE + SEAL_BODY_SIZE  # 37: a sealed segment ends with this many bytes

#: A record body longer than this is treated as corruption, not as a huge item; it is
#: above the largest item limit anyone should configure (1 GiB) plus the ADD fields.
MAX_BODY = (1 << 30) + ADD_FIELDS_SIZE

_crc32 = zlib.crc32
_pack_frame = _FRAME.pack
_pack_u32 = _U32.pack
_pack_add = _ADD_FIELDS.pack
_pack_id = _ID.pack
_unpack_frame = _FRAME.unpack_from
_unpack_u32 = _U32.unpack_from
_unpack_add = _ADD_FIELDS.unpack_from
_unpack_id = _ID.unpack_from


class BadHeader(ValueError):
    """The file does not start with a valid erqpy journal header."""


class Record:
    """A decoded record: ``opcode``, ``item_id`` and, for ADD, the item fields.
    DELIVERIES keeps its count in ``flags`` (read it as ``count``); ATTRS its priority
    in ``flags`` and its due time in ``added_ms`` (``priority``, ``due_ms``)."""

    __slots__ = ("opcode", "item_id", "flags", "added_ms", "expires_ms", "data")

    def __init__(self, opcode, item_id=0, flags=0, added_ms=0, expires_ms=0, data=b""):
        self.opcode = opcode
        self.item_id = item_id
        self.flags = flags
        self.added_ms = added_ms
        self.expires_ms = expires_ms
        self.data = data

    @property
    def count(self) -> int:
        return self.flags

    @property
    def priority(self) -> int:
        return self.flags

    @property
    def due_ms(self) -> int:
        return self.added_ms


# Outcomes of decode_at besides a Record.
INCOMPLETE = "incomplete"  # the buffer ends inside this record (a torn tail, in a whole file)
DAMAGED = "damaged"  # the frame is valid, the body is not: skip to the frame's end
UNFRAMED = "unframed"  # the head fails its check: where the next record starts is unknown


def body_record(opcode, buf, body_start, body_end):
    """The Record for a checked body, or None when the body does not fit the opcode."""
    length = body_end - body_start
    if opcode in ITEM_OPCODES:
        if length < ADD_FIELDS_SIZE:
            return None
        item_id, flags, added_ms, expires_ms = _unpack_add(buf, body_start)
        data = bytes(buf[body_start + ADD_FIELDS_SIZE : body_end])
        return Record(opcode, item_id, flags, added_ms, expires_ms, data)
    if opcode == OP_SEAL:
        return Record(OP_SEAL, data=bytes(buf[body_start:body_end])) if length == _SEAL.size else None
    if opcode == OP_FLUSH:
        return Record(OP_FLUSH) if length == 0 else None
    if opcode == OP_DELIVERIES:
        if length != _DELIVERIES.size:
            return None
        item_id, count = _DELIVERIES.unpack_from(buf, body_start)
        return Record(OP_DELIVERIES, item_id, flags=count)
    if opcode == OP_ATTRS:
        if length != _ATTRS.size:
            return None
        item_id, due_ms, priority = _ATTRS.unpack_from(buf, body_start)
        return Record(OP_ATTRS, item_id, flags=priority, added_ms=due_ms)
    if length != 8:
        return None
    return Record(opcode, _unpack_id(buf, body_start)[0])


#: A version 2 or 3 head can start only where the length's top byte keeps it within
#: MAX_BODY (2**30 + 28, so at most 0x40) and the opcode byte is in the table (1 to 12).
_CANDIDATE_HEAD = re.compile(rb"(?=...[\x00-\x40][\x01-\x0c])", re.DOTALL)
assert max(OPCODES) == 0x0C and MAX_BODY >> 24 == 0x40


class V2Format:
    """Encoder and decoder of version 2 and 3 records for one file (its salt).  It
    encodes the current version; ``version`` is the one of the file it was read from."""

    header_size = HEADER_SIZE
    head_size = RECORD_HEAD_SIZE
    seal_record_size = SEAL_RECORD_SIZE

    __slots__ = ("salt", "version", "_head_seed", "_body_seed")

    def __init__(self, salt: int | None = None, version: int = JOURNAL_VERSION):
        self.version = version
        if salt is None:
            salt = int.from_bytes(os.urandom(8), "little")
        self.salt = salt
        self._head_seed = salt & 0xFFFFFFFF
        self._body_seed = salt >> 32

    # -- encoding -------------------------------------------------------------------

    def encode_header(self, next_id: int) -> bytes:
        body = _V2_HEADER_BODY.pack(MAGIC, JOURNAL_VERSION, 0, next_id, self.salt)
        return body + _HEADER_TAIL.pack(_crc32(body), 0)

    def _frame(self, opcode: int, length: int, body_crc: int) -> bytes:
        frame = _pack_frame(length, opcode, body_crc)
        return frame + _pack_u32(_crc32(frame, self._head_seed))

    def encode_add(self, item_id: int, flags: int, added_ms: int, expires_ms: int, data: bytes) -> bytes:
        fields = _pack_add(item_id, flags, added_ms, expires_ms)
        body_crc = _crc32(data, _crc32(fields, self._body_seed))
        frame = _pack_frame(ADD_FIELDS_SIZE + len(data), OP_ADD, body_crc)
        return frame + _pack_u32(_crc32(frame, self._head_seed)) + fields + data

    def encode_item(
        self, opcode: int, item_id: int, flags: int, added_ms: int, expires_ms: int, data: bytes
    ) -> bytes:
        """An ADD, FRONT or HELD record."""
        fields = _pack_add(item_id, flags, added_ms, expires_ms)
        body_crc = _crc32(data, _crc32(fields, self._body_seed))
        return self._frame(opcode, ADD_FIELDS_SIZE + len(data), body_crc) + fields + data

    def encode_id_op(self, opcode: int, item_id: int) -> bytes:
        # _frame, inlined: every get encodes one (a REMOVE).
        body = _pack_id(item_id)
        frame = _pack_frame(8, opcode, _crc32(body, self._body_seed))
        return frame + _pack_u32(_crc32(frame, self._head_seed)) + body

    def encode_flush(self) -> bytes:
        return self._frame(OP_FLUSH, 0, _crc32(b"", self._body_seed))

    def encode_deliveries(self, item_id: int, count: int) -> bytes:
        body = _DELIVERIES.pack(item_id, count)
        return self._frame(OP_DELIVERIES, _DELIVERIES.size, _crc32(body, self._body_seed)) + body

    def encode_attrs(self, item_id: int, due_ms: int, priority: int) -> bytes:
        body = _ATTRS.pack(item_id, due_ms, priority)
        return self._frame(OP_ATTRS, _ATTRS.size, _crc32(body, self._body_seed)) + body

    def encode_seal(self, count: int, total_bytes: int, last_id: int) -> bytes:
        body = _SEAL.pack(count, total_bytes, last_id)
        return self._frame(OP_SEAL, _SEAL.size, _crc32(body, self._body_seed)) + body

    def encode_record(self, record: Record) -> bytes:
        """Re-encode a decoded record (upgrading a file from an older version)."""
        opcode = record.opcode
        if opcode in ITEM_OPCODES:
            return self.encode_item(
                opcode, record.item_id, record.flags, record.added_ms, record.expires_ms, record.data
            )
        if opcode == OP_SEAL:
            return self._frame(OP_SEAL, len(record.data), _crc32(record.data, self._body_seed)) + record.data
        if opcode == OP_FLUSH:
            return self.encode_flush()
        if opcode == OP_DELIVERIES:
            return self.encode_deliveries(record.item_id, record.count)
        if opcode == OP_ATTRS:
            return self.encode_attrs(record.item_id, record.due_ms, record.priority)
        return self.encode_id_op(opcode, record.item_id)

    # -- decoding -------------------------------------------------------------------

    def frame_length(self, buf, pos: int):
        """Head and body size of the record at ``pos`` if its head is whole and valid."""
        if len(buf) - pos < RECORD_HEAD_SIZE:
            return None
        length, _opcode, _body_crc = _unpack_frame(buf, pos)
        if _crc32(buf[pos : pos + _FRAME.size], self._head_seed) != _unpack_u32(buf, pos + _FRAME.size)[0]:
            return None
        return RECORD_HEAD_SIZE + length

    def decode_at(self, buf, pos: int):
        """Decode the record at ``pos`` of ``buf``.

        Returns ``(record, next_pos)``; ``(INCOMPLETE, pos)`` when the buffer ends first
        (inside the head, or after a valid head inside the body); ``(DAMAGED, next_pos)``
        when the head is valid and the body is not; ``(UNFRAMED, pos)`` when the head
        fails its check.
        """
        end = len(buf)
        if end - pos < RECORD_HEAD_SIZE:
            return INCOMPLETE, pos
        length, opcode, body_crc = _unpack_frame(buf, pos)
        if _crc32(buf[pos : pos + _FRAME.size], self._head_seed) != _unpack_u32(buf, pos + _FRAME.size)[0]:
            return UNFRAMED, pos
        if length > MAX_BODY:
            return UNFRAMED, pos
        body_start = pos + RECORD_HEAD_SIZE
        body_end = body_start + length
        if body_end > end:
            return INCOMPLETE, pos
        if opcode not in OPCODES or _crc32(buf[body_start:body_end], self._body_seed) != body_crc:
            return DAMAGED, body_end
        record = body_record(opcode, buf, body_start, body_end)
        if record is None:
            return DAMAGED, body_end
        return record, body_end

    def resync(self, buf, pos: int):
        """The offset of the first whole, valid record after the unframed head at
        ``pos``, or None.  Sound because of the salt (module docstring): a candidate
        inside a payload passes only with the file's secret seeds."""
        head_seed = self._head_seed
        frame_size = _FRAME.size
        last = len(buf) - RECORD_HEAD_SIZE
        # The regex finds, in C, the offsets whose length could be at most MAX_BODY and
        # whose opcode byte is a known one; only those pay for a checksum.
        for match in _CANDIDATE_HEAD.finditer(buf, pos + 1, last + RECORD_HEAD_SIZE):
            candidate = match.start()
            if candidate > last:
                break  # fewer bytes left than a head
            head_crc = _unpack_u32(buf, candidate + frame_size)[0]
            if _crc32(buf[candidate : candidate + frame_size], head_seed) != head_crc:
                continue
            record, _next = self.decode_at(buf, candidate)
            if isinstance(record, Record):
                return candidate
        return None


def decode_header(data: bytes):
    """Return ``(format, next_id)`` (a ``V2Format`` or ``V1Format``) or raise ``BadHeader``."""
    if len(data) < _MAGIC_VERSION.size:
        raise BadHeader("header is truncated")
    magic, version = _MAGIC_VERSION.unpack_from(data)
    if magic != MAGIC:
        raise BadHeader(f"bad magic {magic!r}")
    if version in SALTED_VERSIONS:
        body_struct = _V2_HEADER_BODY
    elif version == 1:
        body_struct = _V1_HEADER_BODY
    else:
        raise BadHeader(f"unsupported journal version {version}")
    if len(data) < body_struct.size + _HEADER_TAIL.size:
        raise BadHeader("header is truncated")
    crc, _pad = _HEADER_TAIL.unpack_from(data, body_struct.size)
    if crc != _crc32(data[: body_struct.size]):
        raise BadHeader("header checksum mismatch")
    if version in SALTED_VERSIONS:
        _magic, _version, _reserved, next_id, salt = body_struct.unpack_from(data)
        return V2Format(salt, version), next_id
    from erqpy.storage.records_v1 import V1Format  # cold: only old data directories

    _magic, _version, _reserved, next_id = body_struct.unpack_from(data)
    return V1Format(), next_id


def decode_seal(record) -> tuple[int, int, int]:
    """``(count, bytes, last_id)`` of a SEAL record."""
    return _SEAL.unpack(record.data)
