"""Build Redis-backed collections for the engine tests, and a bounded wait."""

import gevent

from erqpy.events import EventBus
from erqpy.server.config import Settings
from erqpy.server.state import ServerStats
from erqpy.storage.engine_redis import EngineOptions, RedisCollection, connect
from tests.engine import redis_procs


def settings_with(**queues) -> Settings:
    """Settings whose ``queues`` table is ``queues`` (name -> overrides)."""
    return Settings(queues=dict(queues))


def make_collection(port: int, prefix: str, settings=None, started=True, socket_timeout=5.0,
                    **options) -> RedisCollection:
    client = connect(f"redis://127.0.0.1:{port}/0", socket_timeout=socket_timeout)
    collection = RedisCollection(
        client, settings or Settings(), EventBus(), ServerStats(),
        EngineOptions(prefix=prefix, **options),
    )
    if started:
        collection.start()
    return collection


def gevent_wait_until(predicate, timeout: float, what: str, interval: float = 0.02):
    """``redis_procs.wait_until`` sleeping with gevent, so that the collection's poller and
    lease keeper run meanwhile."""
    return redis_procs.wait_until(predicate, timeout, what, interval, sleep=gevent.sleep)
