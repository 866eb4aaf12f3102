"""The Redis backend's connection side: its options, connecting (URL or Sentinel), and
``RedisEngine``, what every queue of one node shares (client, scripts, node id).

Durability: with ``wait_replicas`` a ``put`` is sent with ``WAIT <replicas> <timeout>`` in
the same pipeline (WAIT counts the writes of its own connection), and returns only after
the replicas acknowledged it; when they did not in time, ``on_short_wait = "error"``
raises ``NotReplicated`` (``SERVER_ERROR not replicated``; the item may still be in the
queue), ``"store"`` logs and answers stored.
"""

import logging
from dataclasses import dataclass

import redis
import redis.cluster

from erqpy.errors import ConfigError
from erqpy.storage.engine_redis_lease import NodeLease
from erqpy.storage.engine_redis_lua import Scripts
from erqpy.storage.engine_redis_queue import EngineUnavailable, NotReplicated, QueueKeys

log = logging.getLogger("erqpy.engine")

SHORT_WAIT_POLICIES = ("error", "store")


@dataclass(frozen=True)
class EngineOptions:
    """The ``[storage]`` settings of engine mode (besides where Redis is)."""

    prefix: str = "erqpy"  # every key starts with it: several clusters may share a Redis
    lease_ttl: float = 5.0  # seconds a node's lease lives without renewal
    poll_interval: float = 0.05  # seconds between looks at queues with local waiters
    reap_batch: int = 100  # open items one reaper call gives back
    wait_replicas: int = 0  # replicas that must acknowledge a put; 0 = do not wait
    wait_timeout_ms: int = 1000
    on_short_wait: str = "error"  # or "store"

    def __post_init__(self):
        if self.on_short_wait not in SHORT_WAIT_POLICIES:
            raise ConfigError(f"on_short_wait must be one of {', '.join(SHORT_WAIT_POLICIES)}")
        if not self.prefix or any(char in self.prefix for char in "{} \t\r\n"):
            # A brace would move the hash tag: a queue's keys must hash by its name.
            raise ConfigError(f"prefix must be a non-empty word without braces, not {self.prefix!r}")
        for name in ("lease_ttl", "poll_interval"):
            if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a number of seconds > 0, not {getattr(self, name)!r}")
        for name, least in (("reap_batch", 1), ("wait_replicas", 0), ("wait_timeout_ms", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ConfigError(f"{name} must be an integer >= {least}, not {value!r}")


def connect(url: str = "", sentinels=(), service: str = "", cluster_nodes=(), socket_timeout: float = 5.0):
    """A redis-py client for a URL (``redis://host:port/db``), for the primary of Sentinel
    ``service`` given ``sentinels`` as (host, port) pairs (it follows failovers), or for a
    Redis Cluster given some of its ``cluster_nodes`` as (host, port) pairs."""
    if cluster_nodes:
        from redis.cluster import ClusterNode, RedisCluster

        nodes = [ClusterNode(host, port) for host, port in cluster_nodes]
        return RedisCluster(startup_nodes=nodes, socket_timeout=socket_timeout)
    if sentinels:
        from redis.sentinel import Sentinel

        sentinel = Sentinel(list(sentinels), socket_timeout=socket_timeout)
        return sentinel.master_for(service, socket_timeout=socket_timeout)
    return redis.Redis.from_url(url, socket_timeout=socket_timeout)


class RedisEngine:
    """What every queue of one node shares: the client, the scripts, the node id (from
    its lease) and the durability options.  ``call`` turns Redis's absence into
    ``EngineUnavailable``."""

    def __init__(self, client, options: EngineOptions, lease: NodeLease):
        self.client = client
        self.options = options
        self.prefix = options.prefix
        self.scripts = Scripts(client)
        self.lease = lease
        # redis-py's cluster pipelines refuse scripts: there each script runs on its own.
        self.cluster = isinstance(client, redis.cluster.RedisCluster)
        if self.cluster and options.wait_replicas:
            # WAIT must follow the write on the same connection, which needs a pipeline.
            raise ConfigError("wait_replicas is not supported with Redis Cluster yet")

    def script_calls(self, senders) -> list:
        """The replies of several script calls, each ``send(client=...)``: in one round
        trip (a pipeline), or one call each on Redis Cluster."""
        if self.cluster:
            return [self.call(send, client=None) for send in senders]
        pipe = self.client.pipeline(transaction=False)
        for send in senders:
            send(client=pipe)
        return self.call(pipe.execute)

    @property
    def node_id(self) -> str:
        return self.lease.node_id

    def call(self, function, *args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise EngineUnavailable(exc) from exc

    def put(self, keys: QueueKeys, data: bytes, flags: int, expires_ms: int, now: int, fanout: bool):
        """Run PUT (and WAIT when configured); returns (master result, [(child name, its
        item id) for each child that stored it])."""
        # Only a master feeds children: a set to ``m+x`` itself goes to ``m+x`` alone.
        args = [keys.base, keys.name, data, flags, expires_ms, now, int(fanout and not keys.is_child)]
        options = self.options
        try:
            if not options.wait_replicas:
                result = self.scripts.put(keys=[keys.meta, keys.children], args=args)
            else:
                pipe = self.client.pipeline(transaction=False)
                self.scripts.put(keys=[keys.meta, keys.children], args=args, client=pipe)
                pipe.wait(options.wait_replicas, options.wait_timeout_ms)
                result, acknowledged = pipe.execute()
                if acknowledged < options.wait_replicas:
                    if options.on_short_wait == "error":
                        raise NotReplicated(acknowledged, options.wait_replicas)
                    log.warning("queue %s: stored with %d of %d replica acknowledgements",
                                keys.name, acknowledged, options.wait_replicas)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise EngineUnavailable(exc) from exc
        except redis.exceptions.OutOfMemoryError:
            # maxmemory with noeviction: NOT_STORED.  Redis refuses a script at its first
            # write, so nothing of it (no child of a fanout) was stored.
            return 0, []
        children = result[1:]
        return int(result[0]), [(name.decode(), int(item_id)) for name, item_id in zip(children[::2], children[1::2], strict=True)]

    def give_back(self, keys: QueueKeys, node: str, item_ids=(), client=None):
        """Open reads of ``node`` (``item_ids``, or the newest ``reap_batch``) back to the
        head; returns (given back, still open), or queues the call on pipeline ``client``."""
        return self.call(
            self.scripts.give_back,
            keys=[keys.open(node), keys.opennodes, keys.items, keys.meta, keys.staged(node)],
            args=[node, self.options.reap_batch, *item_ids], client=client,
        )
