"""The binary protocol's wire format for the black-box binary tests, written out here
from memcached's ``protocol_binary.h`` rather than imported from erqpy, so that a codec
bug cannot hide itself in the tests."""

import struct
from typing import NamedTuple

HEADER = struct.Struct(">BBHBBHIIQ")

GET, SET, ADD, REPLACE, DELETE, INCREMENT, DECREMENT, QUIT = range(8)
FLUSH, GETQ, NOOP, VERSION, GETK, GETKQ, APPEND, PREPEND, STAT = range(8, 17)
SETQ, ADDQ, REPLACEQ, DELETEQ = range(17, 21)
QUITQ, FLUSHQ = 0x17, 0x18
VERBOSITY, TOUCH = 0x1B, 0x1C
SASL_LIST_MECHS = 0x20

SUCCESS, KEY_ENOENT, E2BIG, EINVAL, NOT_STORED = 0x0000, 0x0001, 0x0003, 0x0004, 0x0005
UNKNOWN_COMMAND, EINTERNAL_STATUS, ETMPFAIL = 0x0081, 0x0084, 0x0086


class Response(NamedTuple):
    magic: int
    opcode: int
    status: int
    opaque: int
    cas: int
    extras: bytes
    key: bytes
    value: bytes

    @property
    def flags(self) -> int:
        return struct.unpack(">I", self.extras)[0]


def request(opcode, key=b"", value=b"", extras=b"", opaque=0, cas=0, magic=0x80) -> bytes:
    body = len(extras) + len(key) + len(value)
    return HEADER.pack(magic, opcode, len(key), len(extras), 0, 0, body, opaque, cas) + extras + key + value


def set_request(key, value, flags=0, exptime=0, opaque=0, quiet=False) -> bytes:
    return request(SETQ if quiet else SET, key, value, struct.pack(">II", flags, exptime), opaque)


def read_response(raw, timeout=10.0) -> Response:
    """One response from a ``RawClient``."""
    header = raw.read_exactly(24, timeout=timeout)
    magic, opcode, key_length, extras_length, _type, status, body, opaque, cas = HEADER.unpack(header)
    payload = raw.read_exactly(body, timeout=timeout) if body else b""
    extras = payload[:extras_length]
    key = payload[extras_length : extras_length + key_length]
    return Response(magic, opcode, status, opaque, cas, extras, key, payload[extras_length + key_length :])


def call(raw, data: bytes, timeout=10.0) -> Response:
    raw.send(data)
    return read_response(raw, timeout)
