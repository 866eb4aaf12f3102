"""Fixtures for the Redis engine backend: real ``redis-server``/``redis-sentinel`` processes
on free loopback ports in temporary directories (``redis_procs``), stopped by PID.

``redis_primary`` is one server shared by a test module (each test gets its own key
prefix, so tests never see each other's queues), and so is ``redis_cluster`` (3
primaries with a replica each); ``redis_pair`` (primary + replica) and
``redis_sentinels`` (primary + replica + 3 Sentinels) are started per test, since those
tests kill or pause processes.
"""

import itertools
import os

import pytest
import redis  # the test extra has it: a missing client fails here, it is not skipped

from tests.engine import redis_procs

_prefixes = itertools.count(1)


@pytest.fixture(scope="module")
def redis_primary(tmp_path_factory):
    primary = redis_procs.start_primary(tmp_path_factory.mktemp("redis"))
    yield primary
    primary.stop()


@pytest.fixture
def redis_client(redis_primary):
    client = redis.Redis(port=redis_primary.port, host="127.0.0.1", socket_timeout=5)
    yield client
    client.close()


@pytest.fixture
def key_prefix():
    """A key prefix no other test uses, on the shared server."""
    return f"erqt{os.getpid()}-{next(_prefixes)}"


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory):
    nodes = redis_procs.start_cluster(tmp_path_factory.mktemp("cluster"))
    yield nodes
    for node in nodes:
        node.stop()


@pytest.fixture
def redis_pair(tmp_path):
    primary = redis_procs.start_primary(tmp_path)
    replica = redis_procs.start_replica(tmp_path, primary)
    yield primary, replica
    replica.stop()
    primary.stop()


@pytest.fixture
def redis_sentinels(tmp_path):
    primary = redis_procs.start_primary(tmp_path)
    replica = redis_procs.start_replica(tmp_path, primary)
    sentinels = []
    try:
        sentinels = redis_procs.start_sentinels(tmp_path, primary, [replica])
        yield primary, replica, sentinels
    finally:
        for process in [*sentinels, replica, primary]:
            process.stop()
