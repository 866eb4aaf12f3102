"""Helpers for the recovery tests: read journals by their documented layout, drain queues
over raw bytes, write small config files, and read the part of a server log written since
a mark.

The journal walker below is written from the format description in ``erqpy/storage/records.py``
(versions 2 and 3: 32-byte header holding the salt; records of length u32, opcode u8, body_crc
u32, head_crc u32, body) with plain struct, so that the tests find record boundaries
without trusting the code under test.
"""

import re
import struct
from pathlib import Path

from tests.conftest import wait_until

HEADER_SIZE = 32
#: The journal format version erqpy writes (records.py; 3 added DELIVERIES, 4 ATTRS).
CURRENT_VERSION = 4
RECORD_HEAD = struct.Struct("<IBII")  # length, opcode, body_crc, head_crc
HEAD_OFFSETS = {"length": 0, "opcode": 4, "body_crc": 5, "head_crc": 9}
# Version 1 (old data directories): 24-byte header, records of crc u32, length u32, opcode u8.
V1_HEADER_SIZE = 24
V1_RECORD_HEAD = struct.Struct("<IIB")
V1_HEAD_OFFSETS = {"crc": 0, "length": 4, "opcode": 8}
OP_ADD = 1
ADD_FIELDS_SIZE = 28
TIMEOUT = 30.0  # seconds for any single reply; generous for a loaded 2-core machine

_VALUE_LINE = re.compile(rb"VALUE (\S+) (\d+) (\d+)(?: (\d+))?\r\n")


def journal_file(server, queue: str) -> Path:
    return server.data_dir / f"{queue}.journal"


def file_version(data: bytes) -> int:
    return struct.unpack_from("<H", data, 4)[0]


def head_size(data: bytes) -> int:
    """Size of a record head in this file (by its header's version)."""
    return RECORD_HEAD.size if file_version(data) >= 2 else V1_RECORD_HEAD.size


def head_offsets(data: bytes) -> dict:
    """Offsets of the head fields in this file's records (by its header's version)."""
    return HEAD_OFFSETS if file_version(data) >= 2 else V1_HEAD_OFFSETS


def record_offsets(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, total size, opcode) of every whole record after the header; reads
    version 1 files too, so a test can be run against the code before version 2."""
    out = []
    v2 = file_version(data) >= 2
    head = RECORD_HEAD if v2 else V1_RECORD_HEAD
    pos = HEADER_SIZE if v2 else V1_HEADER_SIZE
    while pos + head.size <= len(data):
        if v2:
            length, opcode, _body_crc, _head_crc = head.unpack_from(data, pos)
        else:
            _crc, length, opcode = head.unpack_from(data, pos)
        size = head.size + length
        if pos + size > len(data):
            break
        out.append((pos, size, opcode))
        pos += size
    return out


def add_records(data: bytes) -> list[tuple[int, int, bytes]]:
    """(offset, size, item data) of every ADD record."""
    head = head_size(data)
    return [
        (pos, size, data[pos + head + ADD_FIELDS_SIZE : pos + size])
        for pos, size, opcode in record_offsets(data)
        if opcode == OP_ADD
    ]


def read_values(raw, timeout: float = TIMEOUT) -> list[tuple[bytes, int | None]]:
    """Read one get/gets reply up to END: [(data, cas or None)]."""
    values = []
    while True:
        line = raw.line(timeout)
        if line == b"END\r\n":
            return values
        match = _VALUE_LINE.fullmatch(line)
        if match is None:
            raise AssertionError(f"unexpected reply line {line!r}")
        length = int(match.group(3))
        block = raw.read_exactly(length + 2, timeout)
        assert block.endswith(b"\r\n"), block
        cas = int(match.group(4)) if match.group(4) is not None else None
        values.append((block[:-2], cas))


def drain(server, queue: str, batch: int = 50, limit: int = 10_000) -> list[tuple[bytes, int]]:
    """Take every item of ``queue`` with plain ``gets``: [(data, id)] in delivery order.

    Each request names the queue ``batch`` times (one item per key), to drain long
    queues in few round trips."""
    raw = server.raw()
    request = b"gets " + b" ".join([queue.encode()] * batch) + b"\r\n"
    try:
        out = []
        for _ in range(limit):
            raw.send(request)
            values = read_values(raw)
            if not values:
                return out
            out.extend(values)
        raise AssertionError(f"queue {queue} did not drain in {limit} requests")
    finally:
        raw.close()


def set_items(raw, queue: str, payloads) -> None:
    for data in payloads:
        reply = raw.call(b"set %s 0 0 %d\r\n%s\r\n" % (queue.encode(), len(data), data), timeout=TIMEOUT)
        assert b"STORED\r\n" == reply


def queue_stats(server, queue: str) -> dict:
    raw = server.raw()
    try:
        reply = raw.call(b"stats\r\n", b"END\r\n", timeout=TIMEOUT)
    finally:
        raw.close()
    prefix = f"STAT queue_{queue}_"
    out = {}
    for line in reply.decode().splitlines():
        if line.startswith(prefix):
            key, value = line[len(prefix):].split(" ", 1)
            out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


def write_config(directory: Path, text: str) -> Path:
    path = Path(directory) / "erqpy-test.toml"
    path.write_text(text)
    return path


def log_mark(server) -> int:
    return len(server.log())


def log_since(server, mark: int) -> str:
    return server.log()[mark:]


def wait_for(predicate, timeout: float = TIMEOUT, what: str = "condition"):
    """The shared poll, with the recovery tests' default timeout."""
    return wait_until(predicate, timeout, what, interval=0.05)
