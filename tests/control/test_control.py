"""The control channel: erqctl commands, debug switching, and who may reach it."""

import json
import os
import socket
import stat
import subprocess
import sys
import tempfile

import pytest

from tests.conftest import queue_waiters, wait_until


def ctl_json(server, *args):
    result = server.ctl("--json", *args)
    return result.returncode, json.loads(result.stdout)


def test_control_socket_is_mode_0600(server):
    """The control socket is created readable and writable by its owner only."""
    mode = stat.S_IMODE(os.stat(server.data_dir / "erqpy.sock").st_mode)

    assert 0o600 == mode


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_control_socket_refuses_other_users(make_server):
    """Another user cannot connect to the control socket, though they can see it."""
    public_dir = tempfile.mkdtemp(prefix="erqpy-ctl-")
    os.chmod(public_dir, 0o755)
    sock_path = os.path.join(public_dir, "ctl.sock")
    make_server("--control-socket", sock_path)
    probe = (
        "import os, socket, sys\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "os.stat(sys.argv[1])\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    print('refused')\n"
        "else:\n    print('connected')\n"
    )

    result = subprocess.run([sys.executable, "-c", probe, sock_path], capture_output=True, text=True, timeout=30)

    assert "refused" == result.stdout.strip(), result.stderr


def test_data_port_refuses_admin_commands_by_default(server, raw):
    """shutdown, status changes and reload are refused on the data port."""
    for command in (b"shutdown\r\n", b"status readonly\r\n", b"reload\r\n"):
        assert b"CLIENT_ERROR admin commands are disabled\r\n" == raw.call(command)

    assert b"UP\r\n" == raw.call(b"status\r\n")
    assert server.proc.poll() is None


def test_debug_on_and_off_switch_the_trace(server, raw):
    """debug on turns on the per-command trace at DEBUG; debug off restores the level."""
    raw.call(b"set quiet 0 0 1\r\nq\r\n")
    assert 0 == server.ctl("debug", "on").returncode
    raw.call(b"set loud 0 0 1\r\nl\r\n")
    wait_until(lambda: "b'loud'" in server.log(), what="the trace of set loud")
    log_on = server.log()
    assert "erqpy.protocol" in log_on and "b'loud'" in log_on
    assert "b'quiet'" not in log_on
    _code, status = ctl_json(server, "status")
    assert status["debug"] is True

    result = server.ctl("debug", "off")
    raw.call(b"set hushed 0 0 1\r\nh\r\n")
    # A line logged after the set: a trace of the set would be in the log before it.
    assert 0 == server.ctl("debug", "off").returncode
    wait_until(lambda: server.log().count("debug off") == 2, what="the second debug off")

    assert "debug off (log level info)" == result.stdout.strip()
    assert "b'hushed'" not in server.log()
    assert ctl_json(server, "status")[1]["debug"] is False


def test_status_reports_generation_hash_and_connections(server, raw):
    """status shows pid, version, connections and the handler generation and hash."""
    code, status = ctl_json(server, "status")

    assert 0 == code
    assert server.proc.pid == status["pid"]
    assert 1 == status["connections"]
    assert 1 == status["handler_generation"]
    assert 64 == len(status["handler_sha256"])
    assert "" == status["last_reload_error"]


def test_stats_queues_flush_and_delete(server, raw):
    """stats, queues, flush and delete act on live queues; delete needs --yes."""
    for n in range(3):
        raw.call(b"set ctlq 0 0 1\r\n%d\r\n" % n)
    assert "ctlq\t3" == server.ctl("queues").stdout.strip()
    _code, stats = ctl_json(server, "stats", "ctlq")
    assert 3 == stats["queues"]["ctlq"]["items"]

    assert "flushed 3 items from ctlq" == server.ctl("flush", "ctlq").stdout.strip()
    assert b"END\r\n" == raw.call(b"get ctlq\r\n")
    refused = server.ctl("delete", "ctlq")
    assert 2 == refused.returncode and "--yes" in refused.stderr
    assert 0 == server.ctl("delete", "ctlq", "--yes").returncode
    assert "" == server.ctl("queues").stdout.strip()
    missing = server.ctl("flush", "nosuch")
    assert 1 == missing.returncode and "no such queue" in missing.stderr


def test_set_status_is_persisted_across_restart(server, raw):
    """A status set through erqctl survives a restart and refuses writes meanwhile."""
    assert 0 == server.ctl("set-status", "readonly").returncode
    assert b"READONLY\r\n" == raw.call(b"status\r\n")
    assert raw.call(b"set ro 0 0 1\r\nx\r\n").startswith(b"SERVER_ERROR")
    raw.close()

    server.restart()
    again = server.raw()

    assert b"READONLY\r\n" == again.call(b"status\r\n")
    assert 0 == server.ctl("set-status", "up").returncode
    assert b"STORED\r\n" == again.call(b"set ro 0 0 1\r\nx\r\n")


