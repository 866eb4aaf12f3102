"""The Redis engine backend (issue 13): the seam's collection with queues in Redis, so
that every erqpy node on the same Redis serves the same queues.

In Redis: the items, the queue registry (``<prefix>:queues``), fanout children, pause
flags, limits and counters (engine_redis_lua.py), the nodes and their leases
(engine_redis_lease.py).  In this process: the ``RedisQueue`` objects of the queues this
node has used, their local waiters, and this node's open reads.

Blocking reads: every item, written on this node or another, reaches local waiters
through the queue's stager (``BLMOVE`` into a per-node staging list,
engine_redis_staging.py), so Redis serves the nodes' blocked stagers oldest first and
one local waiter at a time is notified.  A notified waiter takes with the TAKE script, so an
item never leaves Redis for a reader that has gone; FIFO holds per node.  A poller every
``poll_interval`` seconds adopts awaited queues that other nodes created.

Durability (``WAIT``): engine_redis_client.py.

Start-up, for ``[storage] backend = "redis"`` (``server.storage_config.open_collection``
and ``server.lifecycle``): after gevent's monkey patching, ``RedisCollection(connect(...),
settings, events, server_stats, EngineOptions(...))``, ``on_lease_lost`` set, then
``start()`` (the lease, the poller, the reaper) and ``load_all()``; ``maintain()`` every
second as for the journal; at stop, open reads given back as always, then ``close_all()``
(drops the lease).
"""

import logging
from functools import partial

import gevent
import redis

from erqpy.errors import ClientError, LimitReached
from erqpy.storage.collection import QueueCollection
from erqpy.storage.engine_redis_client import EngineOptions, RedisEngine, connect
from erqpy.storage.engine_redis_idle import idle_queues
from erqpy.storage.engine_redis_lease import NodeLease
from erqpy.storage.engine_redis_queue import (
    FANOUT_ONLY_ACCEPTED,
    GONE,
    EngineUnavailable,
    QueueKeys,
    RedisQueue,
    config_fields,
)
from erqpy.storage.items import now_ms
from erqpy.storage.names import FANOUT_SEPARATOR, check_name

log = logging.getLogger("erqpy.engine")

#: What the server's start-up needs: connect(), EngineOptions, RedisCollection.
__all__ = ["EngineOptions", "RedisCollection", "connect"]


