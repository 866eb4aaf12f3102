"""ServerState: the one root object that outlives every handler reload.

Everything long-lived hangs from here: the queues and their journals, the syncer, live
connections, counters, the handler registry, plugins, the debug flag and the server
status.  Handlers reach it as ``conn.state`` and keep no reference of their own.
"""

import dataclasses
import logging
import os
import time

from gevent.event import Event

from erqpy import __version__
from erqpy.storage.collection import QueueCollection
from erqpy.storage.datadir import STATUSES, DataDir
from erqpy.descriptors import Reserve
from erqpy.events import EventBus
from erqpy.storage.syncer import Syncer

log = logging.getLogger("erqpy")

#: Per-queue fields of ``stats`` and ``dump_stats``, in output order (PROTOCOL.md).
QUEUE_FIELDS = (
    "items", "bytes", "total_items", "logsize", "expired_items", "mem_items", "mem_bytes",
    "age", "discarded", "dead_lettered", "waiters", "open_transactions", "transactions",
    "canceled_transactions", "total_flushes", "journal_rewrites", "journal_rotations",
)


class ServerStats:
    """Server-wide counters; the levels (items, connections) are computed on demand."""

    __slots__ = (
        "total_connections", "cmd_get", "cmd_set", "cmd_peek", "get_hits", "get_misses",
        "bytes_read", "bytes_written", "queue_creates", "queue_deletes", "queue_expires",
    )
    # Declared for the type checker; reset() sets each to 0.
    total_connections: int
    cmd_get: int
    cmd_set: int
    cmd_peek: int
    get_hits: int
    get_misses: int
    bytes_read: int
    bytes_written: int
    queue_creates: int
    queue_deletes: int
    queue_expires: int

    def __init__(self):
        self.reset()

    def reset(self):
        """Every counter back to 0 (``stats reset``, as memcached)."""
        for name in self.__slots__:
            setattr(self, name, 0)


#: Settings a running server cannot change; a config reload reports them as needing a
#: restart instead of pretending to apply them.
RESTART_SETTINGS = (
    "host", "port", "data_dir", "max_connections", "control_socket", "control_host",
    "control_port", "handlers_path", "file_mode", "dir_mode", "max_open_files",
)