def test_items_recovered_at_start_are_frozen_out_of_the_cyclic_collector(server, raw):
    """Issue 12: a full collection walks every tracked object; with millions of items
    recovered it would hold the hub for a second.  Frozen at start, they are skipped
    (and each is still freed by refcounting once read)."""
    count = 20_000
    before = ctl_json(server, "status")[1]["gc_frozen_at_start"]  # the code's objects
    raw.send(b"".join(b"set frozen 0 0 1\r\nx\r\n" for _ in range(count)))
    for _ in range(count):
        assert b"STORED\r\n" == raw.line(timeout=60)
    raw.close()

    server.restart()

    after = ctl_json(server, "status")[1]["gc_frozen_at_start"]
    # The code's own objects differ by a few dozen from one start to the next (what a
    # collection during the start happens to freeze with them): 20,000 items do not.
    assert after >= before + count - 100, (before, after)
    again = server.raw()
    assert b"VALUE frozen 0 1\r\nx\r\nEND\r\n" == again.call(b"get frozen\r\n", b"END\r\n")


def test_shutdown_stops_the_server_gracefully(server):
    """erqctl shutdown makes the server exit with status 0."""
    assert 0 == server.ctl("shutdown").returncode

    assert 0 == server.proc.wait(timeout=20)


def test_erqctl_without_a_server_says_so(tmp_path):
    """erqctl pointed at a directory with no server fails with a clear message."""
    from tests.conftest import _bin

    result = subprocess.run(_bin("erqctl") + ["--data-dir", str(tmp_path), "ping"],
                            capture_output=True, text=True, timeout=30)

    assert 1 == result.returncode
    assert "cannot reach the control channel" in result.stderr


def test_a_command_that_is_not_a_string_is_an_unknown_command(server):
    """A JSON ``cmd`` that cannot be a command name (a list, an object) gets the
    unknown-command reply, and the channel still answers the next request."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(20)
        sock.connect(str(server.data_dir / "erqpy.sock"))
        reader = sock.makefile("rb")
        for cmd in (["ping"], {"ping": 1}):
            sock.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
            reply = json.loads(reader.readline())
            assert reply["ok"] is False and reply["error"].startswith("unknown command"), reply

    assert server.ctl("ping").returncode == 0


def test_tcp_control_needs_the_token(make_server, tmp_path):
    """The optional TCP control listener answers only requests with the right token."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "ctl.toml"
    config.write_text(f'[control]\nhost = "127.0.0.1"\nport = {port}\ntoken = "s3cret"\n')
    make_server("--config", str(config))
    from erqpy.server import control_client

    assert {"ok": False, "error": "bad token"} == control_client.call("ping", host="127.0.0.1", port=port, token="wrong")
    assert control_client.call("ping", host="127.0.0.1", port=port, token="s3cret")["ok"] is True


def test_config_reload_applies_to_live_queues(make_server, tmp_path):
    """reload --config gives live queues their new settings; a bad file is refused
    with file and line, and the running configuration stays."""
    config = tmp_path / "erqpy.toml"
    config.write_text("[queues.small]\nmax_items = 2\n")
    server = make_server("--config", str(config))
    raw = server.raw()
    for n in range(3):
        raw.call(b"set small 0 0 1\r\n%d\r\n" % n)
    assert b"NOT_STORED\r\n" == raw.call(b"set small 0 0 1\r\nx\r\n")

    config.write_text("[queues.small]\nmax_items = 5\n")
    result = server.ctl("reload", "--config")
    assert 0 == result.returncode, result.stderr
    assert "small" in result.stdout
    assert b"STORED\r\n" == raw.call(b"set small 0 0 1\r\nx\r\n")

    config.write_text("[queues.small]\nmax_items = 5\nmax_itemz = 3\n")
    refused = server.ctl("reload", "--config")
    assert 1 == refused.returncode
    assert f"{config}:3" in refused.stderr and "max_itemz" in refused.stderr
    assert b"STORED\r\n" == raw.call(b"set small 0 0 1\r\nx\r\n")
    assert b"STORED\r\n" == raw.call(b"set small 0 0 1\r\nx\r\n")
    assert b"NOT_STORED\r\n" == raw.call(b"set small 0 0 1\r\nx\r\n")


def test_pause_and_resume_a_queue(server, raw):
    """erqctl pause stops gets (writes still work) across a restart; resume wakes a
    blocked reader."""
    raw.call(b"set paused 0 0 1\r\na\r\n")
    assert "paused paused" == server.ctl("pause", "paused").stdout.strip()
    assert b"STORED\r\n" == raw.call(b"set paused 0 0 1\r\nb\r\n")
    assert b"END\r\n" == raw.call(b"get paused\r\n")
    raw.close()
    server.restart()
    blocked = server.raw()
    blocked.send(b"get paused/t=10000\r\n")
    wait_until(lambda: queue_waiters(server, "paused") == 1, what="the get to block")

    assert "paused resumed" == server.ctl("resume", "paused").stdout.strip()

    assert b"VALUE paused/t=10000 0 1\r\na\r\nEND\r\n" == blocked.read_until(b"END\r\n")


