"""Node leases for the Redis backend (issue 13 item 4).

Each node registers in ``<prefix>:nodes`` (node id -> a JSON description) and holds
``<prefix>:lease:<node>``, a key with a TTL of ``lease_ttl`` that it renews every third
of it.  A node whose key has expired is dead to the others: their reapers give its open
reads back (``RedisCollection._reap``) and then forget it.

A node that cannot renew in time (Redis unreachable for longer than the TTL, or the key
already gone when it renews) must assume its reads were given back: it forgets them,
tells the server (``on_lost``, which closes the connections that hold open reads) and
registers again under a new node id, so that a reaper still working on the old id can
never be confused by a node that came back with it.
"""

import json
import logging
import os
import socket
import time
import uuid

import gevent
import redis

from erqpy.errors import Unavailable

log = logging.getLogger("erqpy.engine")


def new_node_id() -> str:
    # No ':' (it separates the parts of an open-read key) and unique across restarts.
    return f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


class NodeLease:
    def __init__(self, client, options, on_lost):
        self.client = client
        self.ttl_ms = int(options.lease_ttl * 1000)
        self.nodes_key = f"{options.prefix}:nodes"
        self.lease_prefix = f"{options.prefix}:lease:"
        self.on_lost = on_lost  # (old node id) -> None
        self.node_id = ""
        self.renewed_at = 0.0  # time.monotonic() of the last successful renewal
        self.lost = False

    def acquire(self) -> None:
        """Register under a new node id and take its lease."""
        node_id = new_node_id()
        info = {"host": socket.gethostname(), "pid": os.getpid(), "started_ms": int(time.time() * 1000)}
        # Not a transaction: in Redis Cluster the two keys are in different slots.  The
        # description goes first, so a lease never exists for a node nobody can list.
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.nodes_key, node_id, json.dumps(info))
        pipe.set(self.lease_prefix + node_id, b"1", px=self.ttl_ms, nx=True)
        pipe.execute()
        self.node_id = node_id
        self.renewed_at = time.monotonic()
        self.lost = False

    def renew(self) -> bool:
        """Extend the lease; False (and ``on_lost``) when it had already expired."""
        started = time.monotonic()
        if self.lost or not self.client.set(self.lease_prefix + self.node_id, b"1", px=self.ttl_ms, xx=True):
            self._give_up()
            self.acquire()
            return False
        self.renewed_at = started
        return True

    def _give_up(self) -> None:
        if not self.lost:
            self.lost = True
            self.on_lost(self.node_id)

    def keep(self) -> None:
        """The lease keeper: renew every third of the TTL.  Nothing else runs in this
        greenlet, so a long reap cannot make this node miss its own renewal."""
        while True:
            gevent.sleep(self.ttl_ms / 3000)
            try:
                self.renew()
            except (redis.ConnectionError, redis.TimeoutError, OSError, Unavailable) as exc:
                log.warning("engine: cannot renew the lease of node %s: %s", self.node_id, exc)
                if time.monotonic() - self.renewed_at > self.ttl_ms / 1000:
                    self._give_up()  # acquire() again once Redis answers
            except Exception:
                log.exception("engine: lease keeper")

    def dead_nodes(self) -> list[str]:
        """Registered nodes other than this one whose lease key is gone."""
        nodes = [node.decode() for node in self.client.hkeys(self.nodes_key)]
        others = [node for node in nodes if node != self.node_id]
        if not others:
            return []
        pipe = self.client.pipeline(transaction=False)
        for node in others:
            pipe.exists(self.lease_prefix + node)
        return [node for node, alive in zip(others, pipe.execute(), strict=True) if not alive]

    def live_nodes(self) -> dict:
        """Node id -> its description, with ``lease_ms_left`` (the lease key's PTTL) and
        ``self`` (this node), for the nodes whose lease is held."""
        described = self.client.hgetall(self.nodes_key)
        nodes = list(described)
        pipe = self.client.pipeline(transaction=False)
        for node in nodes:
            pipe.pttl(self.lease_prefix + node.decode())
        live = {}
        for node, left in zip(nodes, pipe.execute(), strict=True):
            if left > 0:  # -2: no lease key, the node is dead
                name = node.decode()
                live[name] = {**json.loads(described[node]), "lease_ms_left": left, "self": name == self.node_id}
        return live

    def forget(self, node: str) -> None:
        self.client.hdel(self.nodes_key, node)

    def release(self, forget: bool) -> None:
        """Clean stop: drop the lease (and the registration once nothing is left open)."""
        try:
            self.client.delete(self.lease_prefix + self.node_id)
            if forget:
                self.forget(self.node_id)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("engine: lease of node %s not released (%s); it expires", self.node_id, exc)