class RedisCollection:
    """The seam's collection over Redis.  ``start()`` takes the node's lease and starts
    three greenlets: the lease keeper, the poller and the reaper; ``close_all()`` stops
    them."""

    waits_for_io = True  # every operation is a round trip to Redis (seam.Collection)

    def __init__(self, client, settings, events, server_stats, options: EngineOptions | None = None,
                 on_lease_lost=None):
        self.settings = settings
        self.events = events
        self.server_stats = server_stats
        self.options = options = options or EngineOptions()
        self.lease = NodeLease(client, options, self._lease_lost)
        self.engine = RedisEngine(client, options, self.lease)
        self.registry = f"{options.prefix}:queues"
        self.queues = {}  # name -> RedisQueue, the queues this node has used
        self.children = {}  # master name -> {child name: RedisQueue}, as far as known here
        self.awaited = {}  # name as bytes -> AwaitedQueue
        self.on_lease_lost = on_lease_lost  # () -> None: the server closes holders of open reads
        self._greenlets = []

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> None:
        self.lease.acquire()
        self._greenlets = [
            gevent.spawn(self.lease.keep),
            gevent.spawn(self._every, self.options.poll_interval, self.poll_once, "poller"),
            gevent.spawn(self._every, self.options.lease_ttl / 3, self._reap, "reaper"),
        ]

    def load_all(self) -> int:
        """Make local objects for every queue in the registry; how many there are."""
        names = sorted(name.decode() for name in self.engine.call(self.engine.client.smembers, self.registry))
        for name in names:
            self._local(name)
        return len(names)

    def close_all(self) -> None:
        gevent.killall(self._greenlets)
        self._greenlets = []
        everything_given_back = True
        for queue in list(self.queues.values()):
            queue.close()  # its stager gives back what it staged
            try:
                for item_id in reversed(list(queue.open)):
                    queue.unremove(item_id)
            except EngineUnavailable:
                # Another node's reaper gives them back once the lease has expired.
                everything_given_back = False
        self.lease.release(forget=everything_given_back)

    # -- lookup and creation ----------------------------------------------------------------

    def lookup(self, raw: bytes):
        queue = self.queues.get(raw.decode("utf-8", "replace"))
        if queue is not None and not queue.deleted:
            return queue
        name = check_name(raw)
        if self.engine.call(self.engine.client.sismember, self.registry, name):
            return self._local(name)
        return None

    def get_for_read(self, raw: bytes):
        queue = self.lookup(raw)
        if queue is None and FANOUT_SEPARATOR.encode() in raw:
            return self.get_or_create(raw)
        return queue

    def get_or_create(self, raw: bytes):
        queue = self.lookup(raw)
        if queue is not None:
            return queue
        name = check_name(raw)
        limit = self.settings.max_queues
        if self.engine.call(self.engine.client.scard, self.registry) >= limit:
            raise LimitReached(f"too many queues (max_queues is {limit})")
        master = name.partition(FANOUT_SEPARATOR)[0]
        keys = QueueKeys(self.options.prefix, name)
        config = self.settings.queue_config(name)
        fanout_limit = self.settings.queue_config(master).max_fanout_children
        created = self.engine.call(
            self.engine.scripts.create, keys=[keys.meta, keys.children],
            args=[name, int(keys.is_child), fanout_limit, now_ms(), *config_fields(config)],
        )
        if not created:
            raise LimitReached(f"too many fanout children of {master} (max_fanout_children is {fanout_limit})")
        self.engine.call(self.engine.client.sadd, self.registry, name)
        self.server_stats.queue_creates += 1
        return self._local(name)

    def _local(self, name: str) -> RedisQueue:
        """The local object of a queue that exists in Redis."""
        queue = self.queues.get(name)
        if queue is not None and not queue.deleted:
            return queue
        queue = RedisQueue(name, self.settings.queue_config(name), self.engine, self.events, self._move_expired,
                           self._dead_letter)
        self.queues[name] = queue
        master, plus, _child = name.partition(FANOUT_SEPARATOR)
        if plus:
            self.children.setdefault(master, {})[name] = queue
        awaited = self.awaited.pop(name.encode(), None)
        if awaited is not None:  # blocked readers were waiting for it to exist
            queue.waiters.extend(awaited.waiters)
            awaited.waiters = queue.waiters  # where those readers leave the line
            awaited.queue = queue
            queue.stager.ensure()
            queue.pass_on()
        return queue

    # Blocked readers of missing queues, and waking every waiter: the journaled
    # collection's rules over the same attributes (``awaited``, ``queues``).
    await_queue = QueueCollection.await_queue
    release_awaited = QueueCollection.release_awaited
    wake_all = QueueCollection.wake_all

    # -- operations that span queues ----------------------------------------------------------

    def put(self, queue: RedisQueue, data: bytes, flags: int, expires_ms: int, now: int) -> bool:
        """Add to ``queue`` and each of its fanout children in one script."""
        now = now or now_ms()
        for _attempt in range(2):
            item_id, children = self.engine.put(queue.keys, data, flags, expires_ms, now, fanout=True)
            for name, child_item_id in children:
                child = self.queues.get(name)
                if child is not None:
                    child.stored(child_item_id, data, flags, expires_ms, now)
            if item_id != GONE:
                break
            # Deleted by another node since this node last looked: its waiters are told
            # (as by a local delete), and the set creates the queue anew.
            self._forget(queue.name)
            queue = self.get_or_create(queue.name.encode())
        if item_id == FANOUT_ONLY_ACCEPTED:
            return True
        if item_id <= 0:
            return False
        queue.stored(item_id, data, flags, expires_ms, now)
        return True

    def _dead_letter(self, target_name: str, item) -> bool:
        try:
            return self.get_or_create(target_name.encode()).add(item.data, item.flags, item.expires_ms)
        except (ClientError, LimitReached, EngineUnavailable) as exc:
            log.error("dead-letter queue %r cannot take an item: %s", target_name, exc)
            return False

    def _move_expired(self, target_name: str, item) -> None:
        try:
            target = self.get_or_create(target_name.encode())
        except (ClientError, LimitReached) as exc:
            log.error("expire_to queue %r unusable (%s); item dropped", target_name, exc)
            return
        target.add(item.data, item.flags, 0)

    def delete(self, name: str) -> bool:
        keys = QueueKeys(self.options.prefix, name)
        existed = self.engine.call(
            self.engine.scripts.delete,
            keys=[keys.items, keys.meta, keys.opennodes, keys.children, keys.staged(self.engine.node_id)],
            args=[keys.base, name, int(keys.is_child)],
        )
        self.engine.call(self.engine.client.srem, self.registry, name)
        self._forget(name)
        if existed:
            self.server_stats.queue_deletes += 1
        return bool(existed)

    def _forget(self, name: str) -> None:
        queue = self.queues.pop(name, None)
        master, plus, _child = name.partition(FANOUT_SEPARATOR)
        if plus and master in self.children:
            self.children[master].pop(name, None)
            if not self.children[master]:
                del self.children[master]
        if queue is not None:
            queue.deleted = True
            queue.open.clear()
            queue.wake_all()

    def set_paused(self, queue: RedisQueue, paused: bool) -> None:
        # Resumed: the stager, which looks at the flag every poll_interval, moves on.
        self.engine.call(self.engine.client.hset, queue.keys.meta, "paused", int(paused))

    def flush_all(self) -> int:
        return sum(queue.flush() for queue in self._all_queues())

    def flush_all_expired(self) -> int:
        return sum(queue.discard_expired() for queue in self._all_queues())

    def _all_queues(self) -> list:
        self.load_all()
        return [queue for queue in self.queues.values() if not queue.deleted]

    @property
    def total_items(self) -> int:
        return sum(self._levels("llen", "items"))

    @property
    def total_bytes(self) -> int:
        return sum(self._levels("hget", "meta", "bytes"))

    def _levels(self, command: str, key: str, *extra) -> list:
        """One pipelined command per queue in the registry (every node's queues)."""
        self.load_all()
        queues = [queue for queue in self.queues.values() if not queue.deleted]
        pipe = self.engine.client.pipeline(transaction=False)
        for queue in queues:
            getattr(pipe, command)(getattr(queue.keys, key), *extra)
        return [int(value or 0) for value in self.engine.call(pipe.execute)]

    def apply_settings(self, settings) -> list:
        """New settings: each local queue gets its config, and Redis the limits (every
        node that shares the queues should read the same file)."""
        self.settings = settings
        configs = {name: settings.queue_config(name) for name in self.queues}
        changed = [name for name, config in configs.items() if config != self.queues[name].config]
        for name in changed:
            queue = self.queues[name]
            queue.config = configs[name]
            fields = config_fields(queue.config)
            self.engine.call(self.engine.client.hset, queue.keys.meta, mapping=dict(zip(fields[::2], fields[1::2], strict=True)))
        return changed

    def maintain(self) -> int:
        """Follow the registry (queues made and deleted by other nodes), drop expired
        heads, give back this node's reads open past ``open_read_timeout``, delete
        queues empty and idle past ``max_queue_age`` (engine_redis_idle.py).  Returns
        the items this node holds in memory: its open reads (the rest are in Redis)."""
        present = {name.decode() for name in self.engine.call(self.engine.client.smembers, self.registry)}
        for name in [name for name in self.queues if name not in present]:
            self._forget(name)
        now = now_ms()
        queues = [self._local(name) for name in sorted(present)]
        # One round trip for the expired heads of every queue (a sweep runs every second
        # and there may be thousands); a queue with more than one batch expired goes on.
        replies = self.engine.script_calls([partial(queue.send_take, "expire", now) for queue in queues])
        for queue, reply in zip(queues, replies, strict=True):
            if queue.took(reply, "expire", now)[1]:
                queue.discard_expired(now)
            queue.give_back_stale(now)
        for queue in idle_queues(self.engine, queues):
            log.info("queue %s: empty and idle for %ss, deleted (max_queue_age)", queue.name,
                     queue.config.max_queue_age)
            self.delete(queue.name)
            self.server_stats.queue_expires += 1
        return sum(len(queue.open) for queue in self.queues.values())

    def nodes(self) -> dict:
        """Live nodes (``erqctl nodes``): node id -> its description, with ``open_reads``,
        the open reads it holds across all queues.  One pipelined ZCARD per node and
        queue: fine for a command an operator runs, not for a hot path."""
        live = self.lease.live_nodes()
        names = [name.decode() for name in self.engine.call(self.engine.client.smembers, self.registry)]
        pipe = self.engine.client.pipeline(transaction=False)
        for node in live:
            for name in names:
                pipe.zcard(QueueKeys(self.options.prefix, name).open(node))
        counts = iter(self.engine.call(pipe.execute))
        return {node: {**info, "open_reads": sum(next(counts) for _ in names)} for node, info in live.items()}

    # -- waiting readers and the lease ------------------------------------------------------

    def poll_once(self) -> None:
        """Adopt awaited queues that another node created; make sure every queue with
        local waiters has its stager (engine_redis_staging.py: items other nodes write
        reach them through BLMOVE, not through this poll)."""
        for key in list(self.awaited):
            self.lookup(key)  # a queue another node created adopts the waiters (_local)
        for queue in list(self.queues.values()):
            if queue.waiters and not queue.deleted:
                queue.stager.ensure()

    def _every(self, seconds: float, action, what: str) -> None:
        """Run ``action`` every ``seconds`` for good; while Redis is away, once a second."""
        while True:
            gevent.sleep(seconds)
            try:
                action()
            except (EngineUnavailable, redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("engine %s: %s", what, exc)
                gevent.sleep(1.0)
            except Exception:
                log.exception("engine %s", what)

    def _reap(self) -> int:
        """Give back the open reads of every node whose lease is gone; how many."""
        total = 0
        for node in self.lease.dead_nodes():
            names = [name.decode() for name in self.engine.call(self.engine.client.smembers, self.registry)]
            left_anywhere = 0
            # One batch of every queue in one round trip; the next round does the next.
            replies = self.engine.script_calls(
                [partial(self.engine.give_back, QueueKeys(self.options.prefix, name), node) for name in names])
            for name, (given, left) in zip(names, replies, strict=True):
                total += given
                left_anywhere += left
                if given:  # at the head: blocked stagers take them
                    log.warning("node %s is gone: gave back %d of its open reads of %s", node, given, name)
            if not left_anywhere:
                self.lease.forget(node)
        return total

    def _lease_lost(self, old_node: str) -> None:
        """This node could not renew in time: its open reads are being given back by
        another node's reaper, so they are no longer ours."""
        log.error("engine: lease of node %s lost; its open reads count as given back", old_node)
        for queue in self.queues.values():
            queue.open.clear()
        if self.on_lease_lost is not None:
            self.on_lease_lost()
