"""The ``[aliases.<name>]`` tables: one name that writes to several queues (Kestrel 2.3).

::

    [aliases.signups]
    destinations = ["mail", "audit"]

A ``set`` on ``signups`` writes the item to ``mail`` and to ``audit``; a read of it finds
nothing (``erqpy.server.ops``).  Checked here, with ``file:line`` for every refusal: the
only key is ``destinations``, a non-empty list of queue names, none of them an alias (no
chains, and so no cycles) nor the alias itself, and no alias is also a ``[queues.<name>]``
table (a queue of that name could never be written).
"""

from erqpy.errors import ClientError, ConfigError
from erqpy.storage.names import check_name

ALIAS_KEYS = ("destinations",)


def check_aliases_table(value, where) -> dict[str, tuple[str, ...]]:
    """``{alias: destinations}`` from the ``[aliases]`` table; ``where(key, table)`` names
    a line for errors."""
    if not isinstance(value, dict):
        raise ConfigError("[aliases] must be a table of tables", where("aliases"))
    aliases = {}
    for name, table in value.items():
        at = f"aliases.{name}"
        if not isinstance(table, dict):
            raise ConfigError(f"[{at}] must be a table", where(name))
        _check_queue_name(name, f"[{at}]: the alias name", where(name))
        for key in table:
            if key not in ALIAS_KEYS:
                raise ConfigError(f"unknown setting {key!r} in [{at}] (an alias has only "
                                  "destinations)", where(key, at))
        destinations = table.get("destinations")
        if not isinstance(destinations, list) or not destinations:
            raise ConfigError(f"[{at}] destinations must be a non-empty list of queue names",
                              where("destinations", at) if "destinations" in table else where(name))
        for destination in destinations:
            if not isinstance(destination, str):
                raise ConfigError(f"[{at}] destinations must be queue names, not {destination!r}",
                                  where("destinations", at))
            _check_queue_name(destination, f"[{at}] destination", where("destinations", at))
            if destination == name:
                raise ConfigError(f"[{at}] names itself as a destination", where("destinations", at))
        if len(set(destinations)) != len(destinations):
            raise ConfigError(f"[{at}] names a destination twice", where("destinations", at))
        aliases[name] = tuple(destinations)
    for name, destinations in aliases.items():
        for destination in destinations:
            if destination in aliases:
                raise ConfigError(f"[aliases.{name}] destination {destination!r} is an alias; "
                                  "an alias writes to queues only", where("destinations", f"aliases.{name}"))
    return aliases


def check_aliases_against_queues(aliases: dict, queues: dict, where) -> None:
    """No alias is also a ``[queues.<name>]`` table: a set would never reach that queue."""
    for name in aliases:
        if name in queues:
            raise ConfigError(f"{name!r} is both an alias and a [queues.{name}] table; a set on it "
                              "would go to the alias's destinations, never to the queue", where(name))


def _check_queue_name(name: str, what: str, at: str) -> None:
    try:
        check_name(name.encode())
    except ClientError:
        raise ConfigError(f"{what} {name!r} is not a queue name (no spaces, control characters, "
                          "'/', '.' or '~')", at) from None
