"""The version 1 record reader, for data directories written before the salt existed.

A version 1 file is read once, when it is opened, and rewritten in the current version.
Its layout: a 24-byte header of magic, version, reserved u16, next_id u64, crc32 of those
16 bytes, pad u32; records of crc u32 (of opcode and body), length u32, opcode u8, body.
Its length is covered by no checksum, so recovery trusts less of it (``V1Format``).
"""

import struct
import zlib

from erqpy.storage.records import (
    INCOMPLETE,
    MAX_BODY,
    OPCODES,
    UNFRAMED,
    V1_HEADER_SIZE,
    SEAL_BODY_SIZE,
    Record,
    body_record,
)

_crc32 = zlib.crc32
V1_HEAD = struct.Struct("<IIB")  # crc, length, opcode
_OPCODE_CRC = tuple(_crc32(bytes((opcode,))) for opcode in range(256))


class V1Format:
    """Decoder of version 1 files, read once and rewritten in the current version.

    A version 1 length is covered by no checksum, so a record that fails its check gives
    no trustworthy boundary.  A record cut off by the end of the file is a torn tail,
    never searched.  A damaged record is skipped by its declared length only when that
    lands exactly on the end of the file or on a record that checks out; otherwise the
    rest of the file is given up (and kept in the damaged copy) rather than searched,
    because a search would read records out of payloads."""

    version = 1
    header_size = V1_HEADER_SIZE
    head_size = V1_HEAD.size
    seal_record_size = V1_HEAD.size + SEAL_BODY_SIZE
    salt = 0

    def decode_at(self, buf, pos: int):
        end = len(buf)
        if end - pos < V1_HEAD.size:
            return INCOMPLETE, pos
        crc, length, opcode = V1_HEAD.unpack_from(buf, pos)
        if opcode not in OPCODES or length > MAX_BODY:
            return UNFRAMED, pos
        body_start = pos + V1_HEAD.size
        body_end = body_start + length
        if body_end > end:
            return INCOMPLETE, pos
        if _crc32(buf[body_start:body_end], _OPCODE_CRC[opcode]) != crc:
            return UNFRAMED, pos
        record = body_record(opcode, buf, body_start, body_end)
        if record is None:
            return UNFRAMED, pos
        return record, body_end

    def resync(self, buf, pos: int):
        _crc, length, opcode = V1_HEAD.unpack_from(buf, pos)
        if opcode not in OPCODES or length > MAX_BODY:
            return None
        landing = pos + V1_HEAD.size + length
        if landing == len(buf):
            return landing
        if landing < len(buf) and isinstance(self.decode_at(buf, landing)[0], Record):
            return landing
        return None
