"""The control channel: admin commands for ``erqctl``, never on the data port.

By default a Unix socket in the data directory with mode 0600, so only the server's
user (and root) can reach it.  Optionally also TCP on a loopback address, where every
request must carry the configured token.

Wire format: one JSON object per line each way.  Request ``{"cmd": "reload", "args":
{...}, "token": "..."}``; reply ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
"""

import hmac
import json
import logging
import os
import socket
import time

from erqpy.fairness import give_way
from erqpy.server.config import loopback_address
from erqpy.descriptors import GuardedStreamServer
from erqpy.errors import ConfigError, ServerHalt, Unavailable
from erqpy.server import gcpolicy, ops, reload, stats
from erqpy.storage import readahead

log = logging.getLogger("erqpy.control")

#: A control request line longer than this is refused (requests are small JSON objects).
MAX_REQUEST = 64 * 1024


class ControlServer:
    def __init__(self, state):
        self.state = state
        self.servers = []

    def start(self) -> None:
        settings = self.state.settings
        path = settings.control_socket_path
        if len(path.encode()) > 107:
            raise ServerHalt(f"control socket path is too long for a Unix socket: {path}")
        if os.path.exists(path):
            os.unlink(path)  # ours: we hold the data directory lock
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is created 0600, no window at 0755
        try:
            listener.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        listener.listen(16)
        # At EMFILE the reserve descriptor is given to a control connection: erqctl must
        # answer exactly when the server is in trouble.
        reserve = self.state.fd_reserve
        unix = GuardedStreamServer(listener, lambda s, a: self._serve(s, trusted=True), reserve,
                                   serve_exhausted=True)
        unix.start()
        self.servers.append(unix)
        addresses = [path]
        if settings.control_host:
            try:
                # The file was checked with its line (config.load_file); this catches
                # settings built any other way.  "localhost" becomes 127.0.0.1.
                bind_host = loopback_address(settings.control_host)
            except ValueError as exc:
                raise ServerHalt(f"control_host {exc}") from None
            if not settings.control_token:
                raise ServerHalt("a TCP control listener needs control_token")
            tcp = GuardedStreamServer(
                (bind_host, settings.control_port),
                lambda s, a: self._serve(s, trusted=False), reserve, serve_exhausted=True,
            )
            tcp.start()
            self.servers.append(tcp)
            addresses.append("%s:%d" % tcp.address[:2])
        self.state.control_address = " ".join(addresses)

    def stop(self) -> None:
        for server in self.servers:
            server.close()
        try:
            os.unlink(self.state.settings.control_socket_path)
        except OSError:
            pass

    def _serve(self, sock, trusted: bool) -> None:
        reader = sock.makefile("rb")
        try:
            while True:
                line = reader.readline(MAX_REQUEST + 1)
                if not line:
                    return
                if len(line) > MAX_REQUEST:
                    sock.sendall(_encode({"ok": False, "error": "request too long"})[0])
                    return
                reply = self._handle_line(line, trusted)
                for part in _encode(reply):
                    sock.sendall(part)
                if reply.get("close"):
                    return
        except OSError:
            return
        finally:
            reader.close()
            sock.close()
            self.state.fd_reserve.take_back()  # lent to this connection, if it came at EMFILE

    def _handle_line(self, line: bytes, trusted: bool) -> dict:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("request must be a JSON object")
        except ValueError as exc:
            return {"ok": False, "error": f"bad request: {exc}"}
        if not trusted:
            token = request.get("token", "")
            if not isinstance(token, str) or not hmac.compare_digest(
                token.encode(), self.state.settings.control_token.encode()
            ):
                return {"ok": False, "error": "bad token", "close": True}
        command = request.get("cmd")
        args = request.get("args") or {}
        handler = COMMANDS.get(command) if isinstance(command, str) else None
        if handler is None or not isinstance(args, dict):
            return {"ok": False, "error": f"unknown command {command!r}; known: {', '.join(sorted(COMMANDS))}"}
        try:
            reply = handler(self.state, args)
        except (ValueError, ConfigError) as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:
            log.exception("control command %s failed", command)
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        reply.setdefault("ok", True)
        return reply


#: Entries of a large reply field (the stats of 10,000 queues) encoded between two turns
#: of the other connections: one ``json.dumps`` of it all holds the hub for tens of ms.
ENCODE_ENTRIES_PER_YIELD = 100


def _encode(reply: dict) -> list[bytes]:
    """The reply's JSON line, in parts: a large field (the stats of 10,000 queues, 3 MB)
    is never one string, whose joining and encoding took 15-25 ms on the hub."""
    reply = {k: v for k, v in reply.items() if k != "close"}
    if not any(isinstance(v, dict) and len(v) > ENCODE_ENTRIES_PER_YIELD for v in reply.values()):
        return [json.dumps(reply, separators=(",", ":")).encode() + b"\n"]
    parts = []
    for index, (key, value) in enumerate(reply.items()):
        head = ("," if index else "{") + _dumps(key) + ":"
        if isinstance(value, dict):
            parts.append(head.encode())
            parts.extend(_encode_giving_way(value))
        else:
            parts.append((head + _dumps(value)).encode())
    parts.append(b"}\n")
    return parts


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def _encode_giving_way(mapping: dict) -> list[bytes]:
    """The JSON of ``mapping``, as ``json.dumps`` writes it, in parts of a slice of
    entries each, the other connections served between two slices."""
    parts = []
    entries = []
    for index, (key, value) in enumerate(mapping.items(), 1):
        entries.append(_dumps(str(key)) + ":" + _dumps(value))
        if index % ENCODE_ENTRIES_PER_YIELD == 0:
            parts.append(("," if parts else "{").encode() + ",".join(entries).encode())
            entries = []
            give_way()
    if entries:
        parts.append(("," if parts else "{").encode() + ",".join(entries).encode())
    parts.append(b"}" if parts else b"{}")
    return parts


