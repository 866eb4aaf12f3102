"""Small WSGI helpers: the request, JSON replies and errors, and the access checks.

Every error leaves as ``{"error": "<message>"}`` with its status code; ``HttpError``
carries both from wherever the problem is found.
"""

import base64
import binascii
import hmac
import json
from urllib.parse import parse_qs, urlsplit

import gevent

from erqpy.compat import abandon_wsgi_input

REASONS = {
    200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    409: "Conflict",
    413: "Payload Too Large", 415: "Unsupported Media Type", 429: "Too Many Requests",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
    507: "Insufficient Storage",
}
JSON_TYPE = "application/json"


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers=(), **extra):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)
        self.extra = extra


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, body: bytes = b"", content_type: str = JSON_TYPE, headers=()):
        self.status = status
        self.body = body
        self.headers = [("Content-Type", content_type)] if body or status != 204 else []
        self.headers.extend(headers)


def dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(obj, status: int = 200, headers=()) -> Response:
    return Response(status, dumps(obj), JSON_TYPE, headers)


def error_response(exc: HttpError) -> Response:
    body = {"error": exc.message}
    body.update(exc.extra)
    return json_response(body, exc.status, exc.headers)


def _abandon(stream) -> None:
    """Do not read the rest of a refused body: the connection closes after the reply.

    pywsgi would otherwise read (and discard) the whole declared body first, holding the
    reply back for as long as the client takes to send it.  Its input object skips that
    when this flag is set (gevent's own signal that the socket is about to be closed).
    """
    abandon_wsgi_input(stream)


#: Bytes read from the socket per step while receiving a body; each step is charged to
#: the shared body budget (``http.max_body_buffer``) before it is read.
BODY_STEP = 64 * 1024


class _BodyTimeout(Exception):
    """Raised into a request's greenlet when its body takes longer than body_timeout."""


