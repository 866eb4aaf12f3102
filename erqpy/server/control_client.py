"""erqctl's side of the control channel: one JSON request line, one JSON reply line.

Blocking stdlib sockets only: the client imports nothing of the server (no gevent, no
``ServerState``), so ``erqctl`` does not load the daemon to send one request.  The wire
format is described in ``erqpy.server.control``.
"""

import json
import socket


class ControlError(Exception):
    """The control channel could not be reached or answered badly."""


def call(command: str, args=None, *, socket_path=None, host=None, port=None, token="",
         timeout: float = 60.0) -> dict:
    """Send one control request and return the reply (blocking, stdlib sockets)."""
    request = {"cmd": command, "args": args or {}}
    if token:
        request["token"] = token
    try:
        if socket_path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(socket_path)
        else:
            sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        where = socket_path or f"{host}:{port}"
        raise ControlError(f"cannot reach the control channel at {where}: {exc.strerror or exc}") from exc
    with sock:
        sock.sendall(json.dumps(request).encode() + b"\n")
        reader = sock.makefile("rb")
        line = reader.readline(16 * 1024 * 1024)
    if not line:
        raise ControlError("the server closed the control connection without a reply")
    try:
        return json.loads(line)
    except ValueError as exc:
        raise ControlError(f"bad reply from the control channel: {exc}") from exc
