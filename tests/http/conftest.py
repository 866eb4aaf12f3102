"""Fixtures for the HTTP API tests: erqpy servers with the erqpy-http plugin turned on."""

import pytest

from http_helpers import start_http_server


@pytest.fixture
def http_server(tmp_path):
    """Factory: ``http_server(http={...}, args=(...), extra_toml="...")``; all stopped after."""
    started = []

    def factory(http=None, args=(), extra_toml="", data_dir=None):
        index = len(started)
        data = data_dir or tmp_path / f"data{index}"
        server = start_http_server(data, http, args, extra_toml, config_name=f"erqpy{index}.toml")
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """One server for a whole module (tests use distinct queue names); short waits so no
    test can block long, a quick sampler, and a small queue for the full-queue case."""
    data = tmp_path_factory.mktemp("http") / "data"
    server = start_http_server(
        data,
        {"sample_interval": 0.2, "max_wait_ms": 5000, "reserve_timeout": 30.0, "max_batch": 50},
        extra_toml="[queues.small]\nmax_items = 2\nmax_item_size = 64\n",
    )
    yield server
    server.stop()