class Request:
    """What a route needs of the WSGI environ; the body is read on demand, bounded in size,
    in time, and in the memory all bodies being received at once may hold."""

    def __init__(self, environ, settings, body_budget: dict):
        self.environ = environ
        self.method = environ.get("REQUEST_METHOD", "GET").upper()
        # PEP 3333: PATH_INFO is the percent-decoded path as latin-1; its bytes are UTF-8.
        self.path = environ.get("PATH_INFO", "") or "/"
        self.query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        self.settings = settings
        self.max_body = settings.max_body
        self._budget = body_budget  # {"held": bytes}, shared by every request in flight
        self._held = 0
        self._body = None

    def header(self, name: str, default: str = "") -> str:
        key = "HTTP_" + name.upper().replace("-", "_")
        if key == "HTTP_CONTENT_TYPE":
            key = "CONTENT_TYPE"
        elif key == "HTTP_CONTENT_LENGTH":
            key = "CONTENT_LENGTH"
        return self.environ.get(key, default) or default

    @property
    def content_type(self) -> str:
        return self.header("Content-Type").split(";", 1)[0].strip().lower()

    def _declared_length(self):
        length = self.header("Content-Length")
        if not length:
            return None
        try:
            return int(length)
        except ValueError:
            raise HttpError(400, "bad Content-Length") from None

    def _refuse(self, status: int, message: str, headers=()):
        _abandon(self.environ["wsgi.input"])
        raise HttpError(status, message, [("Connection", "close"), *headers])

    def _charge(self, size: int) -> None:
        budget = self._budget
        limit = self.settings.max_body_buffer
        if budget["held"] + size > limit:
            self._refuse(503, f"too many request bodies are being received at once "
                              f"(http.max_body_buffer is {limit} bytes); try again", [("Retry-After", "1")])
        budget["held"] += size
        self._held += size

    def release(self) -> None:
        """Give this request's share of the body budget back (the request is answered)."""
        self._budget["held"] -= self._held
        self._held = 0

    def body(self) -> bytes:
        if self._body is None:
            self._body = self._read_body()
        return self._body

    def _read_body(self) -> bytes:
        limit = self.max_body
        size = self._declared_length()
        if size is not None and size > limit:
            self._refuse(413, f"request body over {limit} bytes")
        if size == 0:
            return b""
        stream = self.environ["wsgi.input"]
        want = size if size is not None else limit + 1  # chunked: read one byte past the limit
        parts, got = [], 0
        timer = gevent.Timeout.start_new(self.settings.body_timeout, _BodyTimeout)
        try:
            while got < want:
                step = min(BODY_STEP, want - got)
                self._charge(step)
                chunk = stream.read(step)
                self._budget["held"] -= step - len(chunk)
                self._held -= step - len(chunk)
                if not chunk:
                    break
                parts.append(chunk)
                got += len(chunk)
        except _BodyTimeout:
            self._refuse(408, f"request body not received within {self.settings.body_timeout:g} s "
                              "(http.body_timeout)")
        except OSError:
            # pywsgi's input raises IOError when the client ends before Content-Length.
            self._refuse(400, "request body ended early")
        finally:
            timer.cancel()
        if got > limit:
            self._refuse(413, f"request body over {limit} bytes")
        return b"".join(parts)

    def left_body_unread(self) -> bool:
        """True when the client sent (or announced) a body that no route read.

        pywsgi would read and discard it after the reply, with no time limit; the
        connection is closed instead.
        """
        if self._body is not None:
            return False
        environ = self.environ
        announced = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        try:
            announced = announced or (self._declared_length() or 0) > 0
        except HttpError:
            announced = True
        if announced:
            _abandon(environ["wsgi.input"])
        return announced

    def json_body(self, missing: str = "content is missing"):
        """The body parsed as JSON; it must be sent as application/json."""
        if self.content_type != JSON_TYPE:
            raise HttpError(415, "content-type must be set to application/json")
        raw = self.body()
        if not raw.strip():
            raise HttpError(400, missing)
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise HttpError(400, "body is not valid JSON") from None

    def arg(self, name: str, default=None):
        values = self.query.get(name)
        return values[-1] if values else default

    def int_arg(self, name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
        raw = self.arg(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise HttpError(400, f"{name} must be an integer") from None
        if value < minimum:
            raise HttpError(400, f"{name} must be at least {minimum}")
        return min(value, maximum) if maximum is not None else value

    def flag(self, name: str) -> bool:
        raw = self.arg(name)
        if raw is None:
            return False
        if raw.lower() in ("", "1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise HttpError(400, f"{name} must be 1 or 0")


# -- access checks ------------------------------------------------------------------------


def check_host(request: Request, allowed: frozenset) -> None:
    """Refuse a Host header outside ``allowed`` (DNS rebinding); empty ``allowed`` = any."""
    if not allowed:
        return
    host = request.header("Host")
    if not host:
        return  # HTTP/1.0 without Host: not a browser
    name = host.lower()
    if name.startswith("["):
        name = name.split("]", 1)[0] + "]"
    else:
        name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
    if name not in allowed:
        raise HttpError(403, f"host {host!r} is not allowed (see http.allowed_hosts)")


#: Sec-Fetch-Site values a changing request may carry: a page of this server, or the user
#: (address bar, bookmark).  "same-site" is refused too: another port of the same host.
SAFE_FETCH_SITES = ("", "same-origin", "none")


def check_same_origin(request: Request) -> None:
    """A changing request from a browser must come from a page of this server (CSRF).

    A request without Origin and Sec-Fetch-Site is not from a browser (curl, a worker)
    and passes.  ``Origin: null`` (a sandboxed frame, a file:// page, some redirects)
    is opaque: it cannot be shown to be this server, so it is refused.
    """
    if request.header("Sec-Fetch-Site").lower() not in SAFE_FETCH_SITES:
        raise HttpError(403, "cross-origin request refused")
    origin = request.header("Origin")
    if not origin:
        return
    if origin == "null":
        raise HttpError(403, "cross-origin request refused (Origin: null)")
    host = request.header("Host").lower()
    if not host or urlsplit(origin).netloc.lower() != host:
        raise HttpError(403, "cross-origin request refused")


def check_auth(request: Request, settings) -> None:
    """Raise 401 unless the request carries the configured token or credentials."""
    if not settings.auth_required:
        return
    given = request.header("Authorization")
    scheme, _, value = given.partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if settings.token:
        token = value if scheme == "bearer" else request.header("X-Erqpy-Token")
        if token and hmac.compare_digest(token.encode(), settings.token.encode()):
            return
    if settings.username and scheme == "basic":
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise HttpError(400, "malformed basic credentials") from None
        ok_user = hmac.compare_digest(user.encode(), settings.username.encode())
        ok_password = hmac.compare_digest(password.encode(), settings.password.encode())
        if ok_user and ok_password:
            return
    challenge = 'Basic realm="erqpy"' if settings.username else 'Bearer realm="erqpy"'
    raise HttpError(401, "authentication required for this action", [("WWW-Authenticate", challenge)])
