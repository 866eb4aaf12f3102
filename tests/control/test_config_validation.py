"""A bad configuration file is refused as a whole, at start and at reload, naming the
file, the line and the reason; plugin tables included (the erqpy-http and erqpy-statsd
plugins check theirs through ``validate_config``).  And ``erqctl reload`` / SIGHUP read
the file as well as the code."""

import json
import signal
import subprocess
import textwrap

import pytest

from tests.conftest import _bin, wait_until

START_TIMEOUT = 30.0

GOOD = "[queues.q]\nmax_items = 3\n"

# (file text, line of the fault, part of the reason)
BAD_FILES = {
    "misspelled-queues-table": (
        "[queues.default]\nmax_items = 9\n\n[queue.jobs]\nmax_items = 3\n", 4,
        "unknown table [queue.jobs] (did you mean [queues.jobs]?)",
    ),
    "misspelled-server-table": ("[sever]\nport = 1\n", 1, "unknown table [sever] (did you mean [server]?)"),
    "expire-to-bad-name": (
        '[queues.q]\nmax_age = 1\nexpire_to = "bad name"\n', 3, "expire_to must be a queue name, not 'bad name'",
    ),
    "expire-to-itself": (
        '[queues.loop]\nmax_age = 1\nexpire_to = "loop"\n', 3, "expire_to names the queue itself",
    ),
    "expire-to-itself-by-default": (
        '[queues.default]\nmax_age = 1\nexpire_to = "dead"\n', 3,
        "also applies to queue 'dead' itself",
    ),
    "expire-to-cycle": (
        '[queues.a]\nexpire_to = "b"\n\n[queues.b]\nexpire_to = "a"\n', 5, "expire_to makes a cycle (a -> b -> a)",
    ),
    "max-deliveries-negative": ("[queues.q]\nmax_deliveries = -1\n", 2, "max_deliveries must be an integer >= 0"),
    "dead-letter-to-bad-name": ('[queues.q]\ndead_letter_to = "a/b"\n', 2, "dead_letter_to must be a queue name"),
    "dead-letter-to-itself": (
        '[queues.q]\nmax_deliveries = 2\ndead_letter_to = "q"\n', 3, "dead_letter_to names the queue itself",
    ),
    "toml-syntax": ("[queues.q]\nmax_items = 3\n[queues.r\n", 3, "Expected ']'"),
    "http-unknown-key": ("[http]\nport = 0\nprot = 22180\n", 3, "unknown setting 'prot' in [http]"),
    "http-public-without-token": (
        '[http]\nport = 0\nhost = "0.0.0.0"\n', 3, "http.host '0.0.0.0' is not a loopback address",
    ),
    "http-bad-port": ("[http]\nport = 70000\n", 2, "http.port must be 0 to 65535"),
    "unknown-plugin-table": ("[plugins.statsdd]\nport = 8125\n", 1, "[plugins.statsdd] is for no installed plugin"),
    "statsd-bad-port": ("[plugins.statsd]\nport = 0\n", 2, "statsd port must be 1 to 65535"),
    "enabled-unknown-plugin": ('[plugins]\nenabled = ["htp"]\n', 2, "not an installed plugin (did you mean 'http'?)"),
}


def serve(tmp_path, config) -> subprocess.CompletedProcess:
    """``erqpy serve`` on port 0 with ``config``; a refused file makes it exit."""
    cmd = _bin("erqpy") + ["serve", "--host", "127.0.0.1", "--port", "0",
                           "--data-dir", str(tmp_path / "data"), "--config", str(config)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=START_TIMEOUT)


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_refuses_the_start_with_file_line_and_reason(tmp_path, case):
    """The server does not start (it used to ignore misspelled tables, drop expired
    items, or start without the HTTP API); stderr names file:line: reason."""
    text, line, reason = BAD_FILES[case]
    config = tmp_path / "erqpy.toml"
    config.write_text(text)

    result = serve(tmp_path, config)

    assert 0 != result.returncode
    assert "listening on" not in result.stdout
    assert f"{config}:{line}: " in result.stderr and reason in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def qset(raw, queue: bytes, value: bytes) -> bytes:
    return raw.call(b"set %s 0 0 %d\r\n%s\r\n" % (queue, len(value), value))


