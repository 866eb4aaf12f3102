"""Aliases at run time: the target of a ``set`` on an alias, and its counters.

The names come from the settings (``[aliases.<name>]``, ``alias_config``), so a config
reload changes them; the counters live in ``ServerState.alias_stats`` and survive a
reload (and an alias removed and added back keeps counting).  ``erqpy.server.ops`` does
the writing: every front end's ``set`` on an alias goes through ``ops.put``.
"""

import dataclasses


class AliasStats:
    """Kestrel's alias counters: items and payload bytes ``set`` on the alias."""

    __slots__ = ("put_items", "put_bytes")

    def __init__(self):
        self.put_items = 0
        self.put_bytes = 0


class Alias:
    """What ``ops.queue_for_write`` (and the memcache ``set``) write to when the key is an
    alias: ``ops.put`` writes to each destination instead of one queue."""

    __slots__ = ("name", "destinations", "stats", "settings")

    def __init__(self, name: str, destinations: tuple, stats: AliasStats, settings):
        self.name = name
        self.destinations = destinations
        self.stats = stats
        self.settings = settings

    @property
    def config(self):
        """For a front end that checks an item's size before ``ops.put`` (HTTP): the
        largest ``max_item_size`` of the destinations, since each destination checks its
        own and one that takes the item keeps it."""
        largest = max(self.settings.queue_config(d).max_item_size for d in self.destinations)
        return dataclasses.replace(self.settings.queue_config(self.destinations[0]), max_item_size=largest)


def alias_named(server, raw: bytes):
    """The ``Alias`` named ``raw``, or None when no alias has that name."""
    aliases = server.settings.aliases
    if not aliases:
        return None
    name = raw.decode("utf-8", "replace")
    destinations = aliases.get(name)
    if destinations is None:
        return None
    stats = server.alias_stats.get(name)
    if stats is None:
        stats = server.alias_stats[name] = AliasStats()
    return Alias(name, destinations, stats, server.settings)


def is_alias(server, raw: bytes) -> bool:
    """True when ``raw`` names an alias: a read of it finds nothing, at once (``ops``)."""
    aliases = server.settings.aliases
    return bool(aliases) and raw.decode("utf-8", "replace") in aliases


def alias_fields(server) -> list[tuple[str, dict]]:
    """``[(alias, {put_items, put_bytes, children})]`` for every configured alias, sorted
    by name: Kestrel's ``alias_<name>_<field>`` stats."""
    out = []
    for name, destinations in sorted(server.settings.aliases.items()):
        stats = server.alias_stats.get(name) or AliasStats()
        out.append((name, {"put_items": stats.put_items, "put_bytes": stats.put_bytes,
                           "children": ",".join(destinations)}))
    return out
