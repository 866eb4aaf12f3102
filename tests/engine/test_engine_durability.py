"""``WAIT`` durability with a real replica, and the backend behind Sentinel."""

import time

import pytest

from erqpy.errors import ConfigError
from erqpy.events import EventBus
from erqpy.server.config import Settings
from erqpy.server.state import ServerStats
from erqpy.storage.engine_redis import EngineOptions, RedisCollection, connect
from erqpy.storage.engine_redis_queue import EngineUnavailable, NotReplicated
from tests.engine import redis_procs
from tests.engine.engine_helpers import make_collection

WAIT_MS = 300


@pytest.fixture
def replicated(redis_pair):
    primary, replica = redis_pair
    made = []

    def build(**options):
        options.setdefault("wait_timeout_ms", WAIT_MS)
        made.append(make_collection(primary.port, "durable", wait_replicas=1, **options))
        return made[-1]

    yield primary, replica, build
    replica.resume()  # a test that failed while it was stopped
    for queues in made:
        queues.close_all()


def replica_length(replica, queue) -> int:
    return int(redis_procs.command(replica.port, "LLEN", queue.keys.items).lstrip(":"))


def test_a_put_returns_only_after_the_replica_has_it(replicated):
    _primary, replica, build = replicated
    queues = build(wait_timeout_ms=10_000)  # a loaded machine can take longer than WAIT_MS
    queue = queues.get_or_create(b"acked")
    for index in range(20):
        assert queues.put(queue, b"item%d" % index, 0, 0, 0) is True
        # No polling: once put returned, the replica has acknowledged this very item.
        assert replica_length(replica, queue) == index + 1


def test_a_short_wait_is_an_error_by_default(replicated):
    _primary, replica, build = replicated
    queues = build()
    queue = queues.get_or_create(b"short")
    replica.pause()  # SIGSTOP: connected, but acknowledges nothing
    started = time.monotonic()
    with pytest.raises(NotReplicated) as raised:
        queues.put(queue, b"unsure", 0, 0, 0)
    waited = time.monotonic() - started
    replica.resume()
    assert str(raised.value) == "not replicated" and raised.value.acknowledged == 0
    assert WAIT_MS / 1000 <= waited < WAIT_MS / 1000 + 2
    assert queue.count == 1  # stored on the primary; only its replication is unknown


def test_a_short_wait_can_be_answered_stored(replicated):
    _primary, replica, build = replicated
    queues = build(on_short_wait="store")
    queue = queues.get_or_create(b"lenient")
    replica.pause()
    started = time.monotonic()
    assert queues.put(queue, b"anyway", 0, 0, 0) is True
    assert time.monotonic() - started >= WAIT_MS / 1000
    replica.resume()
    assert queue.remove().data == b"anyway"


@pytest.mark.parametrize("field, value", [
    ("on_short_wait", "maybe"), ("prefix", ""), ("prefix", "a{b}"), ("lease_ttl", 0),
    ("poll_interval", -1), ("reap_batch", 0), ("wait_replicas", -1), ("wait_timeout_ms", 0),
    ("wait_replicas", True),
])
def test_bad_engine_options_are_refused_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        EngineOptions(**{field: value})


def test_the_backend_follows_the_primary_named_by_sentinel(redis_sentinels):
    primary, replica, sentinels = redis_sentinels
    client = connect(sentinels=[("127.0.0.1", s.port) for s in sentinels], service=redis_procs.SENTINEL_SERVICE)
    queues = RedisCollection(client, Settings(), EventBus(), ServerStats(),
                             EngineOptions(prefix="sentinel", wait_replicas=1, wait_timeout_ms=10_000))
    queues.start()
    try:
        queue = queues.get_or_create(b"via-sentinel")
        assert queues.put(queue, b"hello", 0, 0, 0) is True
        assert redis_procs.command(primary.port, "LLEN", queue.keys.items) == ":1"
        assert replica_length(replica, queue) == 1
        assert queue.remove().data == b"hello"
    finally:
        queues.close_all()


def test_items_acknowledged_with_wait_1_survive_a_sigkill_of_the_primary(redis_sentinels):
    """The primary dies; Sentinel promotes the replica; every acknowledged item is there."""
    primary, replica, sentinels = redis_sentinels
    client = connect(sentinels=[("127.0.0.1", s.port) for s in sentinels], service=redis_procs.SENTINEL_SERVICE,
                     socket_timeout=1.0)
    queues = RedisCollection(client, Settings(), EventBus(), ServerStats(),
                             EngineOptions(prefix="failover", wait_replicas=1, wait_timeout_ms=10_000))
    queues.start()
    try:
        queue = queues.get_or_create(b"precious")
        acknowledged = [b"item%d" % index for index in range(50) if queues.put(queue, b"item%d" % index, 0, 0, 0)]
        assert len(acknowledged) == 50
        primary.kill9()
        redis_procs.wait_until(
            lambda: redis_procs.command(sentinels[0].port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                                        redis_procs.SENTINEL_SERVICE).endswith(str(replica.port)),
            20.0, "Sentinel to promote the replica", 0.1)
        taken, unavailable = [], 0
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            try:
                item = queue.remove()
            except EngineUnavailable:
                unavailable += 1  # the pool still had connections to the dead primary
                time.sleep(0.1)
                continue
            if item is None:
                break
            taken.append(item.data)
        assert taken == acknowledged  # none lost, none duplicated, in order
        assert unavailable < 50
    finally:
        queues.close_all()