def _queue_arg(state, args):
    name = args.get("queue")
    if not isinstance(name, str) or name not in state.collection.queues:
        raise ValueError(f"no such queue: {name!r}")
    return state.collection.queues[name]


# -- commands: each is (state, args) -> dict ------------------------------------------


def cmd_ping(state, args):
    return {"pong": True}


def cmd_status(state, args):
    registry = state.registry
    return {
        "pid": state.pid,
        "uptime": round(time.time() - state.started, 3),
        "version": state.version,
        "status": state.status,
        "listen": "%s:%d" % tuple(state.listen_address) if state.listen_address else "",
        "control": state.control_address,
        "listeners": {label: "%s:%d" % address for label, address in sorted(state.listeners.items())},
        "data_dir": state.datadir.path,
        "connections": len(state.connections),
        "open_files": len(state.syncer.files),
        **gcpolicy.POLICY.status(),
        "max_open_files": state.syncer.files.limit,
        "total_connections": state.stats.total_connections,
        "loop_batches": state.stats.loop_batches,
        "greenlet_batches": state.stats.greenlet_batches,
        "turn_end_sends": state.stats.turn_end_sends,
        "turn_end_replies": state.stats.turn_end_replies,
        "group_writes": state.syncer.group_writes,
        "grouped_records": state.syncer.grouped_records,
        "group_write_failures": state.syncer.group_failures,
        "group_writes_allowed": state.syncer.group_allowed,
        **readahead.READ_AHEAD.status(),
        "queues": len(state.collection.queues),
        "debug": state.debug,
        "fsync": state.settings.fsync,
        "handler_generation": registry.generation,
        "handler_sha256": registry.sha256,
        "handler_path": registry.path,
        "handler_loaded_at": registry.loaded_at,
        "reloads": registry.reloads,
        "failed_reloads": registry.failed_reloads,
        "last_reload_error": registry.last_error,
        "config_path": state.settings.config_path,
        "config_reloads": state.config_reloads,
        "last_config_error": state.last_config_error,
        "plugins": state.plugins.describe() if state.plugins else [],
        "plugin_errors": dict(state.plugins.errors) if state.plugins else {},
    }


def cmd_reload(state, args):
    """Configuration and code together (``args.config``, from old clients, changes
    nothing: the file is always read)."""
    return reload.reload_all(state)


def cmd_debug(state, args):
    on = args.get("on")
    if not isinstance(on, bool):
        raise ValueError("debug needs on: true or false")
    state.set_debug(on)
    return {"debug": on, "level": "debug" if on else state.base_log_level}


def cmd_stats(state, args):
    names = args.get("queues") or None
    return stats.snapshot(state, names)


def cmd_queues(state, args):
    return {"queues": ops.depths(state)}


def _refused_as_error(operation, *args):
    """Run an operation; a refusal by the server status is the reply's error."""
    try:
        return operation(*args)
    except Unavailable as exc:
        raise ValueError(str(exc)) from None


def cmd_flush(state, args):
    queue = _queue_arg(state, args)
    return {"flushed": _refused_as_error(ops.flush, state, queue), "queue": queue.name}


def cmd_delete(state, args):
    queue = _queue_arg(state, args)
    _refused_as_error(ops.delete, state, queue)
    return {"deleted": queue.name}


def cmd_compact(state, args):
    queue = _queue_arg(state, args)
    before, after = ops.compact(queue)
    return {"queue": queue.name, "before": before, "after": after}


def cmd_pause(state, args):
    queue = _queue_arg(state, args)
    paused = bool(args.get("paused", True))
    ops.set_paused(state, queue, paused)
    return {"queue": queue.name, "paused": paused}


def cmd_nodes(state, args):
    return ops.nodes(state)


def cmd_set_status(state, args):
    state.set_status(str(args.get("status", "")))
    return {"status": state.status}


def cmd_shutdown(state, args):
    state.request_stop()
    return {"stopping": True}


COMMANDS = {
    "ping": cmd_ping,
    "status": cmd_status,
    "reload": cmd_reload,
    "debug": cmd_debug,
    "stats": cmd_stats,
    "queues": cmd_queues,
    "flush": cmd_flush,
    "delete": cmd_delete,
    "compact": cmd_compact,
    "pause": cmd_pause,
    "nodes": cmd_nodes,
    "set-status": cmd_set_status,
    "shutdown": cmd_shutdown,
}
