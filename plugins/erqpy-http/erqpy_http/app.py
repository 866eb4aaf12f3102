"""The WSGI application: routing, access checks, and turning failures into JSON errors.

The route table is the contract that ``openapi.json`` describes; a test checks that the
two list the same operations.
"""

import logging
import re

from erqpy.errors import Unavailable

from erqpy_http import dashboard_routes as dash
from erqpy_http import info_routes as info
from erqpy_http import queue_routes as q
from erqpy_http import ws
from erqpy_http.config import allowed_host_names
from erqpy_http.web import (
    REASONS, HttpError, Request, check_auth, check_host, check_same_origin, error_response,
)

NAME = r"(?P<name>[^/]+)"
#: (methods, path pattern, handler).  Patterns use OpenAPI's {param} spelling.
ROUTES = [
    ({"GET"}, "/", info.index),
    ({"GET"}, "/static/{filename}", info.static_file),
    ({"GET"}, "/openapi.json", info.openapi),
    ({"GET"}, "/stats", info.server_stats),
    ({"GET"}, "/status", info.server_stats),
    ({"GET"}, "/stats/{name}", info.server_stats),
    ({"GET"}, "/status/{name}", info.server_stats),
    ({"GET"}, "/metrics", info.metrics),
    ({"GET"}, "/nodes", info.node_list),
    ({"GET"}, "/queues", q.queue_list),
    ({"GET"}, "/queues/{name}", q.job_info),
    ({"DELETE"}, "/queues/{name}", q.delete_queue),
    ({"GET"}, "/q/{name}", q.get_job),
    ({"POST"}, "/q/{name}/take", q.take_job),
    ({"POST", "PUT"}, "/q/{name}", q.post_job),
    ({"DELETE"}, "/q/{name}", q.flush_queue),
    ({"POST"}, "/q/{name}/{action}/{reservation}", q.settle_job),
    ({"GET"}, "/qb/{name}", q.get_batch),
    ({"POST"}, "/qb/{name}/take", q.take_batch),
    ({"POST"}, "/qb/{name}", q.post_batch),
    ({"POST"}, "/qb/{name}/{action}", q.settle_batch),
    ({"GET"}, "/j/{name}", q.job_info),
    ({"GET"}, "/control/{name}", q.control_get),
    ({"POST"}, "/control/{name}", q.control_post),
    ({"POST"}, "/server/reload", info.reload_code),
    ({"GET"}, "/peers", info.peer_list),
    ({"GET"}, "/dashboard", dash.overview_page),
    ({"GET"}, "/dashboard/q/{name}", dash.queue_page),
    ({"GET"}, "/dashboard/errors", dash.errors_page),
    ({"GET"}, "/dashboard/consumers", dash.consumers_page),
    ({"GET"}, "/history", dash.history_series),
    ({"GET"}, "/consumers", dash.consumer_list),
    ({"GET"}, "/queues/{name}/items", dash.queue_items),
    ({"DELETE"}, "/queues/{name}/items/{item_id}", dash.delete_item),
    ({"POST"}, "/queues/{name}/items/{item_id}/move", dash.move_item),
    ({"POST"}, "/queues/{name}/retry", dash.retry),
    ({"GET", "POST", "PUT", "DELETE"}, "/peers/{index}/{rest}", info.peer_proxy),
]
_PARAM_PATTERNS = {"action": "(?P<action>confirm|abort)", "rest": "(?P<rest>.+)"}


def _compile(template: str):
    def param(match):
        name = match.group(1)
        return _PARAM_PATTERNS.get(name, f"(?P<{name}>[^/]+)")

    return re.compile("^" + re.sub(r"\{(\w+)\}", param, template) + "$")


COMPILED = [(methods, _compile(template), handler) for methods, template, handler in ROUTES]


def is_changing(method: str, path: str) -> bool:
    """Does this request change anything?  Fetching a job does: it is consumed (GET /q
    and GET /qb where ``allow_get_consume`` or a token lets them)."""
    if method not in ("GET", "HEAD"):
        return True
    return path.startswith("/q/") or path.startswith("/qb/")


def route(method: str, path: str):
    allowed = set()
    for methods, pattern, handler in COMPILED:
        match = pattern.match(path)
        if match is None:
            continue
        if method in methods:
            return handler, match.groupdict()
        allowed |= methods
    if allowed:
        raise HttpError(405, f"{method} is not allowed here", [("Allow", ", ".join(sorted(allowed)))])
    raise HttpError(404, "not found")


class Context:
    """What the routes reach: the server state, the plugin's long-lived data, settings."""

    def __init__(self, api, settings):
        self.api = api
        self.state = api.state
        self.data = api.data
        self.settings = settings
        self.log = api.log
        self.allowed_hosts = allowed_host_names(settings)


def dispatch(ctx, request):
    path = request.path
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"  # presque's clients ask for /status/
    check_host(request, ctx.allowed_hosts)
    if ws.is_websocket_path(path):
        return ws.upgrade(ctx, request, path)  # its own Origin and auth checks
    handler, params = route(request.method, path)
    if handler is q.get_job or handler is q.get_batch:
        q.refuse_get_consume(ctx, request, params["name"], batch=handler is q.get_batch)
    changing = is_changing(request.method, path)
    if handler is info.peer_proxy:
        changing = is_changing(request.method, "/" + params["rest"])
    if changing:
        if ctx.settings.read_only:
            raise HttpError(403, "read-only mode: this action is disabled")
        check_same_origin(request)
        check_auth(request, ctx.settings)
    return handler(ctx, request, **params)


SECURITY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy",
     "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
     "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
]


def make_app(ctx):
    log = logging.getLogger("erqpy.plugin.http")
    requests = ctx.data.setdefault("requests", {})
    # Bytes of request bodies held now, over all connections (http.max_body_buffer); in
    # api.data so that requests still running old code after a reload count too.
    body_budget = ctx.data.setdefault("body_budget", {"held": 0})

    def application(environ, start_response):
        request = Request(environ, ctx.settings, body_budget)
        try:
            response = dispatch(ctx, request)
        except HttpError as exc:
            response = error_response(exc)
        except Unavailable as exc:  # the operations layer's status rules: READONLY, QUIESCENT
            response = error_response(HttpError(503, exc.reason))
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            response = error_response(HttpError(500, "internal error"))
        finally:
            request.release()
        if response.status == 101:  # a WebSocket: its session runs here (ws.py)
            return response.run(start_response)
        if request.left_body_unread() and not any(k == "Connection" for k, _ in response.headers):
            response.headers.append(("Connection", "close"))
        status = response.status
        requests[status] = requests.get(status, 0) + 1
        if ctx.settings.access_log:
            log.info("%s %s %s -> %d", environ.get("REMOTE_ADDR", "-"), request.method, request.path, status)
        headers = response.headers + SECURITY_HEADERS
        body = response.body
        if status != 204:
            headers.append(("Content-Length", str(len(body))))
        start_response(f"{status} {REASONS.get(status, 'Unknown')}", headers)
        return [body] if body else []

    return application
