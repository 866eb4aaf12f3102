"""A data directory written before DELIVERIES existed (journal format version 2) starts:
its journals are rewritten as version 3 when opened, its segments are kept as they are
(the same ADD and SEAL bytes), and every item is served."""

import struct
import zlib

from recovery_support import CURRENT_VERSION, drain, file_version, journal_file, set_items, write_config

V2_HEADER_BODY = struct.Struct("<4sHHQQ")  # magic, version, reserved, next_id, salt


def as_version_2(path) -> None:
    """Rewrite the header's version field to 2 and its checksum to match."""
    data = bytearray(path.read_bytes())
    magic, _version, reserved, next_id, salt = V2_HEADER_BODY.unpack_from(data)
    body = V2_HEADER_BODY.pack(magic, 2, reserved, next_id, salt)
    data[: V2_HEADER_BODY.size + 4] = body + struct.pack("<I", zlib.crc32(body))
    path.write_bytes(bytes(data))


def test_version_2_journal_and_segments_are_read_and_the_journal_rewritten(make_server, tmp_path):
    # A small memory budget puts most items in segment files (read-behind).
    config = write_config(tmp_path, "[queues.jobs]\nmax_memory_size = 1024\nmax_journal_size = 4096\n")
    server = make_server("--config", str(config))
    payloads = [b"item-%03d-" % i + b"x" * 90 for i in range(200)]
    set_items(server.raw(), "jobs", payloads)
    assert 0 == server.terminate()
    segments = sorted(server.data_dir.glob("jobs.*.seg"))
    assert len(segments) >= 2
    for path in [journal_file(server, "jobs"), *segments]:
        as_version_2(path)

    server.start()

    assert CURRENT_VERSION == file_version(journal_file(server, "jobs").read_bytes())
    assert "rewritten from format version 2 to 3" in server.log()
    # Sealed segments are not read whole at start-up, so they keep their version 2 header.
    assert 2 == file_version(segments[0].read_bytes())
    assert payloads == [data for data, _id in drain(server, "jobs")]
