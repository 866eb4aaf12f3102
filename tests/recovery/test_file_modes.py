"""Permissions of what the server creates (issue 9, item 15): under the common umask 022
the data directory is 0700 and every file in it 0600, so no other local user reads the
payloads; ``[server] file_mode`` and ``dir_mode`` change that."""

import os
import stat

import pytest

from recovery_support import TIMEOUT, write_config

LONG_NAME = "n" * 240  # stored under a hashed stem, with a .name file beside it


def exercise(server):
    """Make the server create every kind of file it has: journals, segments, the long
    name file, a rewritten journal, the paused list, the status file."""
    raw = server.raw()
    try:
        block = b"s" * 4096
        for _ in range(40):  # past max_memory_size: read-behind segments
            assert raw.call(b"set big 0 0 %d\r\n%s\r\n" % (len(block), block), timeout=TIMEOUT) == b"STORED\r\n"
        assert raw.call(b"set %s 0 0 1\r\nx\r\n" % LONG_NAME.encode(), timeout=TIMEOUT) == b"STORED\r\n"
    finally:
        raw.close()
    server.ctl("compact", "big", check=True)
    server.ctl("pause", "big", check=True)
    server.ctl("set-status", "readonly", check=True)


def modes(data_dir):
    found = {}
    for name in os.listdir(data_dir):
        info = os.lstat(os.path.join(data_dir, name))
        found[name] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode))
    return found


@pytest.mark.parametrize("config, file_mode, dir_mode", [
    ("", 0o600, 0o700),
    ("[server]\nfile_mode = 0o640\ndir_mode = 0o750\n", 0o640, 0o750),
])
def test_data_directory_and_files_are_private(make_server, tmp_path, config, file_mode, dir_mode):
    path = write_config(tmp_path, config + "[queues.default]\nmax_memory_size = 16384\n")
    data_dir = tmp_path / "fresh-data"  # does not exist yet: the server creates it
    old_umask = os.umask(0o022)
    try:
        server = make_server("--config", str(path), data_dir=data_dir)
    finally:
        os.umask(old_umask)
    exercise(server)
    assert stat.S_IMODE(os.stat(data_dir).st_mode) == dir_mode
    found = modes(data_dir)
    kinds = {name.rsplit(".", 1)[-1] for name in found}
    assert {"journal", "seg", "name", "json", "lock", "sock"} <= kinds | set(found), found
    assert "status" in found, found
    for name, (kind, mode) in found.items():
        expected = 0o600 if kind == stat.S_IFSOCK else file_mode
        assert mode == expected, f"{name}: 0o{mode:o}, wanted 0o{expected:o}"
    server.ctl("set-status", "up", check=True)


def test_a_mode_the_server_cannot_use_is_refused(make_server, tmp_path):
    path = write_config(tmp_path, "[server]\nfile_mode = 0o400\n")
    server = make_server("--config", str(path), start=False)
    with pytest.raises(RuntimeError, match="file_mode"):
        server.start()
