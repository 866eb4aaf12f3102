"""``/ws``: the stats pushes the dashboard reads instead of polling ``GET /stats``.

Every ``ws_push_interval`` seconds each socket gets ``{"type": "stats", "body": ...}``,
the body being what ``GET /stats`` answers at that moment (``/ws?history=1``: what
``GET /stats?history=1`` answers, with the rate history).  The text is made once per half
interval and shared by every socket (``api.data["ws_stats"]``), so a hundred open
dashboards cost one snapshot, not a hundred.  The client sends nothing; a message from it
is answered with an error message (the socket stays open).
"""

import logging
import time

import gevent

from erqpy_http import stats
from erqpy_http.web import dumps

log = logging.getLogger("erqpy.plugin.http.ws")


def push_text(ctx, with_history: bool) -> str:
    """The push message, from the shared cache when it is fresh enough."""
    caches = ctx.data.setdefault("ws_stats", {})
    cache = caches.setdefault(with_history, {"at": -1e9, "text": ""})
    now = time.monotonic()
    if now - cache["at"] >= ctx.settings.ws_push_interval / 2:
        body = stats.snapshot(ctx.state, ctx.data, ctx.settings, with_history=with_history)
        cache["text"] = dumps({"type": "stats", "body": body}).decode()
        cache["at"] = now
    return cache["text"]


def _push_loop(ctx, ws, with_history: bool) -> None:
    while not ws.closed:
        try:
            text = push_text(ctx, with_history)
        except Exception:
            log.exception("stats push failed")
        else:
            if not ws.send_text(text):
                return
        gevent.sleep(ctx.settings.ws_push_interval)


def session_for(ctx, with_history: bool = False):
    def session(ws) -> None:
        pusher = gevent.spawn(_push_loop, ctx, ws, with_history)
        try:
            for _message in ws.messages():
                ws.send_json({"type": "error", "error": "/ws takes no messages: it only pushes stats"})
        finally:
            pusher.kill(block=False)

    return session
