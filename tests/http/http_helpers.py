"""A real ``erqpy serve`` process with the erqpy-http plugin turned on by an ``[http]``
table, and the small helpers the HTTP tests share.

The HTTP port is 0 in the configuration; the plugin logs the address it bound, and
``HttpServer`` reads it from the server log (only the part written since the last start,
because a restart appends to the same log).
"""

import json
import re
import time
from pathlib import Path

import requests

from tests.conftest import ErqServer
from tests.conftest import wait_until as shared_wait_until

LISTENING = re.compile(r"erqpy-http listening on http://([0-9.]+):(\d+)/")
STARTUP_TIMEOUT = 20.0
TIMEOUT = 10  # seconds, for every HTTP request a test makes


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string accepts JSON's escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def write_config(path: Path, http: dict | None, extra: str = "") -> Path:
    lines = []
    if http is not None:
        lines.append("[http]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in http.items())
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


class HttpServer:
    """An ``ErqServer`` plus the base URL of its HTTP API."""

    def __init__(self, srv: ErqServer):
        self.srv = srv
        self.base = None
        self.session = requests.Session()

    def _wait_listening(self, offset: int) -> "HttpServer":
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            match = LISTENING.search(self.srv.log()[offset:])
            if match:
                self.base = f"http://{match.group(1)}:{match.group(2)}"
                return self
            time.sleep(0.05)
        raise RuntimeError(f"the HTTP API did not start:\n{self.srv.log()[offset:]}")

    def start(self) -> "HttpServer":
        offset = len(self.srv.log())
        self.srv.start()
        return self._wait_listening(offset)

    def restart(self) -> "HttpServer":
        offset = len(self.srv.log())
        self.srv.restart()
        self.session = requests.Session()
        return self._wait_listening(offset)

    def crash_and_start(self) -> "HttpServer":
        """SIGKILL, then start again on the same data directory."""
        self.srv.kill9()
        offset = len(self.srv.log())
        self.srv.start()
        self.session = requests.Session()
        return self._wait_listening(offset)

    def url(self, path: str) -> str:
        return self.base + path

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", TIMEOUT)
        return self.session.request(method, self.url(path), **kwargs)

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, **kwargs):
        return self.request("POST", path, **kwargs)

    def put(self, path, **kwargs):
        return self.request("PUT", path, **kwargs)

    def delete(self, path, **kwargs):
        return self.request("DELETE", path, **kwargs)

    def enqueue(self, queue: str, job) -> None:
        reply = self.post(f"/q/{queue}", json=job)
        assert 201 == reply.status_code, reply.text

    def depth(self, queue: str) -> int:
        reply = self.get(f"/j/{queue}")
        assert 200 == reply.status_code, reply.text
        return reply.json()["job_count"]

    def stop(self):
        self.session.close()
        self.srv.stop()


def start_http_server(data_dir: Path, http: dict | None = None, args=(), extra_toml: str = "",
                      config_name: str = "erqpy.toml") -> HttpServer:
    """Start a server whose configuration has ``[http] port = 0`` plus ``http``."""
    config = write_config(data_dir.parent / config_name, {"port": 0, **(http or {})}, extra_toml)
    srv = ErqServer(data_dir, ["--config", str(config), *args])
    try:
        return HttpServer(srv).start()
    except RuntimeError:
        srv.stop()  # the erqpy process came up without its HTTP API: not left running
        raise


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """The shared poll (it fails the test on a timeout), polling at ``interval``."""
    return shared_wait_until(predicate, timeout, what, interval=interval)
