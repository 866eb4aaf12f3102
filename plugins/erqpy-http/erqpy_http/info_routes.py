"""Server-wide routes: stats, metrics, the OpenAPI description, the dashboard and its
files, code reload, and the proxy to peer servers shown on the dashboard."""

import http.client
import os
from urllib.parse import quote, urlsplit

from erqpy.server import ops
from erqpy.server.reload import reload_all

from erqpy_http import dashboard, stats
from erqpy_http.web import HttpError, Response, json_response

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
OPENAPI_PATH = os.path.join(PACKAGE_DIR, "openapi.json")
STATIC_DIR = os.path.join(PACKAGE_DIR, "static")
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".svg": "image/svg+xml"}
NO_CACHE = [("Cache-Control", "no-cache")]
#: Seconds to wait for a peer beyond any ``wait`` the request asks of it.
PEER_TIMEOUT = 10.0
MAX_PEER_REPLY = 64 * 1024 * 1024


def server_stats(ctx, request, name=None):
    """GET /stats, /status (presque's later name), and the per-queue forms."""
    with_history = request.flag("history")
    if name is None:
        return json_response(stats.snapshot(ctx.state, ctx.data, ctx.settings, with_history=with_history))
    from erqpy_http.queue_routes import existing_queue

    queue = existing_queue(ctx, name)
    body = stats.snapshot(ctx.state, ctx.data, ctx.settings, [queue.name], with_history)
    body["queue"] = queue.name
    body["size"] = ops.depth(queue)  # in memory and on disk, as "items" and memcache stats say
    return json_response(body)


def metrics(ctx, request):
    text = stats.metrics_text(ctx.state, ctx.data, ctx.settings)
    return Response(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")


def openapi(ctx, request):
    with open(OPENAPI_PATH, "rb") as f:
        return Response(200, f.read(), "application/json", NO_CACHE)


def index(ctx, request):
    page = dashboard.render(ctx.state, ctx.data, ctx.settings)
    return Response(200, page.encode(), "text/html; charset=utf-8", NO_CACHE)


def static_file(ctx, request, filename):
    suffix = os.path.splitext(filename)[1]
    if suffix not in STATIC_TYPES or "/" in filename or filename.startswith("."):
        raise HttpError(404, "not found")
    path = os.path.join(STATIC_DIR, filename)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise HttpError(404, "not found") from None
    return Response(200, data, STATIC_TYPES[suffix], NO_CACHE)


def reload_code(ctx, request):
    """POST /server/reload: what ``erqctl reload`` does (the file, handlers and plugins)."""
    result = reload_all(ctx.state)
    if result.get("ok"):
        ctx.log.info("code reloaded over HTTP: generation %s", result.get("generation"))
        return json_response(result)
    raise HttpError(409, f"reload refused: {result.get('error', 'unknown error')}",
                    generation=result.get("generation"))


def node_list(ctx, request):
    """GET /nodes: engine mode's live nodes, their leases and open reads (``erqctl nodes``)."""
    return json_response(ops.nodes(ctx.state))


# -- peers ----------------------------------------------------------------------------------


def peer_list(ctx, request):
    peers = [{"index": i, "name": p["name"], "url": p["url"]} for i, p in enumerate(ctx.settings.servers)]
    return json_response({"servers": peers})


def peer_proxy(ctx, request, index, rest):
    """Any method on /peers/N/<path>: forwarded to peer N's HTTP API with its token."""
    peers = ctx.settings.servers
    if not index.isdigit() or int(index) >= len(peers):
        raise HttpError(404, "no such peer")
    if rest.split("/", 1)[0] in ("peers", "", "static"):
        raise HttpError(400, "only the JSON API of a peer can be reached through /peers")
    peer = peers[int(index)]
    parts = urlsplit(peer["url"])
    path = "/" + quote(rest.encode("latin-1", "replace"), safe="/")
    query = request.environ.get("QUERY_STRING", "")
    if query:
        path += "?" + query
    headers = {"Accept": "application/json"}
    if request.header("Content-Type"):
        headers["Content-Type"] = request.header("Content-Type")
    if peer["token"] and ctx.settings.auth_required:
        # Lent only where this server has auth of its own, so that every changing request
        # through here has passed it (config.parse already refuses a peer token otherwise).
        headers["Authorization"] = f"Bearer {peer['token']}"
    body = request.body() if request.method in ("POST", "PUT", "DELETE") else None
    wait_ms = request.int_arg("wait", 0, minimum=0, maximum=ctx.settings.max_wait_ms)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=PEER_TIMEOUT + wait_ms / 1000.0)
    try:
        conn.request(request.method, path, body=body, headers=headers)
        reply = conn.getresponse()
        data = reply.read(MAX_PEER_REPLY)
        kind = reply.getheader("Content-Type", "application/json")
        status = reply.status
    except (OSError, http.client.HTTPException) as exc:
        raise HttpError(502, f"peer {peer['name']} unreachable: {exc}") from None
    finally:
        conn.close()
    return Response(status, data, kind)
