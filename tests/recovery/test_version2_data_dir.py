"""A data directory written before DELIVERIES existed (journal format version 2), or
before ATTRS (version 3), starts: its journals are rewritten in the current version when
opened, its segments are kept as they are (the same ADD and SEAL bytes), and every item
is served."""

import struct
import zlib

import pytest

from recovery_support import CURRENT_VERSION, drain, file_version, journal_file, set_items, write_config

V2_HEADER_BODY = struct.Struct("<4sHHQQ")  # magic, version, reserved, next_id, salt


def as_version(path, version: int) -> None:
    """Rewrite the header's version field and its checksum to match (versions 2 to 4
    share the layout; a file without the newer records is a valid older file)."""
    data = bytearray(path.read_bytes())
    magic, _version, reserved, next_id, salt = V2_HEADER_BODY.unpack_from(data)
    body = V2_HEADER_BODY.pack(magic, version, reserved, next_id, salt)
    data[: V2_HEADER_BODY.size + 4] = body + struct.pack("<I", zlib.crc32(body))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("version", [2, 3])
def test_older_journal_and_segments_are_read_and_the_journal_rewritten(make_server, tmp_path, version):
    # A small memory budget puts most items in segment files (read-behind).
    config = write_config(tmp_path, "[queues.jobs]\nmax_memory_size = 1024\nmax_journal_size = 4096\n")
    server = make_server("--config", str(config))
    payloads = [b"item-%03d-" % i + b"x" * 90 for i in range(200)]
    set_items(server.raw(), "jobs", payloads)
    assert 0 == server.terminate()
    segments = sorted(server.data_dir.glob("jobs.*.seg"))
    assert len(segments) >= 2
    for path in [journal_file(server, "jobs"), *segments]:
        as_version(path, version)

    server.start()

    assert CURRENT_VERSION == file_version(journal_file(server, "jobs").read_bytes())
    assert f"rewritten from format version {version} to {CURRENT_VERSION}" in server.log()
    # Sealed segments are not read whole at start-up, so they keep their old header.
    assert version == file_version(segments[0].read_bytes())
    assert payloads == [data for data, _id in drain(server, "jobs")]