class ServerState:
    def __init__(self, settings, overrides=None):
        self.settings = settings
        # Command-line and environment values, re-applied over the file at config reload.
        self.overrides = dict(overrides or {})
        self.started = time.time()
        self.pid = os.getpid()
        self.version = __version__
        self.datadir = DataDir(settings.data_dir, settings.dir_mode)
        self.syncer = Syncer(settings.fsync_interval_ms / 1000.0)
        self.events = EventBus()
        self.stats = ServerStats()
        self.collection = QueueCollection(
            self.datadir, settings, self.syncer, self.events, self.stats
        )
        self.connections = set()  # live server.Connection objects
        # One descriptor held back so the listeners can answer at EMFILE (descriptors).
        self.fd_reserve = Reserve()
        self.buffered_input = 0  # bytes of partial requests held by all connections
        self.registry = None  # reloader.HandlerRegistry, set by the server at start
        self.plugins = None  # plugins.PluginManager
        # Long-lived plugin state, by plugin name: plugin modules are reloaded, so a
        # plugin keeps what must outlive a reload here (api.data), never in its module.
        self.plugin_data = {}
        self.debug = False
        self.base_log_level = settings.log_level
        self.status = "up"
        self.stopping = False
        self.stop_requested = Event()
        self.listen_address = None  # (host, port) once bound
        self.control_address = None
        #: Other listeners by label, as plugins report them: {"http": (host, port)}.
        self.listeners = {}
        self.config_reloads = 0
        self.last_config_error = ""

    # -- status -------------------------------------------------------------------

    def set_status(self, status: str) -> None:
        status = status.lower()
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        self.datadir.write_status(status)
        self.status = status
        log.info("server status is now %s", status.upper())

    @property
    def writes_allowed(self) -> bool:
        return self.status == "up"

    @property
    def reads_allowed(self) -> bool:
        return self.status != "quiescent"

    # -- debug ----------------------------------------------------------------------

    def set_debug(self, on: bool) -> None:
        """Debug raises the erqpy loggers to DEBUG and turns on the per-command trace."""
        self.debug = on
        level = logging.DEBUG if on else getattr(logging, self.base_log_level.upper())
        logging.getLogger("erqpy").setLevel(level)
        log.warning("debug %s", "on" if on else "off")

    # -- reload -------------------------------------------------------------------

    def reload_code(self) -> dict:
        """Reload handlers and plugins together, all or nothing, with the running
        configuration.  Never raises.

        Both are prepared (compiled, imported into fresh modules, checked) before either
        is swapped in, so a failure anywhere leaves the old handlers and plugins serving.
        """
        registry = self.registry
        assert registry is not None  # set by the server at start
        try:
            prepared = registry.prepare()
            staged, restores = self.plugins.prepare() if self.plugins else ({}, [])
        except Exception as exc:
            return registry.refused(exc)
        result = registry.commit(*prepared)
        if self.plugins is not None:
            self.plugins.commit(staged)
            result["plugins"] = sorted(staged)
        return result

    def _read_config(self):
        """The file's settings (with the command line and environment over them) and the
        list of changes that need a restart.  Raises ``ConfigError``; changes nothing."""
        from erqpy.server.config import build_settings

        new = build_settings(self.settings.config_path or None, **self.overrides)
        needs_restart = [k for k in RESTART_SETTINGS if getattr(new, k) != getattr(self.settings, k)]
        # A live queue keeps its journal (or its lack of one) until the next start.
        needs_restart += [
            f"queues.{name}.keep_journal" for name, queue in self.collection.queues.items()
            if new.queue_config(name).keep_journal != (queue.store is not None)
        ]
        # Those keep their running values, so the next reload still reports them and
        # stop() still removes the control socket this server actually bound.
        new = dataclasses.replace(new, **{k: getattr(self.settings, k) for k in RESTART_SETTINGS})
        return new, needs_restart

    def _config_refused(self, exc) -> None:
        self.last_config_error = str(exc)
        log.error("configuration reload refused, the running configuration stays: %s", exc)

    def _apply_config(self, new, needs_restart) -> dict:
        changed_queues = self.collection.apply_settings(new)
        self.syncer.interval = new.fsync_interval_ms / 1000.0
        if new.log_level != self.base_log_level:
            self.base_log_level = new.log_level
            if not self.debug:
                logging.getLogger("erqpy").setLevel(getattr(logging, new.log_level.upper()))
        self.settings = new
        limit = new.largest_item_size
        for conn in self.connections:  # open connections take the new item limit too
            conn.parser.max_item_size = limit
        self.config_reloads += 1
        self.last_config_error = ""
        log.info("configuration reloaded; queues changed: %s", ", ".join(changed_queues) or "none")
        return {"ok": True, "changed_queues": changed_queues, "needs_restart": needs_restart}

    def reload_config(self) -> dict:
        """Re-read the configuration file and apply it to live queues, code unchanged
        (the data port's Kestrel ``reload``).  Plugin tables are checked against the
        plugins' current code, which keeps serving with the settings it was loaded with.

        Raises ``ConfigError`` (the running configuration stays) when the file is bad.
        """
        try:
            new, needs_restart = self._read_config()
            if self.plugins is not None:
                resolved, _failures = self.plugins.resolve(new)
                self.plugins.rollback([restore for _ep, _target, restore in resolved])
        except Exception as exc:
            self._config_refused(exc)
            raise
        return self._apply_config(new, needs_restart)

    def reload_all(self) -> dict:
        """``erqctl reload``, SIGHUP and so systemd's ExecReload: the configuration file,
        the handler code and the plugins (loaded with the new file), all or nothing.
        Never raises.

        Everything is read, compiled and checked first; only then are the settings
        applied and the code swapped.  A bad file or broken code leaves the running
        configuration and code in force, and the reply says which was refused.
        """
        from erqpy.errors import ConfigError

        registry = self.registry
        assert registry is not None  # set by the server at start
        try:
            new, needs_restart = self._read_config()
            prepared = registry.prepare()
            staged, _restores = self.plugins.prepare(new) if self.plugins else ({}, [])
        except ConfigError as exc:
            self._config_refused(exc)
            return {"ok": False, "error": f"bad configuration: {exc}", "generation": registry.generation}
        except Exception as exc:
            return registry.refused(exc)
        config_result = self._apply_config(new, needs_restart)
        result = registry.commit(*prepared)
        if self.plugins is not None:
            self.plugins.commit(staged)
            result["plugins"] = sorted(staged)
        result.update(changed_queues=config_result["changed_queues"], needs_restart=needs_restart)
        return result

    # -- stopping -------------------------------------------------------------------

    def request_stop(self) -> None:
        self.stop_requested.set()

    # -- stats ----------------------------------------------------------------------

    def queue_stats(self, queue) -> dict:
        store = queue.store
        return {
            "items": queue.count,
            "bytes": queue.bytes,
            "total_items": queue.stats.total_items,
            "logsize": store.size if store is not None else 0,
            "expired_items": queue.stats.expired_items,
            "mem_items": len(queue.items),
            "mem_bytes": queue.mem_bytes,
            "age": queue.stats.last_age_ms if queue.items else 0,
            "discarded": queue.stats.discarded,
            "dead_lettered": queue.stats.dead_lettered,
            "waiters": len(queue.waiters),
            "open_transactions": len(queue.open),
            "transactions": queue.stats.transactions,
            "canceled_transactions": queue.stats.canceled_transactions,
            "total_flushes": queue.stats.total_flushes,
            "journal_rewrites": store.journal.rewrites if store is not None else 0,
            "journal_rotations": store.rotations if store is not None else 0,
        }

    def server_stats(self) -> dict:
        now = time.time()
        stats = self.stats
        return {
            "pid": self.pid,
            "uptime": int(now - self.started),
            "time": int(now),
            "version": self.version,
            "curr_connections": len(self.connections),
            "total_connections": stats.total_connections,
            "cmd_get": stats.cmd_get,
            "cmd_set": stats.cmd_set,
            "cmd_peek": stats.cmd_peek,
            "get_hits": stats.get_hits,
            "get_misses": stats.get_misses,
            "bytes_read": stats.bytes_read,
            "bytes_written": stats.bytes_written,
            "curr_items": self.collection.total_items,
            "total_items": sum(q.stats.total_items for q in self.collection.queues.values()),
            "bytes": self.collection.total_bytes,
            "queue_creates": stats.queue_creates,
            "queue_deletes": stats.queue_deletes,
            "queue_expires": stats.queue_expires,
            # Blocked readers of queues no write has created yet, and how many names.
            "awaited_queues": len(self.collection.awaited),
            "awaited_waiters": sum(len(a.waiters) for a in self.collection.awaited.values()),
        }

    def iter_queue_stats(self, names=None):
        """``(name, fields)`` per queue, sorted (or in the order of ``names``).

        A generator, so that a caller may give the hub away between queues (``stats``
        with thousands of queues); a queue deleted meanwhile is skipped.
        """
        queues = self.collection.queues
        selected = sorted(queues) if not names else [n for n in names if n in queues]
        for name in selected:
            queue = queues.get(name)
            if queue is None:
                continue
            fields = self.queue_stats(queue)
            children = self.collection.children.get(name)
            if children:
                fields["children"] = ",".join(sorted(children))
            yield name, fields

    def snapshot(self, names=None) -> dict:
        """``{"server": {...}, "queues": {name: {...}}}`` for stats, erqctl and HTTP."""
        return {"server": self.server_stats(), "queues": dict(self.iter_queue_stats(names))}
