"""ServerState: the one root object that outlives every handler reload.

Everything long-lived hangs from here: the queues and their journals, the syncer, live
connections, counters, the handler registry, plugins, the debug flag and the server
status.  Handlers reach it as ``conn.state`` and keep no reference of their own.

This module holds state and the small rules on it (status, debug).  Procedures over it
live in modules of their own: stats rendering in ``stats``, reload orchestration in
``reload``, start and stop in ``lifecycle``.
"""

import logging
import os
import time

from gevent.event import Event

from erqpy import __version__
from erqpy.server.loop_serving import TurnReplies
from erqpy.server.storage_config import open_collection, uses_journals
from erqpy.storage.datadir import STATUSES, DataDir
from erqpy.descriptors import Reserve
from erqpy.events import EventBus
from erqpy.storage.syncer import Syncer

log = logging.getLogger("erqpy")


class ServerStats:
    """Server-wide counters; the levels (items, connections) are computed on demand."""

    __slots__ = (
        "total_connections", "cmd_get", "cmd_set", "cmd_peek", "get_hits", "get_misses",
        "bytes_read", "bytes_written", "queue_creates", "queue_deletes", "queue_expires",
        "loop_batches", "greenlet_batches", "turn_end_sends", "turn_end_replies",
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
    # Reads of the data port served from the event loop's callback, and in a connection's
    # greenlet (server/loop_serving; erqctl status).
    loop_batches: int
    greenlet_batches: int
    # Sends of the replies that loop-served batches left for the end of the loop's turn,
    # and the connections' replies they sent (loop_serving.TurnReplies).
    turn_end_sends: int
    turn_end_replies: int

    def __init__(self):
        self.reset()

    def reset(self):
        """Every counter back to 0 (``stats reset``, as memcached)."""
        for name in self.__slots__:
            setattr(self, name, 0)


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
        if uses_journals(settings):  # an engine node writes no journal: nothing to group
            self.syncer.watch_headroom(self.datadir.path)  # group writes (storage/syncer)
        self.events = EventBus()
        self.stats = ServerStats()
        self.collection = open_collection(settings, self.datadir, self.syncer, self.events, self.stats)
        self.connections = set()  # live connection.Connection objects
        self.alias_stats = {}  # alias name -> aliases.AliasStats, kept across reloads
        # One descriptor held back so the listeners can answer at EMFILE (descriptors).
        self.fd_reserve = Reserve()
        self.buffered_input = 0  # bytes of partial requests held by all connections
        self.turn_replies = TurnReplies(self.stats)  # replies of loop-served batches (loop_serving)
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
    def status(self) -> str:
        return self._status

    @status.setter
    def status(self, status: str) -> None:
        # What the status allows is kept as two plain attributes: every set and get
        # asks (dispatch, ops.put, ops.take), and a property call is a measurable part
        # of a request.
        self._status = status
        self.writes_allowed = status == "up"
        self.reads_allowed = status != "quiescent"

    # -- debug ----------------------------------------------------------------------

    def set_debug(self, on: bool) -> None:
        """Debug raises the erqpy loggers to DEBUG and turns on the per-command trace."""
        self.debug = on
        level = logging.DEBUG if on else getattr(logging, self.base_log_level.upper())
        logging.getLogger("erqpy").setLevel(level)
        log.warning("debug %s", "on" if on else "off")

    # -- stopping -------------------------------------------------------------------

    def request_stop(self) -> None:
        self.stop_requested.set()
