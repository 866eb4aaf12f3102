"""The ``[http]`` table of the erqpy configuration file, checked as a whole.

A bad table is refused with ``ValueError``: at start the plugin is then skipped (and
logged), at reload the old plugin keeps serving.
"""

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 22180
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")

_TYPES = {
    "host": str,
    "port": int,
    "read_only": bool,
    "token": str,
    "username": str,
    "password": str,
    "reserve_timeout": (int, float),
    "max_reservations": int,
    "max_wait_ms": int,
    "max_batch": int,
    "max_body": int,
    "servers": list,
    "allowed_hosts": list,
    "sample_interval": (int, float),
    "history": int,
    "refresh": (int, float),
    "max_connections": int,
    "access_log": bool,
    "allow_get_consume": bool,
    "header_timeout": (int, float),
    "body_timeout": (int, float),
    "max_body_buffer": int,
    # WebSockets (ws.py): /ws stats pushes and the /ws/q/NAME consumer API
    "ws_push_interval": (int, float),
    "ws_max_connections": int,
    "ws_send_buffer": int,
    "ws_max_message": int,
    "ws_max_prefetch": int,
    "ws_ping_interval": (int, float),
    "ws_idle_timeout": (int, float),
}


@dataclass(frozen=True)
class HttpSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    read_only: bool = False  # refuse every changing action (dequeues included)
    token: str = ""  # changing actions need "Authorization: Bearer <token>"
    username: str = ""  # ... or HTTP basic auth with these
    password: str = ""
    reserve_timeout: float = 30.0  # seconds an unconfirmed reservation is held
    max_reservations: int = 10_000  # held at once, over all queues
    max_wait_ms: int = 60_000  # longest ?wait= honoured
    max_batch: int = 1000  # jobs per batch fetch or post
    max_body: int = 16 * 1024 * 1024  # one request body (a batch post); over it: 413
    #: Bytes of request bodies held in memory at once, over all connections; over it: 503.
    max_body_buffer: int = 64 * 1024 * 1024
    #: Seconds a connection has to send a request's line and headers (an idle keep-alive
    #: connection waiting for its next request too); then it is closed.
    header_timeout: float = 10.0
    body_timeout: float = 30.0  # seconds to receive a request body; then 408 and close
    #: GET /q and GET /qb take jobs (presque's way) only when true or a token is set;
    #: otherwise they answer 405 and POST .../take is the way (a page cannot forge it).
    allow_get_consume: bool = False
    servers: tuple = ()  # peers shown on the dashboard: ({"name", "url", "token"}, ...)
    allowed_hosts: tuple = ()  # Host header values accepted; () = loopback names if bound there
    sample_interval: float = 2.0  # seconds between rate samples (sparklines, rates)
    history: int = 60  # samples kept per queue
    refresh: float = 5.0  # the dashboard's default refresh, seconds
    max_connections: int = 1000
    access_log: bool = False  # one log line per request at INFO
    # WebSockets (ws.py, docs/WEBSOCKET.md); each socket also holds one max_connections slot.
    ws_push_interval: float = 1.0  # seconds between stats pushes on /ws
    ws_max_connections: int = 100  # WebSockets at once (default: at most max_connections // 2); then 503
    ws_send_buffer: int = 256 * 1024  # bytes queued for one socket; over it the reader is dropped
    ws_max_message: int = 64 * 1024  # bytes of one message from a client; over it: close 1009
    ws_max_prefetch: int = 100  # unacknowledged jobs one /ws/q socket may hold
    ws_ping_interval: float = 20.0  # seconds between pings to a quiet client
    ws_idle_timeout: float = 60.0  # seconds without a frame from the client; then closed

    @property
    def auth_required(self) -> bool:
        return bool(self.token or self.username)

    @property
    def get_consumes(self) -> bool:
        # A bearer token is never sent by a browser on its own; basic credentials are.
        return self.allow_get_consume or bool(self.token)

    @property
    def auth_scheme(self) -> str:
        if self.username:
            return "basic"
        return "bearer" if self.token else ""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_number(name, value, minimum, maximum=None):
    if value < minimum or (maximum is not None and value > maximum):
        limit = f"{minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
        raise ValueError(f"http.{name} must be {limit}, not {value!r}")


