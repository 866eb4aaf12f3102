"""What `erqpy serve` tells its operator: each option's environment variable in
``--help``, and every listening address (the HTTP API's too) in its start-up line."""

import json
import re
import subprocess

import requests

from tests.conftest import _bin

OPTION_VARIABLES = {
    "--host": "ERQPY_HOST", "--port": "ERQPY_PORT", "--data-dir": "ERQPY_DATA_DIR",
    "--fsync": "ERQPY_FSYNC", "--max-connections": "ERQPY_MAX_CONNECTIONS",
    "--config": "ERQPY_CONFIG", "--log-level": "ERQPY_LOG_LEVEL", "--handlers": "ERQPY_HANDLERS",
    "--control-socket": "ERQPY_CONTROL_SOCKET",
}


def test_serve_help_names_each_options_environment_variable():
    result = subprocess.run(_bin("erqpy") + ["serve", "--help"], capture_output=True, text=True, timeout=30)

    assert 0 == result.returncode
    # Each option's help runs up to the next option; its variable is inside it.
    text = " ".join(result.stdout.split())
    for option, variable in OPTION_VARIABLES.items():
        block = text.split(f" {option} ", 1)[1].split(" --", 1)[0]
        assert f"[env var: {variable}" in block, (option, block)


def test_the_start_up_line_names_the_http_listener(make_server, tmp_path):
    """With [http] on port 0 the line reads `listening on H:P http H:P2 data ...`: the
    data port stays where parsers look for it, and H:P2 is the HTTP API's real port."""
    config = tmp_path / "erqpy.toml"
    config.write_text("[http]\nport = 0\n")

    server = make_server("--config", str(config))

    match = re.search(r" listening on 127\.0\.0\.1:(\d+) http 127\.0\.0\.1:(\d+) data ", server.banner)
    assert match, server.banner
    assert server.port == int(match.group(1))
    assert f"erqpy-http listening on http://127.0.0.1:{match.group(2)}/" in server.log()
    assert 200 == requests.get(f"http://127.0.0.1:{match.group(2)}/stats", timeout=10).status_code
    status = json.loads(server.ctl("--json", "status", check=True).stdout)
    assert {"http": f"127.0.0.1:{match.group(2)}"} == status["listeners"]


def test_without_http_the_start_up_line_has_the_data_port_only(server):
    assert re.search(r" listening on 127\.0\.0\.1:\d+ data ", server.banner), server.banner
