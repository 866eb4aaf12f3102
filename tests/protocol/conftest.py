"""Fixtures shared by the protocol tests: a unique queue name per test, and raw clients
on the module's shared server (tests/conftest.py starts it)."""

import pytest
from proto_helpers import unique_name


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