def _peer(index: int, entry) -> dict:
    if isinstance(entry, str):
        entry = {"url": entry}
    if not isinstance(entry, dict):
        raise ValueError(f"http.servers[{index}] must be a URL or a table with url, name, token")
    unknown = set(entry) - {"url", "name", "token"}
    if unknown:
        raise ValueError(f"http.servers[{index}] has unknown keys: {', '.join(sorted(unknown))}")
    url = entry.get("url")
    if not isinstance(url, str):
        raise ValueError(f"http.servers[{index}] needs a url")
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.port is None:
        raise ValueError(f"http.servers[{index}] url must look like http://host:port, not {url!r}")
    name = entry.get("name", parts.netloc)
    token = entry.get("token", "")
    if not isinstance(name, str) or not isinstance(token, str):
        raise ValueError(f"http.servers[{index}] name and token must be strings")
    return {"name": name, "url": f"http://{parts.netloc}", "token": token}


def parse(table: dict) -> HttpSettings:
    """Check the ``[http]`` table and build the settings, or raise ``ValueError``."""
    for key, value in table.items():
        kind = _TYPES.get(key)
        if kind is None:
            raise ValueError(f"unknown setting {key!r} in [http]; known: {', '.join(sorted(_TYPES))}")
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ValueError(f"http.{key} has the wrong type ({type(value).__name__})")
    values = dict(table)
    _check_number("port", values.get("port", DEFAULT_PORT), 0, 65535)
    for name, minimum in (("reserve_timeout", 0.001), ("max_reservations", 1), ("max_wait_ms", 0),
                          ("max_batch", 1), ("max_body", 1024), ("sample_interval", 0.05),
                          ("history", 2), ("refresh", 0.5), ("max_connections", 1),
                          ("header_timeout", 0.05), ("body_timeout", 0.05), ("max_body_buffer", 1024)):
        if name in values:
            _check_number(name, values[name], minimum)
    for name, minimum in (("ws_push_interval", 0.05), ("ws_max_connections", 1), ("ws_send_buffer", 1024),
                          ("ws_max_message", 128), ("ws_max_prefetch", 1), ("ws_ping_interval", 0.05),
                          ("ws_idle_timeout", 0.1)):
        if name in values:
            _check_number(name, values[name], minimum)
    connections = values.get("max_connections", HttpSettings.max_connections)
    values.setdefault("ws_max_connections", min(HttpSettings.ws_max_connections, max(connections // 2, 1)))
    if values["ws_max_connections"] >= connections and connections > 1:
        raise ValueError("http.ws_max_connections must be below http.max_connections "
                         "(each WebSocket holds one of its slots; the rest serve plain requests)")
    if values.get("max_body_buffer", HttpSettings.max_body_buffer) < values.get("max_body", HttpSettings.max_body):
        raise ValueError("http.max_body_buffer must be at least http.max_body (one whole body must fit)")
    if bool(values.get("username")) != bool(values.get("password")):
        raise ValueError("http.username and http.password go together")
    host = values.get("host", DEFAULT_HOST)
    try:
        socket.getaddrinfo(host, None)
    except OSError as exc:
        raise ValueError(f"http.host {host!r} does not resolve: {exc}") from None
    if not is_loopback(host) and not (values.get("token") or values.get("username") or values.get("read_only")):
        # Anyone who can reach a public address could empty the queues otherwise.
        raise ValueError(
            f"http.host {host!r} is not a loopback address: set token, username/password "
            "or read_only = true first"
        )
    values["servers"] = tuple(_peer(i, entry) for i, entry in enumerate(values.get("servers", [])))
    lent = [i for i, peer in enumerate(values["servers"]) if peer["token"]]
    if lent and not (values.get("token") or values.get("username")):
        # /peers/N forwards with the peer's token: without auth here, anyone who reaches
        # this port could act on the peer with powers the peer itself would refuse them.
        raise ValueError(
            f"http.servers[{lent[0]}] has a token but this server has no token or "
            "username/password of its own: set one, or drop the peer's token"
        )
    hosts = values.get("allowed_hosts", [])
    if not all(isinstance(h, str) and h for h in hosts):
        raise ValueError("http.allowed_hosts must be a list of host names")
    values["allowed_hosts"] = tuple(h.lower() for h in hosts)
    for name in ("reserve_timeout", "header_timeout", "body_timeout", "ws_push_interval", "ws_ping_interval",
                 "ws_idle_timeout"):
        values[name] = float(values.get(name, getattr(HttpSettings, name)))
    return HttpSettings(**values)


def allowed_host_names(settings: HttpSettings) -> frozenset:
    """Host header names (without port) accepted; empty means any.

    Bound to loopback, only loopback names are accepted by default: a page on another
    site that rebinds its DNS name to 127.0.0.1 then cannot talk to this port.
    """
    names = set(settings.allowed_hosts)
    if is_loopback(settings.host):
        names.update(LOOPBACK_NAMES)
    elif not names:
        return frozenset()
    return frozenset(names)
