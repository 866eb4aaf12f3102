"""The server's lifecycle: start (listeners, replay, handlers, plugins), the periodic
maintenance, graceful stop, and ``run`` until a signal or ``shutdown``."""

import logging
import signal
import socket
import sys
import time

import gevent
from gevent.pool import Pool

from erqpy import descriptors
from erqpy.server import gcpolicy, reload
from erqpy.server.connection import serve_connection
from erqpy.server.session import give_back
from erqpy.storage import datadir

log = logging.getLogger("erqpy.server")

MAINTENANCE_INTERVAL = 1.0  # seconds between sweeps of every queue
#: Seconds the start-up line waits for plugin listeners announced with expect_listener.
PLUGIN_LISTENER_WAIT = 5.0


class Server:
    """Owns the listeners and the order of start and stop."""

    def __init__(self, state):
        self.state = state
        self.pool = Pool(state.settings.max_connections)
        self.stream = None
        self.control = None
        self.services = []  # greenlets of background tasks

    def start(self) -> None:
        from erqpy.server import control, plugins, reloader  # stable modules, imported late

        state = self.state
        settings = state.settings
        datadir.set_file_mode(settings.file_mode)
        nofile = descriptors.raise_open_file_limit()
        files = state.syncer.files
        files.limit = settings.max_open_files or descriptors.derived_max_open_files(nofile)
        log.info("queue files kept open: at most %d (max_open_files)", files.limit)
        state.fd_reserve.take()
        # Plugins are imported and their tables checked first: a bad table refuses the
        # start (ConfigError) before the data directory is locked and journals replayed.
        state.plugins = plugins.PluginManager(state)
        resolved = state.plugins.resolve(settings)
        state.datadir.lock()
        state.status = state.datadir.read_status()
        gcpolicy.POLICY.start()  # the collector's thresholds, before recovery adds the items
        started = time.perf_counter()
        engine_start = getattr(state.collection, "start", None)
        if engine_start is not None:  # engine mode: the node's lease and its greenlets first
            state.collection.on_lease_lost = lambda: drop_readers(state)
            engine_start()
        count = state.collection.load_all()
        log.info("loaded %d queues in %.3f s", count, time.perf_counter() - started)
        state.registry = reloader.HandlerRegistry(settings.handlers_path or None)
        state.registry.load()
        state.plugins.load(resolved)
        # What recovery loaded (every item of every queue) lives until it is read and
        # holds no reference cycle.  Frozen, it is out of the cyclic collector's way: a
        # full collection no longer walks it (1.5 s for 2 M items on a loaded 2-core
        # machine), and refcounting still frees each item once it is read.  What is
        # frozen later, and when it is unfrozen: gcpolicy.
        gcpolicy.POLICY.started()
        state.syncer.start()
        self.stream = descriptors.GuardedStreamServer(
            (settings.host, settings.port),
            lambda sock, address: serve_connection(state, sock, address),
            state.fd_reserve,
            spawn=self.pool,
        )
        self.stream.start()
        state.listen_address = self.stream.address[:2]
        self.control = control.ControlServer(state)
        self.control.start()
        self.services.append(gevent.spawn(self._maintenance))
        self.services.append(gevent.spawn(self._bound_the_young))
        state.plugins.start_services()

    def _maintenance(self) -> None:
        """Once a second, the collection's sweep (expiry, stale reads, compaction)."""
        collection = self.state.collection
        while True:
            gevent.sleep(MAINTENANCE_INTERVAL)
            gcpolicy.POLICY.check(collection.maintain())

    def _bound_the_young(self) -> None:
        """Every YOUNG_BOUND_SECONDS, a young collection if traffic brought none (gcpolicy)."""
        stats = self.state.stats
        while True:
            gevent.sleep(gcpolicy.YOUNG_BOUND_SECONDS)
            gcpolicy.POLICY.bound_the_young(stats.bytes_read)

    def stop(self) -> None:
        """Graceful stop: no new connections, wake waiters with END, let commands in
        flight finish (up to ``shutdown_grace``), give open reads back, fsync, close."""
        state = self.state
        log.info("stopping: %d connections", len(state.connections))
        if self.stream is not None:
            self.stream.close()
        if self.control is not None:
            self.control.stop()
        state.stopping = True
        state.collection.wake_all()
        if state.plugins is not None:
            state.plugins.stop_services()
        gevent.killall(self.services)
        # Connections idle in recv() are not "in flight"; closing their sockets ends
        # them (their greenlets then give open reads back).  Busy ones get the grace.
        deadline = time.monotonic() + state.settings.shutdown_grace
        for conn in list(state.connections):
            conn.closing = True
        while len(self.pool) and time.monotonic() < deadline:
            for conn in list(state.connections):
                if conn.requests is None:  # idle, blocked in recv
                    try:
                        conn.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            gevent.sleep(0.05)
        self.pool.kill(timeout=1)
        # Every open read (of any connection, or an HTTP reservation) goes back queue by
        # queue in the order the reads were opened, exactly as replay does after a crash.
        for queue in list(state.collection.queues.values()):
            give_back([(queue, item_id) for item_id in queue.open])
        state.syncer.stop()
        state.collection.close_all()
        state.datadir.unlock()
        log.info("stopped")


def drop_readers(state) -> None:
    """Engine mode, the node's lease was lost: other nodes have given its open reads back
    (at-least-once), so the connections that held them are closed; their clients see
    the connection end, as when a server dies, instead of a confirm that confirms nothing."""
    for conn in list(state.connections):
        if any(conn.session.open_reads.values()):
            log.warning("closing connection %s %s: its open reads were given back by other nodes "
                        "(this node lost its lease)", conn.session.id, conn.address)
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("erqpy")
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    root.propagate = False


def run(settings, overrides=None) -> int:
    """Run a server until SIGTERM/SIGINT or ``shutdown``; return the exit status."""
    from erqpy.server.state import ServerState

    configure_logging(settings.log_level)
    state = ServerState(settings, overrides)
    server = Server(state)
    server.start()
    # Handlers first: a supervisor may signal as soon as it reads the banner.
    gevent.signal_handler(signal.SIGTERM, state.request_stop)
    gevent.signal_handler(signal.SIGINT, state.request_stop)
    gevent.signal_handler(signal.SIGHUP, lambda: gevent.spawn(reload.reload_all, state))
    # Plugin services bind their listeners once they run; wait (bounded) for those
    # announced, so the line below can name them.  One that failed is not listed.
    assert state.plugins is not None and state.listen_address is not None  # set by start()
    if not state.plugins.wait_for_listeners(PLUGIN_LISTENER_WAIT):
        log.warning("plugin listeners not reported within %.0f s: %s", PLUGIN_LISTENER_WAIT,
                    ", ".join(sorted(state.plugins.expected_listeners)))
    host, port = state.listen_address
    others = "".join(f" {label} {h}:{p}" for label, (h, p) in sorted(state.listeners.items()))
    print(
        f"erqpy {state.version} listening on {host}:{port}{others} "
        f"data {state.datadir.path} control {state.control_address}",
        flush=True,
    )
    state.stop_requested.wait()
    server.stop()
    return 0
