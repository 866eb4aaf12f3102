"""meta-memcache (PyPI, the pyproject ``test`` extra) pointed at erqpy servers: the client,
the connection pools it made (to drop a connection as a crashed consumer does), and the
client's raw passthrough for ``stats`` (it has no stats call of its own)."""

import itertools
import os
import re

from meta_memcache import CacheClient, ServerAddress, connection_pool_factory_builder

#: Longer than any ``/t=`` wait the tests ask for: the client's own timeout (1 s by
#: default) would otherwise end a blocking read before erqpy does.
RECV_TIMEOUT = 10.0


class MetaClient:
    """A meta-memcache ``CacheClient`` over ``addresses``, one connection per server."""

    def __init__(self, *addresses):
        build = connection_pool_factory_builder(
            initial_pool_size=1, max_pool_size=1, connection_timeout=5, recv_timeout=RECV_TIMEOUT,
        )
        self.pools = {}

        def pool_for(server):
            pool = build(server)
            self.pools[(server.host, server.port)] = pool
            return pool

        self.cache = CacheClient.cache_client_from_servers(
            servers=[ServerAddress(host=host, port=port) for host, port in addresses],
            connection_pool_factory_fn=pool_for,
        )

    def drop_connections(self) -> None:
        """Close every pooled connection without a word, as a consumer that dies does."""
        for pool in self.pools.values():
            pool.pop_connection().close()

    def queue(self, address, name: str):
        """The queue's stats fields by the meta debug command ``me``, through the raw
        passthrough: ``{field: int}``, or None when the server has no such queue."""
        with self.pools[tuple(address)].get_connection() as conn:
            reply = conn.raw_cmd(b"me " + name.encode()).decode().split()
        if reply == ["EN"]:
            return None
        assert reply[:2] == ["ME", name], reply
        return {field: int(value) for field, value in (pair.split("=") for pair in reply[2:])}

    def stats(self, address) -> dict:
        """``stats`` through the client's raw command passthrough: ``{name: value}``."""
        with self.pools[tuple(address)].get_connection() as conn:
            reply = conn.raw_cmd(b"stats", multi_line=True)
        fields = {}
        for line in reply.decode().splitlines():
            if line.startswith("STAT "):
                _stat, name, value = line.split(" ", 2)
                fields[name] = value
        return fields


_counter = itertools.count(1)


def queue_name(hint: str) -> str:
    """A queue name of its own for each test (the servers are shared by a module)."""
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', hint)[:60]}_{os.getpid()}_{next(_counter)}"