@pytest.mark.parametrize("case", ["misspelled-queues-table", "expire-to-itself", "http-unknown-key",
                                  "http-public-without-token", "unknown-plugin-table"])
def test_erqctl_reload_of_a_bad_file_keeps_the_running_config(make_server, tmp_path, case):
    """`erqctl reload` refuses the file (exit 1, file:line: reason) and the queue keeps
    the limit it had; after the file is fixed, the next reload applies it."""
    config = tmp_path / "erqpy.toml"
    config.write_text(GOOD)
    server = make_server("--config", str(config))
    raw = server.raw()
    assert [b"STORED\r\n"] * 3 == [qset(raw, b"q", b"%d" % i) for i in range(3)]
    text, line, reason = BAD_FILES[case]
    config.write_text(GOOD.replace("3", "10") + "\n" + text)
    line += GOOD.count("\n") + 1

    refused = server.ctl("reload")

    assert 1 == refused.returncode
    assert f"{config}:{line}: " in refused.stderr and reason in refused.stderr, refused.stderr
    assert b"NOT_STORED\r\n" == qset(raw, b"q", b"over")
    status = json.loads(server.ctl("--json", "status", check=True).stdout)
    assert reason in status["last_config_error"]
    config.write_text(GOOD.replace("3", "10"))
    server.ctl("reload", check=True)
    assert b"STORED\r\n" == qset(raw, b"q", b"fits")
    raw.close()


def test_erqctl_reload_reads_the_file_and_the_code(make_server, tmp_path):
    """Plain `erqctl reload` (what systemd's ExecReload runs) applies a config edit: it
    used to reload code only, so a changed limit waited for `reload --config`."""
    config = tmp_path / "erqpy.toml"
    config.write_text(GOOD)
    server = make_server("--config", str(config))
    raw = server.raw()
    assert [b"STORED\r\n"] * 3 == [qset(raw, b"q", b"%d" % i) for i in range(3)]
    config.write_text(GOOD.replace("3", "4"))

    reply = json.loads(server.ctl("--json", "reload", check=True).stdout)

    assert reply["ok"] and ["q"] == reply["changed_queues"] and 2 == reply["generation"]
    assert [b"STORED\r\n", b"NOT_STORED\r\n"] == [qset(raw, b"q", b"x"), qset(raw, b"q", b"y")]
    raw.close()


def test_sighup_reads_the_file_too(make_server, tmp_path):
    """SIGHUP is `erqctl reload`: a raised max_items takes effect without erqctl."""
    config = tmp_path / "erqpy.toml"
    config.write_text(GOOD)
    server = make_server("--config", str(config))
    raw = server.raw()
    assert [b"STORED\r\n"] * 3 == [qset(raw, b"q", b"%d" % i) for i in range(3)]
    config.write_text(GOOD.replace("3", "4"))

    server.proc.send_signal(signal.SIGHUP)

    def reloaded():
        status = json.loads(server.ctl("--json", "status", check=True).stdout)
        return status if status["config_reloads"] >= 1 else None

    status = wait_until(reloaded, 15, what="the reload on SIGHUP")
    assert 1 == status["config_reloads"] and 2 == status["handler_generation"]
    assert b"STORED\r\n" == qset(raw, b"q", b"fourth")
    raw.close()


def test_a_bad_plugin_table_refused_at_reload_leaves_the_http_api_serving(make_server, tmp_path):
    """A reload whose [http] is bad changes nothing: the listener keeps its port and
    code generation, the queues keep their limits."""
    import requests

    config = tmp_path / "erqpy.toml"
    config.write_text(GOOD + "\n[http]\nport = 0\n")
    server = make_server("--config", str(config))
    port = int(server.banner.split(" http ")[1].split()[0].rsplit(":", 1)[1])
    config.write_text(textwrap.dedent(GOOD.replace("3", "10") + "\n[http]\nport = 0\nmax_batch = 0\n"))

    refused = server.ctl("reload")

    assert 1 == refused.returncode and f"{config}:6: " in refused.stderr, refused.stderr
    assert "http.max_batch must be at least 1" in refused.stderr
    assert 200 == requests.get(f"http://127.0.0.1:{port}/stats", timeout=10).status_code
    status = json.loads(server.ctl("--json", "status", check=True).stdout)
    assert 1 == status["handler_generation"] and 0 == status["config_reloads"]
