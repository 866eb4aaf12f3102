"""Settings: built-in defaults, a TOML file, the environment and the command line.

Precedence is command line > environment (``ERQPY_*``, applied by click) > file >
built-in defaults.  Per-queue settings resolve as: built-in ``QueueConfig`` defaults, then
``[queues.default]``, then a fanout child's master (``[queues.m]`` for ``m+x``), then the
queue's own table.

A bad file is refused as a whole with ``ConfigError`` naming the file, line and reason,
so a reload of a broken file leaves the running configuration in force.
"""

import dataclasses
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field

from erqpy.errors import ConfigError
from erqpy.journal import FSYNC_INTERVAL, FSYNC_POLICIES

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
    max_memory_size: int = 64 * MiB  # past this, new items wait on disk (read-behind)
    max_journal_size: int = 16 * MiB  # journal rewrite threshold, and segment file size
    keep_journal: bool = True  # False: memory-only queue, lost on restart
    fsync: str = ""  # "" = the server's policy
    max_open_reads: int = 100  # per connection per queue
    open_read_timeout: float = 0.0  # open reads older than this are given back; 0 = never
    max_queue_age: float = 0.0  # an empty, idle queue older than this is deleted; 0 = never
    fanout_only: bool = False  # a master that only feeds its children

    def validate(self, where: str = "") -> "QueueConfig":
        for name in ("max_items", "max_size", "max_item_size", "max_memory_size", "max_journal_size",
                     "max_open_reads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, not {value!r}", where)
        for name in ("max_age", "open_read_timeout", "max_queue_age"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be a number of seconds >= 0, not {value!r}", where)
        if self.fsync and self.fsync not in FSYNC_POLICIES:
            raise ConfigError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}", where)
        for name in ("discard_old_when_full", "keep_journal", "fanout_only"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false", where)
        if not isinstance(self.expire_to, str):
            raise ConfigError("expire_to must be a queue name", where)
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
    log_level: str = "info"
    admin_commands: bool = False  # allow status/reload/shutdown on the data port
    handlers_path: str = ""  # handler source to load; "" = erqpy/handlers.py
    control_socket: str = ""  # "" = <data_dir>/erqpy.sock
    control_host: str = ""  # optional TCP control listener on loopback
    control_port: int = 0
    control_token: str = ""
    shutdown_grace: float = 10.0  # seconds for in-flight commands at shutdown
    # Per connection: past this many bytes of replies not yet taken by the socket, the
    # connection stops running requests until the client reads (one reply may exceed it).
    max_output_buffer: int = 4 * MiB
    # All connections together: bytes of partial requests (lines, data blocks) held.
    # The connection whose input passes it gets SERVER_ERROR and is closed.
    max_buffered_input: int = 256 * MiB
    # Seconds a started request (a partial line or data block) may take to complete;
    # then the connection is closed.  0 = no limit.
    request_timeout: float = 30.0
    config_path: str = ""
    queues: dict = field(default_factory=dict)
    plugins: dict = field(default_factory=dict)  # {"enabled": [...], "<name>": {...}}
    sections: dict = field(default_factory=dict)  # other top-level tables (http, ...)

    def queue_config(self, name: str) -> QueueConfig:
        merged = dict(self.queues.get("default", {}))
        master, plus, _child = name.partition("+")
        if plus:
            merged.update(self.queues.get(master, {}))
        merged.update(self.queues.get(name, {}))
        return QueueConfig(**merged)

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
    "log_level": str,
    "admin_commands": bool,
    "handlers_path": str,
    "shutdown_grace": (int, float),
    "max_output_buffer": int,
    "max_buffered_input": int,
    "request_timeout": (int, float),
}
CONTROL_KEYS = {"socket": str, "host": str, "port": int, "token": str}
LOG_LEVELS = ("debug", "info", "warning", "error")


def _line_of(text: str, key: str, table: str = "") -> int:
    # The same key may be in several tables (max_items in [queues.default] and in
    # [queues.q]): look for it after the header of the table it was found wrong in.
    start = 0
    if table:
        parts = [rf"(?:{re.escape(p)}|\"{re.escape(p)}\"|'{re.escape(p)}')" for p in table.split(".", 1)]
        dotted = r"\s*\.\s*".join(parts)
        header = re.search(rf"^\s*\[\s*{dotted}\s*\]", text, re.MULTILINE)
        start = header.end() if header else 0
    match = re.compile(rf"^\s*{re.escape(key)}\s*=", re.MULTILINE).search(text, start)
    if match is None:
        match = re.search(rf"^\s*\[[^\]]*{re.escape(key)}[^\]]*\]", text, re.MULTILINE)
    return text.count("\n", 0, match.start()) + 1 if match else 0


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
        raise ConfigError(str(exc), path) from exc

    def where(key, table=""):
        line = _line_of(text, key, table)
        return f"{path}:{line}" if line else path

    out = {"config_path": os.path.abspath(path)}
    for table, value in doc.items():
        if table == "server":
            _check_table(value, SERVER_KEYS, "server", where)
            out.update(value)
        elif table == "control":
            _check_table(value, CONTROL_KEYS, "control", where)
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
        elif table == "plugins":
            if not isinstance(value, dict):
                raise ConfigError("[plugins] must be a table", where("plugins"))
            enabled = value.get("enabled", [])
            if not isinstance(enabled, list) or not all(isinstance(n, str) for n in enabled):
                raise ConfigError("plugins.enabled must be a list of names", where("enabled"))
            out["plugins"] = value
        elif isinstance(value, dict):
            out.setdefault("sections", {})[table] = value
        else:
            raise ConfigError(f"unknown top-level setting {table!r}", where(table))
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
    if settings.fsync not in FSYNC_POLICIES:
        raise ConfigError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}", where)
    if settings.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}", where)
    if not 0 <= settings.port <= 65535:
        raise ConfigError("port must be 0 to 65535", where)
    if settings.max_connections < 1:
        raise ConfigError("max_connections must be at least 1", where)
    for name in ("max_output_buffer", "max_buffered_input"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"{name} must be at least 1", where)
    if settings.request_timeout < 0:
        raise ConfigError("request_timeout must be a number of seconds >= 0", where)
    if settings.fsync_interval_ms < 1:
        raise ConfigError("fsync_interval_ms must be at least 1", where)
    for name in settings.queues:
        try:
            settings.queue_config(name).validate(where)
        except TypeError as exc:
            raise ConfigError(str(exc), where) from None
