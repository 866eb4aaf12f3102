"""The operations layer's tests (tests/unit/test_ops.py), run once more with the Redis
backend as the storage: every test there that takes ``backend`` (the seam) runs here on a
real redis-server; those that need a journal stay in tests/unit."""

import inspect

import pytest

from erqpy.events import EventBus
from erqpy.server.state import ServerStats
from erqpy.storage.engine_redis import EngineOptions, RedisCollection, connect
from tests.unit import test_ops
from tests.unit.test_ops import _state, settings, syncer  # noqa: F401  (fixtures used here)


@pytest.fixture
def backend(settings, redis_primary, key_prefix):  # noqa: F811
    collection = RedisCollection(connect(redis_primary.url), settings, EventBus(), ServerStats(),
                                 EngineOptions(prefix=key_prefix))
    collection.start()
    yield collection
    collection.close_all()


@pytest.fixture
def server(settings, backend, syncer):  # noqa: F811
    return _state(settings, backend, syncer)


#: Not run here, and why.  Each is a place where code outside the seam still reaches into
#: the journaled queue; it goes once that code uses the seam.
NOT_ON_THE_SEAM = {
    # ServerState.queue_stats reads queue.items (mem_items, age), which only the
    # journaled and in-memory queues have.
    "test_queue_stats_name_the_children_of_a_master",
}


def _on_the_seam(name: str, function) -> bool:
    wanted = set(inspect.signature(function).parameters)
    return (bool(wanted & {"backend", "server"}) and not wanted & {"journaled_backend", "journaled_server"}
            and name not in NOT_ON_THE_SEAM)


for _name, _test in list(vars(test_ops).items()):
    if _name.startswith("test_") and callable(_test) and _on_the_seam(_name, _test):
        globals()[_name] = _test


def test_the_ops_tests_are_found_and_run_here():
    """A rename in tests/unit/test_ops.py must not leave this module running nothing."""
    here = [name for name in globals() if name.startswith("test_") and name != "test_the_ops_tests_are_found_and_run_here"]
    assert len(here) >= 25  # 28 test functions when this was written
    assert NOT_ON_THE_SEAM <= set(vars(test_ops))
