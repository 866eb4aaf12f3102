"""The ``[storage]`` table: where queues live.

``backend = "journal"`` (the default): journals and segments in the data directory.
``backend = "redis"`` (engine mode, issue 13): queues in Redis, so that several erqpy
nodes on one Redis serve the same queues; exactly one of ``url``, ``sentinels`` (with
``service``) or ``cluster_nodes`` says where.  The other keys are
``storage.engine_redis_client.EngineOptions``, checked there.
"""

from erqpy.errors import ConfigError

BACKENDS = ("journal", "redis")
#: key -> type, besides EngineOptions' keys.
LOCATION_KEYS: dict[str, type | tuple[type, ...]] = {
    "url": str, "sentinels": list, "service": str, "cluster_nodes": list}
OPTION_KEYS: dict[str, type | tuple[type, ...]] = {"prefix": str, "lease_ttl": (int, float), "poll_interval": (int, float), "reap_batch": int,
               "wait_replicas": int, "wait_timeout_ms": int, "on_short_wait": str}


KEYS = {"backend": str, **LOCATION_KEYS, **OPTION_KEYS}


def check_storage_table(value, where) -> dict:
    """The ``[storage]`` table checked; ``where(key)`` names its line for errors."""
    if not isinstance(value, dict):
        raise ConfigError("[storage] must be a table", where("storage"))
    for key, val in value.items():
        kind = KEYS.get(key)
        if kind is None:
            raise ConfigError(f"unknown setting {key!r} in [storage]", where(key))
        if not isinstance(val, kind) or isinstance(val, bool):
            raise ConfigError(f"storage.{key} has the wrong type ({type(val).__name__})", where(key))
    backend = value.get("backend", "journal")
    if backend not in BACKENDS:
        raise ConfigError(f"storage.backend must be one of {', '.join(BACKENDS)}, not {backend!r}",
                          where("backend"))
    if backend == "redis":
        given = [key for key in ("url", "sentinels", "cluster_nodes") if value.get(key)]
        if len(given) != 1:
            raise ConfigError('backend = "redis" needs exactly one of url, sentinels (with service) '
                              "or cluster_nodes", where("backend"))
        if given == ["sentinels"] and not value.get("service"):
            raise ConfigError("storage.sentinels needs storage.service", where("sentinels"))
        for key in ("sentinels", "cluster_nodes"):
            if key in value and not all(_is_address(entry) for entry in value[key]):
                raise ConfigError(f'storage.{key} must be a list of "host:port"', where(key))
        try:
            engine_options(value)
        except ConfigError as exc:
            raise ConfigError(f"storage.{exc.reason}", where(exc.reason.split()[0])) from None
    return dict(value)


def engine_options(table: dict):
    try:
        from erqpy.storage.engine_redis_client import EngineOptions  # only in engine mode
    except ImportError as exc:  # redis-py is the optional "engine" extra
        raise ConfigError(f'backend "redis" needs the engine extra (pip install "erqpy[engine]"): {exc}') from None
    return EngineOptions(**{key: table[key] for key in OPTION_KEYS if key in table})


def addresses(entries) -> list[tuple[str, int]]:
    """``["host:port", ...]`` as (host, port) pairs."""
    return [(entry.rpartition(":")[0].strip("[]"), int(entry.rpartition(":")[2])) for entry in entries]


def _is_address(entry) -> bool:
    host, sep, port = entry.rpartition(":") if isinstance(entry, str) else ("", "", "")
    return bool(sep and host and port.isdigit())


def uses_journals(settings) -> bool:
    """Whether the queues live in this node's journals (else in an engine: Redis)."""
    return settings.storage.get("backend", "journal") == "journal"


def open_collection(settings, datadir, syncer, events, stats):
    """The collection of queues ``settings.storage`` asks for."""
    table = settings.storage
    if uses_journals(settings):
        from erqpy.storage.collection import QueueCollection

        return QueueCollection(datadir, settings, syncer, events, stats)
    from erqpy.storage.engine_redis import RedisCollection, connect

    client = connect(url=table.get("url", ""), sentinels=addresses(table.get("sentinels", [])),
                     service=table.get("service", ""), cluster_nodes=addresses(table.get("cluster_nodes", [])))
    return RedisCollection(client, settings, events, stats, engine_options(table))
