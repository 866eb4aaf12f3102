"""The Redis backend on a real 6-process Redis Cluster: queues spread over the primaries,
a fanout set is one script in one slot, and the sweep and the reaper (which pipeline
scripts elsewhere) run one script per queue."""

import time

import gevent
import pytest
from redis.crc import key_slot

from erqpy.errors import ConfigError
from erqpy.events import EventBus
from erqpy.server.config import Settings
from erqpy.server.state import ServerStats
from erqpy.storage.engine_redis import EngineOptions, RedisCollection, connect
from tests.engine import redis_procs
from tests.engine.engine_helpers import settings_with


def cluster_collection(nodes, prefix, settings=None, **options) -> RedisCollection:
    client = connect(cluster_nodes=[("127.0.0.1", node.port) for node in nodes[:2]])
    return RedisCollection(client, settings or Settings(), EventBus(), ServerStats(),
                           EngineOptions(prefix=prefix, **options))


@pytest.fixture
def on_cluster(redis_cluster, key_prefix):
    made = []

    def build(settings=None, started=True, **options):
        made.append(cluster_collection(redis_cluster, key_prefix, settings, **options))
        if started:
            made[-1].start()
        else:
            made[-1].lease.acquire()
        return made[-1]

    yield build
    for each in made:
        each.close_all()


def test_the_cluster_has_three_primaries_with_a_replica_each(redis_cluster):
    roles = [node.info()["role"] for node in redis_cluster]
    assert roles.count("master") == 3 and roles.count("slave") == 3
    for node in redis_cluster:
        assert "cluster_state:ok" in redis_procs.command(node.port, "CLUSTER", "INFO")


def test_queues_spread_over_the_primaries_and_keep_their_rules(on_cluster):
    queues = on_cluster(settings_with(old={"expire_to": "kept"}))
    names = [b"alpha", b"beta", b"gamma", b"delta", b"epsilon"]
    client = queues.engine.client
    primaries = {client.get_node_from_key(queues.get_or_create(name).keys.items).port for name in names}
    assert len(primaries) >= 2  # more than one primary holds queues
    for name in names:  # and all keys of a fanout set are in the master's slot
        keys = [queues.lookup(name).keys, queues.get_for_read(name + b"+sub").keys]
        assert len({key_slot(key.encode()) for k in keys for key in (k.items, k.meta, k.children)}) == 1
    for name in names:
        queue = queues.lookup(name)
        child = queues.lookup(name + b"+sub")
        for index in range(3):
            assert queues.put(queue, b"%s-%d" % (name, index), 0, 0, 0)
        opened = queue.remove(open_read=True)
        assert queue.unremove(opened.id) and queue.remove(open_read=True).id == opened.id
        assert queue.confirm(opened.id)
        assert [queue.remove().data for _ in range(2)] == [b"%s-1" % name, b"%s-2" % name]
        assert child.count == 3
    old = queues.get_or_create(b"old")
    now = int(time.time() * 1000)
    queues.put(old, b"stale", 0, now - 1, now - 10)
    queues.maintain()  # one script per queue here, and the move to another slot
    assert old.count == 0 and queues.lookup(b"kept").remove().data == b"stale"
    assert queues.total_items == 15


def test_the_reaper_gives_back_a_dead_nodes_reads_on_the_cluster(on_cluster, redis_cluster, key_prefix):
    dying = on_cluster()
    reaper = on_cluster(started=False, reap_batch=2)
    queues = [dying.get_or_create(name) for name in (b"r1", b"r2", b"r3")]
    for queue in queues:
        for index in range(3):
            dying.put(queue, b"%d" % index, 0, 0, 0)
        for _ in range(3):
            queue.remove(open_read=True)
    gevent.killall(dying._greenlets)  # it stops renewing, as if frozen
    client = connect(cluster_nodes=[("127.0.0.1", redis_cluster[0].port)])
    client.delete(f"{key_prefix}:lease:{dying.engine.node_id}")
    rounds = [reaper._reap() for _ in range(3)]
    assert rounds == [6, 3, 0]
    for queue in queues:
        assert [queue.remove().data for _ in range(3)] == [b"0", b"1", b"2"]


def test_wait_replicas_is_refused_on_the_cluster(redis_cluster):
    with pytest.raises(ConfigError, match="wait_replicas"):
        cluster_collection(redis_cluster, "refused", wait_replicas=1)
