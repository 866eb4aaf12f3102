"""The data port: a gevent StreamServer, one greenlet per connection, and graceful stop.

The connection loop is the stable trampoline that hot reload needs: it looks the command
up in ``registry.commands`` for every request, so each open connection runs new handler
code from its next command on, while a command already running (a blocked ``get``)
finishes on the code it started with.

Per read, the loop parses every complete request in the buffer, runs them in order, and
sends all replies with one ``sendall``: a pipelining client costs one pair of system
calls per batch.  Replies that acknowledge a journal write wait for the fsync first when
the queue's policy is ``always``.
"""

import logging
import signal
import socket
import sys
import time

import gevent
from gevent.pool import Pool

from erqpy import descriptors, journal, waiters
from erqpy.errors import REPLY_NO_DESCRIPTORS, ConnectionGone, ErqError, JournalWriteError, to_reply
from erqpy.protocol import Parser
from erqpy.session import Session

log = logging.getLogger("erqpy.server")
trace = logging.getLogger("erqpy.protocol")

RECV_SIZE = 256 * 1024
REPLY_ERROR = b"ERROR\r\n"
REPLY_INTERNAL = b"SERVER_ERROR internal error\r\n"
#: While a command waits, input that arrives is parsed and kept for later; past these
#: bounds the connection stops reading until the wait ends (and so stops noticing a
#: disconnect, which ``finish`` still handles when the wait returns).
MAX_ABSORBED_BYTES = 4 * 1024 * 1024
MAX_ABSORBED_REQUESTS = 10_000
MAINTENANCE_INTERVAL = 1.0  # seconds between sweeps of every queue
#: Seconds the start-up line waits for plugin listeners announced with expect_listener.
PLUGIN_LISTENER_WAIT = 5.0


class Connection:
    """One client connection: its socket, parser, session and pending replies."""

    __slots__ = (
        "state", "sock", "address", "session", "parser", "out", "requests",
        "closing", "seq_mark", "clock", "raw_send",
    )

    def __init__(self, state, sock, address):
        self.state = state
        self.sock = sock
        self.address = address
        self.session = Session()
        self.parser = Parser(max_item_size=state.settings.largest_item_size)
        self.out = []
        self.requests = None
        self.closing = False
        self.seq_mark = 0
        self.clock = time.monotonic
        # The non-blocking socket under gevent's wrapper (gevent documents ``_sock``).
        self.raw_send = getattr(sock, "_sock", sock).send

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        state = self.state
        stats = state.stats
        registry = state.registry
        syncer = state.syncer
        recv = getattr(self.sock, "_sock", self.sock).recv  # non-blocking, under gevent's
        feed = self.parser.feed
        out = self.out
        hub = gevent.get_hub()
        # Started only inside hub.wait, so it needs no closing when the loop ends.
        readable = hub.loop.io(self.sock.fileno(), 1)
        # After a reply, wait for the next request before reading: the client is
        # most likely still reading the reply, so reading first (as gevent's recv does)
        # fails, and when it succeeds the connection keeps the hub while the others
        # wait (p50 30 µs but p99 25 ms at 128 connections).  Otherwise (a new
        # connection, noreply commands) read first, so that what a client sent before
        # it opened another connection is served first.
        wait_first = False
        while not self.closing:
            if wait_first:
                hub.wait(readable)
            try:
                data = recv(RECV_SIZE)
            except BlockingIOError:
                wait_first = True
                continue
            if not data:
                return
            stats.bytes_read += len(data)
            self.seq_mark = syncer.write_seq
            requests = self.requests = feed(data)
            for request in requests:
                if request.error is not None:
                    out.append(to_reply(request.error))
                    continue
                commands = registry.commands
                handler = commands.get(request.command)
                if handler is None:
                    handler = commands.get(request.command.lower())
                    if handler is None:
                        out.append(REPLY_ERROR)
                        if state.debug:
                            self._trace(request, REPLY_ERROR)
                        continue
                try:
                    reply = handler(self, request)
                except ConnectionGone:
                    return
                except ErqError as exc:
                    reply = to_reply(exc)
                except OSError as exc:
                    if exc.errno in descriptors.EXHAUSTED:
                        reply = REPLY_NO_DESCRIPTORS
                    else:
                        log.exception("command %r failed on connection %s", request.command, self.session.id)
                        reply = REPLY_INTERNAL
                except Exception:
                    log.exception("command %r failed on connection %s", request.command, self.session.id)
                    reply = REPLY_INTERNAL
                if reply:
                    out.append(reply)
                if state.debug:
                    self._trace(request, reply)
                if self.closing:
                    break
            self.requests = None
            wait_first = bool(out)
            if out:
                self.flush()

    def flush(self) -> None:
        """Send pending replies, after the fsync they acknowledge when the policy asks."""
        syncer = self.state.syncer
        if syncer.write_seq != self.seq_mark:
            try:
                syncer.wait_durable(syncer.write_seq)
            except JournalWriteError:
                # The writes these replies acknowledge may not be on disk: withhold the
                # acknowledgements and drop the connection rather than lie.
                log.critical("fsync failed; closing connection %s without replying", self.session.id)
                self.out.clear()
                raise ConnectionGone() from None
            self.seq_mark = syncer.write_seq
        data = b"".join(self.out)
        self.out.clear()
        # One non-blocking send usually takes the whole reply.  gevent's sendall would
        # cost a getsockopt system call and five Python calls on every reply; it is
        # kept for the rest when the socket buffer is full.
        try:
            sent = self.raw_send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            self.sock.sendall(memoryview(data)[sent:])
        self.state.stats.bytes_written += len(data)

    def send_now(self, data: bytes) -> None:
        """Send ``data`` (and anything pending) at once: for streaming replies (monitor)."""
        self.out.append(data)
        self.flush()

    def close_after_reply(self) -> None:
        self.closing = True

    def _trace(self, request, reply) -> None:
        shown = reply[:200] if isinstance(reply, bytes) else reply
        trace.debug(
            "conn %s %s: %r %r -> %r", self.session.id, self.address,
            request.command, request.args[:4], shown,
        )

    # -- waiting for an item ------------------------------------------------------------

    def wait_for_item(self, queue, timeout: float, take):
        """Block until ``take()`` returns an item, ``timeout`` seconds pass, or the queue
        or server goes away.  Raises ``ConnectionGone`` if the client disconnects.

        While waiting, the socket is watched: input is parsed and queued behind this
        command (a pipelining client), and end of input cancels the wait at once, so a
        dead client never holds a place in the queue's line of waiters.
        """
        if self.out:
            self.flush()
        return waiters.wait_for_item(
            queue, timeout, take, self._stopping, sock=self.sock, on_input=self._on_input
        )

    def _stopping(self) -> bool:
        return self.state.stopping

    def _on_input(self) -> bool:
        """Input while waiting: parse it for later; keep watching while within bounds."""
        if not self._absorb_input():
            raise ConnectionGone()
        return (
            self.parser.buffered <= MAX_ABSORBED_BYTES
            and len(self.requests or ()) <= MAX_ABSORBED_REQUESTS
        )

    def _absorb_input(self) -> bool:
        """Read what the client sent while we wait; False at end of input."""
        sock = self.sock
        try:
            sock.settimeout(0.0)
            data = sock.recv(RECV_SIZE)
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            sock.settimeout(None)
        if not data:
            return False
        self.state.stats.bytes_read += len(data)
        requests = self.parser.feed(data)
        if self.requests is None:
            self.requests = requests
        else:
            self.requests.extend(requests)
        return True


