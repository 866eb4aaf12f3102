"""Fixtures shared by the protocol tests: a unique queue name per test, and raw clients
on the module's shared server (tests/conftest.py starts it).

``ERQPY_TEST_BACKEND=redis`` runs the same tests against engine-mode servers
(engine_backend.py): one real redis-server for the session, every server started with a
``[storage]`` table; the tests that cannot pass there are marked with their reason
(engine_differences.py)."""

import os

import pytest
from proto_helpers import unique_name

ENGINE = os.environ.get("ERQPY_TEST_BACKEND", "journal") == "redis"


@pytest.fixture
def q(request):
    return unique_name(request.node.name)


@pytest.fixture
def conn(shared_server):
    client = shared_server.raw()
    yield client
    client.close()


@pytest.fixture
def clients(shared_server):
    """A factory of raw clients, all closed after the test."""
    made = []

    def make():
        client = shared_server.raw()
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


if ENGINE:
    from engine_backend import engine_servers  # noqa: F401  (an autouse fixture)

    def pytest_collection_modifyitems(config, items):
        from engine_differences import mark_differences

        mark_differences(items)
