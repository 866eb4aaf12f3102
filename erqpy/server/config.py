"""Settings: built-in defaults, a TOML file, the environment and the command line.

Precedence is command line > environment (``ERQPY_*``, applied by click) > file >
built-in defaults.  Per-queue settings resolve as: built-in ``QueueConfig`` defaults, then
``[queues.default]``, then a fanout child's master (``[queues.m]`` for ``m+x``), then the
queue's own table.

A bad file is refused as a whole with ``ConfigError`` naming the file, line and reason,
so a reload of a broken file leaves the running configuration in force.
"""

import dataclasses
import functools
import ipaddress
import os
import re
import socket
import sys
import tomllib
from dataclasses import dataclass, field

from erqpy.storage.names import check_name
from erqpy.errors import ClientError, ConfigError
from erqpy.server.alias_config import check_aliases_against_queues, check_aliases_table
from erqpy.server.storage_config import check_storage_table
from erqpy.server.config_lines import did_you_mean, line_of, locate
from erqpy.storage.syncer import FSYNC_INTERVAL, FSYNC_POLICIES

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 22133
DEFAULT_DATA_DIR = "./data"
MiB = 1024 * 1024
UNLIMITED = sys.maxsize


@dataclass(frozen=True)
class QueueConfig:
    """Per-queue settings, Kestrel's names in snake case.  Sizes in bytes, ages in seconds."""

    max_items: int = UNLIMITED  # a set beyond this is refused (or discards the head)
    max_size: int = UNLIMITED  # total payload bytes, same rule
    max_item_size: int = 16 * MiB  # larger items get NOT_STORED
    max_age: float = 0.0  # caps every item's life; 0 = no cap
    discard_old_when_full: bool = False  # full queue: drop the head instead of refusing
    expire_to: str = ""  # expired items move to this queue instead of being dropped
    # An item handed out this many times as a reliable read without a confirm moves to
    # ``dead_letter_to`` ("" = <queue>_errors) instead of being delivered again; 0 = never.
    max_deliveries: int = 0
    dead_letter_to: str = ""
    max_memory_size: int = 64 * MiB  # past this, new items wait on disk (read-behind)
    max_journal_size: int = 16 * MiB  # journal rewrite threshold, and segment file size
    keep_journal: bool = True  # False: memory-only queue, lost on restart
    fsync: str = ""  # "" = the server's policy
    max_open_reads: int = 100  # per connection per queue
    open_read_timeout: float = 0.0  # open reads older than this are given back; 0 = never
    max_queue_age: float = 0.0  # an empty, idle queue older than this is deleted; 0 = never
    fanout_only: bool = False  # a master that only feeds its children
    # Children ``m+x`` a master may have: every set to m is written once per child, so
    # this bounds the work (and disk writes) one set can cause.  Read from m's config.
    max_fanout_children: int = 64

    def validate(self, where: str = "") -> "QueueConfig":
        for name in ("max_items", "max_size", "max_item_size", "max_memory_size", "max_journal_size",
                     "max_open_reads", "max_fanout_children"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, not {value!r}", where)
        if not isinstance(self.max_deliveries, int) or isinstance(self.max_deliveries, bool) \
                or self.max_deliveries < 0:
            raise ConfigError(f"max_deliveries must be an integer >= 0 (0 = no limit), "
                              f"not {self.max_deliveries!r}", where)
        for name in ("max_age", "open_read_timeout", "max_queue_age"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be a number of seconds >= 0, not {value!r}", where)
        if self.fsync and self.fsync not in FSYNC_POLICIES:
            raise ConfigError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}", where)
        for name in ("discard_old_when_full", "keep_journal", "fanout_only"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false", where)
        for name in ("expire_to", "dead_letter_to"):
            target = getattr(self, name)
            if not isinstance(target, str):
                raise ConfigError(f"{name} must be a queue name", where)
            if target:
                try:
                    check_name(target.encode())
                except ClientError:
                    raise ConfigError(f"{name} must be a queue name, not {target!r} "
                                      "(no spaces, control characters, '/', '.' or '~')", where) from None
        return self


QUEUE_KEYS = frozenset(f.name for f in dataclasses.fields(QueueConfig))


@dataclass(frozen=True)
class Settings:
    """Server-wide settings.  ``queues`` maps a queue name (or ``default``) to overrides."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    data_dir: str = DEFAULT_DATA_DIR
    fsync: str = FSYNC_INTERVAL
    fsync_interval_ms: int = 100
    max_connections: int = 4096
    # Queues the server will create (loaded ones always count and always load).  Each
    # queue holds an open journal descriptor and ~3 KiB of memory when empty, and
    # stats/maintenance walk all of them.
    max_queues: int = 10_000
    log_level: str = "info"
    admin_commands: bool = False  # allow status/reload/shutdown on the data port
    handlers_path: str = ""  # handler source to load; "" = erqpy/server/handlers.py
    control_socket: str = ""  # "" = <data_dir>/erqpy.sock
    control_host: str = ""  # optional TCP control listener on loopback
    control_port: int = 0
    control_token: str = ""
    shutdown_grace: float = 10.0  # seconds for in-flight commands at shutdown
    file_mode: int = 0o600  # journals, segments, status files: payloads are private
    dir_mode: int = 0o700  # the data directory, when the server creates it
    max_open_files: int = 0  # queue files kept open; 0 = three quarters of RLIMIT_NOFILE
    # Per connection: past this many bytes of replies not yet taken by the socket, the
    # connection stops running requests until the client reads (one reply may exceed it).
    max_output_buffer: int = 4 * MiB
    # All connections together: bytes of partial requests (lines, data blocks) held.
    # The connection whose input passes it gets SERVER_ERROR and is closed.
    max_buffered_input: int = 192 * MiB  # with the rest of a busy server, under the 256 MiB aim
    # Seconds a started request (a partial line or data block) may take to complete;
    # then the connection is closed.  0 = no limit.
    request_timeout: float = 30.0
    config_path: str = ""
    queues: dict = field(default_factory=dict)
    plugins: dict = field(default_factory=dict)  # {"enabled": [...], "<name>": {...}}
    storage: dict = field(default_factory=dict)  # the [storage] table (storage_config)
    aliases: dict = field(default_factory=dict)  # {alias: (destination, ...)} (alias_config)
    sections: dict = field(default_factory=dict)  # other top-level tables (http, ...)
    # The file as read, so that checks made after loading (plugin tables) can name a line.
    config_text: str = field(default="", repr=False, compare=False)

    def queue_config(self, name: str) -> QueueConfig:
        master, plus, _child = name.partition("+")
        inherited = self.queues.get(master) if plus else None
        own = self.queues.get(name)
        if own is None and inherited is None:
            # Shared by every queue without a table: a reload with 10,000 queues builds
            # and compares one config, not 10,000 (ms on the hub with 500 queues).
            return self._default_queue_config
        merged = dict(self.queues.get("default", {}))
        merged.update(inherited or {})
        merged.update(own or {})
        return QueueConfig(**merged)

    @functools.cached_property
    def _default_queue_config(self) -> QueueConfig:
        # In __dict__, not a field; dataclasses.replace (a new Settings) starts without it.
        return QueueConfig(**self.queues.get("default", {}))

    @property
    def largest_item_size(self) -> int:
        """The item limit the parser applies before it knows the queue: the largest
        ``max_item_size`` of any queue table (each queue then checks its own)."""
        names = ["default", *self.queues]
        return max(self.queue_config(name).max_item_size for name in names)

    @property
    def control_socket_path(self) -> str:
        return self.control_socket or os.path.join(self.data_dir, "erqpy.sock")


SERVER_KEYS = {
    "host": str,
    "port": int,
    "data_dir": str,
    "fsync": str,
    "fsync_interval_ms": int,
    "max_connections": int,
    "max_queues": int,
    "log_level": str,
    "admin_commands": bool,
    "handlers_path": str,
    "shutdown_grace": (int, float),
    "file_mode": int,
    "dir_mode": int,
    "max_open_files": int,
    "max_output_buffer": int,
    "max_buffered_input": int,
    "request_timeout": (int, float),
}
CONTROL_KEYS = {"socket": str, "host": str, "port": int, "token": str}
LOG_LEVELS = ("debug", "info", "warning", "error")


def loopback_address(host: str) -> str:
    """The address a loopback-only listener (the TCP control channel) binds for ``host``:
    ``host`` itself if it is a loopback IP address, or the loopback address a name such as
    ``localhost`` resolves to (IPv4 first).  ValueError, saying why, for anything else."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ValueError(f"{host!r} does not resolve ({exc.strerror or exc})") from None
        found = sorted({ipaddress.ip_address(info[4][0]) for info in infos}, key=lambda a: (a.version, a))
        if not found or not all(a.is_loopback for a in found):
            shown = ", ".join(map(str, found))
            raise ValueError(f"{host!r} resolves to {shown}: not only loopback addresses") from None
        address = found[0]
    if not address.is_loopback:
        raise ValueError(f"{host!r} is not a loopback address")
    return str(address)
CORE_TABLES = ("server", "control", "queues", "plugins", "storage", "aliases")


def load_file(path: str) -> dict:
    """Read and check a TOML file; return keyword overrides for ``Settings``."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(exc.strerror or str(exc), path) from exc
    text = raw.decode("utf-8", "replace")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        at = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        raise ConfigError(str(exc), f"{path}:{at.group(1)}" if at else path) from exc

    def where(key, table=""):
        line = line_of(text, key, table)
        return f"{path}:{line}" if line else path

    # Errors name the path as given; config_path (absolute) is what a reload re-reads.
    out: dict = {"config_path": os.path.abspath(path), "config_text": text}
    for table, value in doc.items():
        if table == "server":
            _check_table(value, SERVER_KEYS, "server", where)
            out.update(value)
        elif table == "control":
            _check_table(value, CONTROL_KEYS, "control", where)
            if value.get("host"):
                try:
                    loopback_address(value["host"])
                except ValueError as exc:
                    raise ConfigError(f"control.host {exc}", where("host", "control")) from None
            out.update({f"control_{k}": v for k, v in value.items()})
        elif table == "queues":
            if not isinstance(value, dict):
                raise ConfigError("[queues] must be a table of tables", where("queues"))
            queues = {}
            for name, overrides in value.items():
                if not isinstance(overrides, dict):
                    raise ConfigError(f"[queues.{name}] must be a table", where(name))
                unknown = set(overrides) - QUEUE_KEYS
                if unknown:
                    key = sorted(unknown)[0]
                    raise ConfigError(f"unknown queue setting {key!r} in [queues.{name}]",
                                      where(key, f"queues.{name}"))
                try:
                    QueueConfig(**overrides).validate()
                except ConfigError as exc:
                    key = exc.reason.split()[0]
                    raise ConfigError(f"[queues.{name}] {exc.reason}", where(key, f"queues.{name}")) from None
                except TypeError as exc:
                    raise ConfigError(f"[queues.{name}] {exc}", where(name)) from None
                queues[name] = dict(overrides)
            out["queues"] = queues
        elif table == "storage":
            out["storage"] = check_storage_table(value, lambda key: where(key, "storage"))
        elif table == "aliases":
            out["aliases"] = check_aliases_table(value, where)
        elif table == "plugins":
            if not isinstance(value, dict):
                raise ConfigError("[plugins] must be a table", where("plugins"))
            enabled = value.get("enabled", [])
            if not isinstance(enabled, list) or not all(isinstance(n, str) for n in enabled):
                raise ConfigError("plugins.enabled must be a list of names", where("enabled"))
            out["plugins"] = value
        elif isinstance(value, dict):
            # Checked once the plugins are known (check_plugin_tables): one may own it.
            out.setdefault("sections", {})[table] = value
        else:
            hint = did_you_mean(text, table, CORE_TABLES)
            raise ConfigError(f"unknown top-level setting {table!r}; settings go in a table{hint}",
                              where(table))
    check_aliases_against_queues(out.get("aliases", {}), out.get("queues", {}), where)
    return out


def _check_table(value, allowed: dict, table: str, where) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"[{table}] must be a table", where(table))
    for key, val in value.items():
        kind = allowed.get(key)
        if kind is None:
            raise ConfigError(f"unknown setting {key!r} in [{table}]", where(key))
        if not isinstance(val, kind) or (kind is int and isinstance(val, bool)):
            raise ConfigError(f"{table}.{key} has the wrong type ({type(val).__name__})", where(key))


def build_settings(config_path: str | None = None, **overrides) -> Settings:
    """Defaults, then the file, then ``overrides`` (values that are None are skipped)."""
    values = load_file(config_path) if config_path else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    settings = Settings(**values)
    validate_settings(settings)
    return settings


def validate_settings(settings: Settings) -> None:
    where = settings.config_path

    def at(key, table="server"):
        return locate(settings, key, table) if settings.config_text else where

    if settings.fsync not in FSYNC_POLICIES:
        raise ConfigError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}", at("fsync"))
    if settings.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}", at("log_level"))
    if not 0 <= settings.port <= 65535:
        raise ConfigError("port must be 0 to 65535", at("port"))
    if settings.max_connections < 1:
        raise ConfigError("max_connections must be at least 1", at("max_connections"))
    if settings.max_queues < 1:
        raise ConfigError("max_queues must be at least 1", at("max_queues"))
    for name in ("max_output_buffer", "max_buffered_input"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"{name} must be at least 1", at(name))
    if settings.request_timeout < 0:
        raise ConfigError("request_timeout must be a number of seconds >= 0", at("request_timeout"))
    if settings.fsync_interval_ms < 1:
        raise ConfigError("fsync_interval_ms must be at least 1", at("fsync_interval_ms"))
    # The server itself must be able to read and write what it creates.
    for name, needed in (("file_mode", 0o600), ("dir_mode", 0o700)):
        mode = getattr(settings, name)
        if not 0 <= mode <= 0o777 or mode & needed != needed:
            raise ConfigError(f"{name} must be a permission mode (e.g. 0o{needed:o}) that "
                              f"includes 0o{needed:o}, not {mode!r}", at(name))
    if settings.max_open_files < 0:
        raise ConfigError("max_open_files must be 0 (derived from the open file limit) or more", at("max_open_files"))
    for name in settings.queues:
        try:
            settings.queue_config(name).validate(where)
        except TypeError as exc:
            raise ConfigError(str(exc), where) from None
    _check_expire_to(settings)
    _check_dead_letter_to(settings)


def _expire_to_source(settings: Settings, name: str) -> str:
    """The queues table whose ``expire_to`` applies to queue ``name``."""
    master, plus, _child = name.partition("+")
    for table in (name, master if plus else None, "default"):
        if table and "expire_to" in settings.queues.get(table, {}):
            return table
    return "default"


def _check_expire_to(settings: Settings) -> None:
    """``expire_to`` must lead away: a queue expiring into itself drops what expires
    (silently), and a cycle (a -> b -> a) moves items round forever."""
    starts = [n for n in settings.queues if n != "default"]
    default_target = settings.queues.get("default", {}).get("expire_to")
    if default_target:
        starts.append(default_target)
    limit = len(settings.queues) + 2  # a path longer than that has repeated a queue
    for start in starts:
        path = [start]
        while len(path) <= limit:
            current = path[-1]
            target = settings.queue_config(current).expire_to
            if not target:
                break
            source = _expire_to_source(settings, current)
            where = locate(settings, "expire_to", f"queues.{source}") if settings.config_text else settings.config_path
            if target == current:
                if source == current:
                    reason = (f"[queues.{current}] expire_to names the queue itself, so what expires "
                              "there would be dropped; leave expire_to out to drop expired items")
                else:
                    reason = (f"expire_to = {target!r} in [queues.{source}] also applies to queue "
                              f"{target!r} itself, which would drop what expires there; give "
                              f"[queues.{target}] its own expire_to (\"\" to drop)")
                raise ConfigError(reason, where)
            if target in path:
                cycle = " -> ".join(path[path.index(target):] + [target])
                raise ConfigError(f"expire_to makes a cycle ({cycle}): expired items would move "
                                  "round it forever", where)
            path.append(target)


def _check_dead_letter_to(settings: Settings) -> None:
    """A queue dead-lettering into itself would put each over-delivered item back at its
    tail with a fresh count, which is the endless cycle ``max_deliveries`` exists to end."""
    for name in settings.queues:
        config = settings.queue_config(name)
        if name != "default" and config.max_deliveries and config.dead_letter_to == name:
            where = locate(settings, "dead_letter_to", f"queues.{name}") if settings.config_text else settings.config_path
            raise ConfigError(f"[queues.{name}] dead_letter_to names the queue itself; name another "
                              f"queue (or leave it out: {name}_errors)", where)
