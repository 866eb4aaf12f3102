"""Fixtures for the client tests: three servers at once, the handlers' event log, and a
factory of ``erqpy consume`` subprocesses (see ``clienthelpers``)."""

import pytest

from clienthelpers import ConsumerProcess, EventLog, server_spec


@pytest.fixture
def events(tmp_path):
    return EventLog(tmp_path / "events.log")


@pytest.fixture
def consumers(tmp_path, events):
    """Factory: ``consumers(queue, servers, *args, env=None)`` starts ``erqpy consume``."""
    started = []

    def start(queue, servers, *args, env=None):
        proc = ConsumerProcess(tmp_path, len(started), queue, [server_spec(s) for s in servers],
                               args, events, env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def three_servers(make_server):
    return [make_server() for _ in range(3)]
