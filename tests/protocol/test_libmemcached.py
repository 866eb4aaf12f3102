"""libmemcached, the C client under PHP's Memcached extension, through its command-line
tools (Debian's libmemcached-tools: memcstat, memccp, memccat; ``scripts/ci-deps``
installs them).  They are real programs against a real server."""

import os
import shutil
import subprocess

import pytest

from proto_helpers import get, parse_stats, put

TOOLS = ("memcstat", "memccp", "memccat")
_missing = [tool for tool in TOOLS if shutil.which(tool) is None]
# CI runs as root and scripts/ci-deps installs the tools, so there the tests always run.
pytestmark = pytest.mark.skipif(
    bool(_missing) and os.geteuid() != 0,
    reason=f"{', '.join(_missing)} not installed (Debian: libmemcached-tools; run scripts/ci-deps as root)",
)


def run(tool, srv, *args, cwd=None):
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is missing: run scripts/ci-deps (installs libmemcached-tools)")
    return subprocess.run([tool, f"--servers=127.0.0.1:{srv.port}", *args], capture_output=True,
                          text=True, timeout=30, cwd=cwd)


def test_memcstat_prints_the_server_stats(server):
    """memcstat first asks `version` (libmemcached refused `VERSION 0.1.0`: "strtol() failed
    to parse major version"), then prints every stat."""
    put(server.raw(), "seen", b"x")

    result = run("memcstat", server)

    assert 0 == result.returncode, result.stdout + result.stderr
    assert f"Server: 127.0.0.1 ({server.port})" in result.stdout
    assert "queue_seen_items: 1" in result.stdout
    assert "curr_connections:" in result.stdout


def test_memcstat_args_settings_and_an_unknown_group(server):
    """`memcstat --args=settings` prints `stats settings`; an unknown group fails cleanly
    instead of printing the general stats again."""
    settings = run("memcstat", server, "--args=settings")
    unknown = run("memcstat", server, "--args=malloc")

    assert 0 == settings.returncode, settings.stdout + settings.stderr
    assert f"tcpport: {server.port}" in settings.stdout
    assert "curr_connections" not in settings.stdout
    assert 0 != unknown.returncode
    assert "curr_connections" not in unknown.stdout


def test_memccp_enqueues_a_file_and_memccat_dequeues_it(server, tmp_path):
    """memccp of a file is a `set` of the file's name, memccat a `get`: the file's bytes go
    through the queue once, and a second memccat finds the queue empty."""
    (tmp_path / "jobs").write_bytes(b"line one\nline two\n")

    copied = run("memccp", server, "jobs", cwd=tmp_path)
    stats = parse_stats(server.raw().call(b"stats\r\n", b"END\r\n"))
    first = run("memccat", server, "jobs")
    second = run("memccat", server, "jobs")

    assert 0 == copied.returncode, copied.stdout + copied.stderr
    assert "1" == stats["queue_jobs_items"]
    assert (0, "line one\nline two\n\n") == (first.returncode, first.stdout)  # memccat adds a newline
    assert (1, "") == (second.returncode, second.stdout)  # a miss, as on memcached


def test_memccat_reads_what_a_raw_client_put(server):
    """Items put over the raw protocol come out of memccat in FIFO order."""
    conn = server.raw()
    put(conn, "fifo", b"first", b"second")

    outputs = [run("memccat", server, "fifo").stdout for _ in range(2)]

    assert ["first\n", "second\n"] == outputs
    assert b"END\r\n" == get(conn, "fifo")
    conn.close()