def serve_connection(state, sock, address) -> None:
    """The StreamServer handle: run one connection and always give its reads back."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = Connection(state, sock, address)
    state.connections.add(conn)
    state.stats.total_connections += 1
    try:
        conn.run()
    except (ConnectionError, TimeoutError, OSError):
        pass  # the client went away mid-reply; its reads are given back below
    finally:
        state.connections.discard(conn)
        # During a stop, sessions end in no particular order; giving their reads back
        # here would shuffle them.  Server.stop gives every open read back in order.
        if not state.stopping:
            conn.session.finish()


class Server:
    """Owns the listeners and the order of start and stop."""

    def __init__(self, state):
        self.state = state
        self.pool = Pool(state.settings.max_connections)
        self.stream = None
        self.control = None
        self.services = []  # greenlets of background tasks

    def start(self) -> None:
        from erqpy import control, plugins, reloader  # stable modules, imported late

        state = self.state
        settings = state.settings
        journal.set_file_mode(settings.file_mode)
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
        started = time.perf_counter()
        count = state.collection.load_all()
        log.info("replayed %d journals in %.3f s", count, time.perf_counter() - started)
        state.registry = reloader.HandlerRegistry(settings.handlers_path or None)
        state.registry.load()
        state.plugins.load(resolved)
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
        state.plugins.start_services()

    def _maintenance(self) -> None:
        """Once a second, the collection's sweep (expiry, stale reads, compaction)."""
        collection = self.state.collection
        while True:
            gevent.sleep(MAINTENANCE_INTERVAL)
            collection.maintain()

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
        # Open reads go back to the head queue by queue, oldest opened first, exactly
        # as replay does after a crash.
        for queue in list(state.collection.queues.values()):
            for item_id in reversed(list(queue.open)):
                try:
                    queue.unremove(item_id)
                except Exception:
                    # Still journaled as open: the next start gives it back.
                    log.exception("could not give back an open read on %s", queue.name)
        state.syncer.stop()
        state.collection.close_all()
        state.datadir.unlock()
        log.info("stopped")


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("erqpy")
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    root.propagate = False


def run(settings, overrides=None) -> int:
    """Run a server until SIGTERM/SIGINT or ``shutdown``; return the exit status."""
    from erqpy.state import ServerState

    configure_logging(settings.log_level)
    state = ServerState(settings, overrides)
    server = Server(state)
    server.start()
    # Handlers first: a supervisor may signal as soon as it reads the banner.
    gevent.signal_handler(signal.SIGTERM, state.request_stop)
    gevent.signal_handler(signal.SIGINT, state.request_stop)
    gevent.signal_handler(signal.SIGHUP, lambda: gevent.spawn(state.reload_all))
    # Plugin services bind their listeners once they run; wait (bounded) for those
    # announced, so the line below can name them.  One that failed is not listed.
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
