"""A data directory written by the version 1 format (before the per-record head
checksum and salt) still starts: a real server replays its journal and segments, every
item comes back in order, and each file is rewritten in version 2.  The version 1 files
are laid out here by hand from the format description in ``erqpy/storage/records.py``."""

import struct
import zlib

from recovery_support import CURRENT_VERSION, drain, file_version, journal_file, write_config

OP_ADD, OP_REMOVE, OP_SEAL = 1, 2, 10
TINY = "[queues.default]\nmax_memory_size = 4096\nmax_journal_size = 8192\n"


def v1_file(next_id: int, recs) -> bytes:
    header = struct.pack("<4sHHQ", b"ERQJ", 1, 0, next_id)
    out = [header + struct.pack("<II", zlib.crc32(header), 0)]
    for opcode, body in recs:
        out.append(struct.pack("<IIB", zlib.crc32(bytes((opcode,)) + body), len(body), opcode) + body)
    return b"".join(out)


def add(item_id: int, data: bytes):
    return OP_ADD, struct.pack("<QIqq", item_id, 0, 1_700_000_000_000, 0) + data


def item(n: int) -> bytes:
    return b"old-%02d" % n


def test_version_1_journal_and_segments_come_back_and_are_upgraded(make_server, tmp_path):
    server = make_server("--config", str(write_config(tmp_path, TINY)), start=False)
    server.data_dir.mkdir(parents=True)
    # Items 1-3 in the journal (1 already removed), 4-8 in a sealed segment, 9-10 in the
    # segment still being written when the old server stopped.
    journal_file(server, "q").write_bytes(
        v1_file(1, [add(1, item(1)), add(2, item(2)), add(3, item(3)), (OP_REMOVE, struct.pack("<Q", 1))])
    )
    sealed = [add(i, item(i)) for i in range(4, 9)]
    sealed.append((OP_SEAL, struct.pack("<QQQ", 5, 5 * len(item(4)), 8)))
    (server.data_dir / "q.0000000000000004.seg").write_bytes(v1_file(4, sealed))
    (server.data_dir / "q.0000000000000009.seg").write_bytes(v1_file(9, [add(9, item(9)), add(10, item(10))]))

    server.start()

    files = [journal_file(server, "q"), server.data_dir / "q.0000000000000004.seg",
             server.data_dir / "q.0000000000000009.seg"]
    assert [CURRENT_VERSION] * 3 == [file_version(path.read_bytes()) for path in files]
    assert [item(n) for n in range(2, 11)] == [data for data, _id in drain(server, "q")]
    raw = server.raw()
    assert b"STORED\r\n" == raw.call(b"set q 0 0 3\r\nnew\r\n")
    raw.close()
    assert 0 == server.terminate()
    server.start()
    assert [b"new"] == [data for data, _id in drain(server, "q")]