def test_tcp_control_host_localhost_is_resolved_to_loopback(make_server, tmp_path):
    """[control] host = "localhost" binds the loopback address the name resolves to
    (it used to stop start-up with an unhandled ValueError)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "ctl.toml"
    config.write_text(f'[control]\nhost = "localhost"\nport = {port}\ntoken = "s3cret"\n')
    make_server("--config", str(config))
    from erqpy.server import control_client

    assert control_client.call("ping", host="localhost", port=port, token="s3cret")["ok"] is True


@pytest.mark.parametrize("host, reason", [
    ("10.1.2.3", "not a loopback address"),
    ("no-such-host.invalid", "does not resolve"),
])
def test_tcp_control_host_that_is_not_loopback_is_a_config_error(tmp_path, host, reason):
    """Any other host is refused before start-up with the key, the file and the line."""
    from erqpy.server.config import build_settings
    from erqpy.errors import ConfigError

    config = tmp_path / "ctl.toml"
    config.write_text(f'[server]\nport = 0\n\n[control]\ntoken = "t"\nhost = "{host}"\n')

    with pytest.raises(ConfigError) as refused:
        build_settings(str(config))

    assert f"{config}:6" == refused.value.where
    assert "control.host" in refused.value.reason and reason in refused.value.reason


def test_gc_policy_freezes_a_growing_heap_and_unfreezes_it_once_drained(server, raw):
    """Issue 12: the survivors of each full collection are frozen while items pile up
    (so no full collection walks them all), and unfrozen once the queue is drained,
    so that cyclic garbage frozen meanwhile is reclaimed; erqctl status shows it."""
    start = ctl_json(server, "status")[1]
    assert start["gc_thresholds"][1:] == [5, 1]
    count = 100_000
    for first in range(0, count, 10_000):
        raw.send(b"".join(b"set heap 0 0 8\r\n%08d\r\n" % n for n in range(first, first + 10_000)))
        for _ in range(10_000):
            assert b"STORED\r\n" == raw.line(timeout=60)
    # The maintenance sweep (once a second) counts the items held in memory.
    assert wait_until(lambda: ctl_json(server, "status")[1]["gc_items_held"] == count, timeout=15, interval=0.2,
                      what=f"the sweep's count of the items ({ctl_json(server, 'status')[1]})")
    grown = ctl_json(server, "status")[1]
    assert grown["gc_heap_grew"] is True and grown["gc_freezes"] > start["gc_freezes"]
    assert grown["gc_unfreezes"] == start["gc_unfreezes"]

    for first in range(0, count, 10_000):
        raw.send(b"get heap\r\n" * 10_000)
        for n in range(first, first + 10_000):
            assert b"VALUE heap 0 8\r\n" == raw.line(timeout=60)
            assert b"%08d\r\n" % n == raw.line(timeout=60)
            assert b"END\r\n" == raw.line(timeout=60)

    # The sweep sees the heap fall back and unfreezes.
    assert wait_until(lambda: ctl_json(server, "status")[1]["gc_unfreezes"] > start["gc_unfreezes"], timeout=15,
                      interval=0.5, what=f"an unfreeze ({ctl_json(server, 'status')[1]})")
    assert ctl_json(server, "status")[1]["gc_heap_grew"] is False
    assert wait_until(lambda: ctl_json(server, "status")[1]["gc_items_held"] == 0, timeout=15, interval=0.2,
                      what="the sweep's count of a drained queue")


def test_traffic_that_leaves_nothing_young_behind_brings_young_collections(make_server, tmp_path):
    """Issue 12: frees take one off the young generation's count as allocations add one,
    so traffic that keeps nothing it allocates (here sets to a queue reading behind: the
    items go to a segment, not to memory; a drain in balance is the same) never starts a
    collection of its own, and the young generation grew until one came.  The server
    collects the young generations every 0.1 s of such traffic (gcpolicy)."""
    config = tmp_path / "erqpy.toml"
    config.write_text("[queues.deep]\nmax_memory_size = 65536\n")
    server = make_server("--config", str(config))
    raw = server.raw()
    before = ctl_json(server, "status")[1]
    assert before["gc_young_collections"] == 0
    kib = b"k" * 1024
    # Bounded: up to 30 rounds of 10,000 pipelined sets (0.1-0.5 s each here), with no
    # status call inside a round (its own allocations bring collections).
    for sent in range(0, 300_000, 10_000):
        raw.send(b"set deep 0 0 1024\r\n%s\r\n" % kib * 10_000)
        for _ in range(10_000):
            assert b"STORED\r\n" == raw.line(timeout=60)
        status = ctl_json(server, "status")[1]
        if status["gc_young_collections"] > 0:
            break
    assert status["gc_young_collections"] > 0, status
    assert status["gc_collections"] >= status["gc_young_collections"]
    stats = raw.call(b"stats\r\n", b"END\r\n")
    assert b"STAT queue_deep_items %d\r\n" % (sent + 10_000) in stats
