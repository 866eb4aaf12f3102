"""The ``[storage]`` table (erqpy.server.storage_config): what it refuses, and where."""

import sys

import pytest

from erqpy.errors import ConfigError
from erqpy.server.storage_config import check_storage_table


def where(key):
    return f"erqpy.toml:{key}"


def test_the_journal_is_the_default_backend_and_needs_nothing_else():
    assert {} == check_storage_table({}, where)
    assert {"backend": "journal"} == check_storage_table({"backend": "journal"}, where)


@pytest.mark.parametrize("table, reason, at", [
    ({"backend": "disk"}, "storage.backend must be one of journal, redis", "backend"),
    ({"backend": "redis"}, "needs exactly one of url", "backend"),
    ({"backend": "redis", "url": "redis://a", "cluster_nodes": ["b:1"]}, "needs exactly one of url", "backend"),
    ({"backend": "redis", "sentinels": ["a:26379"]}, "storage.sentinels needs storage.service", "sentinels"),
    ({"backend": "redis", "cluster_nodes": ["no-port"]}, 'must be a list of "host:port"', "cluster_nodes"),
    ({"backend": "redis", "url": "redis://a", "lease_ttl": 0}, "storage.lease_ttl must be", "lease_ttl"),
    ({"backend": "redis", "url": 6379}, "storage.url has the wrong type", "url"),
    ({"bakend": "redis"}, "unknown setting 'bakend' in [storage]", "bakend"),
])
def test_a_bad_table_is_refused_at_its_key(table, reason, at):
    with pytest.raises(ConfigError) as refused:
        check_storage_table(table, where)

    assert reason in refused.value.reason
    assert f"erqpy.toml:{at}" == refused.value.where


def test_engine_mode_without_redis_py_is_a_config_error_not_a_traceback(monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)  # as if the engine extra were not installed
    monkeypatch.delitem(sys.modules, "erqpy.storage.engine_redis_client", raising=False)

    with pytest.raises(ConfigError, match=r'needs the engine extra \(pip install "erqpy\[engine\]"\)'):
        check_storage_table({"backend": "redis", "url": "redis://127.0.0.1:6379/0"}, where)
