"""The protocol tests against engine-mode servers (``ERQPY_TEST_BACKEND=redis``).

One real redis-server for the session (tests/engine/redis_procs.py: a free loopback port,
a temporary directory, stopped by PID).  Every ``ErqServer`` the tests start gets a
``[storage]`` table naming it: appended to the test's own ``--config`` file when it has
one (so a later ``erqctl reload`` reads the same file), or in a file of its own.  The key
prefix is derived from the server's data directory, so a server restarted on the same
directory finds its queues again, as a journaled one does, and no two servers share one.
"""

import hashlib

import pytest

from tests.conftest import ErqServer
from tests.engine import redis_procs

#: Short, so that the open reads of a SIGKILLed server come back soon after the restart.
LEASE_TTL = 1.0


def storage_table(url: str, data_dir) -> str:
    prefix = "erqt-" + hashlib.sha1(str(data_dir).encode()).hexdigest()[:12]
    return f'\n[storage]\nbackend = "redis"\nurl = "{url}"\nprefix = "{prefix}"\nlease_ttl = {LEASE_TTL}\n'


def append_table(path, table: str) -> None:
    with open(path, encoding="utf-8") as file:
        text = file.read()
    if "[storage]" not in text:
        with open(path, "a", encoding="utf-8") as file:
            file.write(table)


def with_storage(server: ErqServer, args: list, url: str) -> list:
    """``args`` with a ``--config`` whose file has the ``[storage]`` table."""
    table = storage_table(url, server.data_dir)
    if "--config" in args:
        path = args[args.index("--config") + 1]
        server.engine_config = path  # a reload reads it again: ctl() keeps the table in it
        append_table(path, table)
        return args
    path = server.data_dir.parent / f"{server.data_dir.name}-engine.toml"
    path.write_text(table)
    return [*args, "--config", str(path)]


def server_classes(config) -> set:
    """Every ErqServer class: tests/conftest.py is loaded twice, as pytest's conftest
    plugin (whose fixtures start servers) and as ``tests.conftest`` (imported by tests)."""
    classes = {ErqServer}
    for plugin in config.pluginmanager.get_plugins():
        found = getattr(plugin, "ErqServer", None)
        if isinstance(found, type) and found.__name__ == "ErqServer":
            classes.add(found)
    return classes


@pytest.fixture(scope="session", autouse=True)
def engine_servers(tmp_path_factory, pytestconfig):
    """Start the session's redis-server and make every ErqServer an engine-mode node."""
    primary = redis_procs.start_primary(tmp_path_factory.mktemp("engine-redis"))

    def engine_start(original_start):
        def start(self, extra_args=(), env=None):
            args = with_storage(self, [*self.args, *extra_args], primary.url)
            saved, self.args = self.args, []
            try:
                return original_start(self, args, env)
            finally:
                self.args = saved
        return start

    def engine_ctl(original_ctl):
        def ctl(self, *args, **kwargs):
            # A test that rewrote its file (without the table) before a reload.
            if "reload" in args and getattr(self, "engine_config", None):
                append_table(self.engine_config, storage_table(primary.url, self.data_dir))
            return original_ctl(self, *args, **kwargs)
        return ctl

    with pytest.MonkeyPatch.context() as patch:
        for cls in server_classes(pytestconfig):
            patch.setattr(cls, "start", engine_start(cls.start))
            patch.setattr(cls, "ctl", engine_ctl(cls.ctl))
        yield primary
    try:
        # The servers really kept their queues there (every node registers itself).
        assert redis_procs.command(primary.port, "DBSIZE") not in (":0", ""), "no server used the engine"
    finally:
        primary.stop()
