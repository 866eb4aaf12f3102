"""The dashboard page: server-rendered HTML that ``static/dashboard.js`` then keeps live.

The first render already shows the server panel and the queue table, so the page is
useful without the script; the script polls ``/stats?history=1`` (and each peer's through
``/peers/N``) and redraws, adds sorting, filtering, sparklines and the actions.
"""

import json
from html import escape

from erqpy_http import stats

COLUMNS = (
    # (field, heading, tooltip)
    ("queue", "Queue", "queue name"),
    ("items", "Items", "items waiting"),
    ("bytes", "Bytes", "payload bytes waiting"),
    ("rate_in", "In/s", "items added per second"),
    ("rate_out", "Out/s", "items taken per second"),
    ("spark", "Rate", "in (blue) and out (green) over the last samples"),
    ("head_age_ms", "Head age", "age of the item at the head"),
    ("waiters", "Waiters", "blocked readers"),
    ("open_transactions", "Open", "reliable reads open (memcache and HTTP)"),
    ("logsize", "Journal", "journal file size"),
    ("paused", "Paused", "consumers paused"),
    ("actions", "", ""),
)


def _fmt(field: str, value) -> str:
    if field == "paused":
        return "paused" if value else ""
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _row(name: str, info: dict) -> str:
    cells = []
    for field, _heading, _tip in COLUMNS:
        if field == "queue":
            value, shown = name, name
        elif field in ("spark", "actions"):
            value, shown = "", ""
        else:
            value = info.get(field, "")
            shown = _fmt(field, value)
        raw = int(value) if isinstance(value, bool) else value
        cells.append(f'<td data-field="{field}" data-value="{escape(str(raw))}">{escape(shown)}</td>')
    return f'<tr data-server="0" data-queue="{escape(name)}">{"".join(cells)}</tr>'


def _server_panel(server: dict, http: dict) -> str:
    fields = (
        ("version", server["version"]), ("status", server["status"]), ("uptime", f'{server["uptime"]} s'),
        ("connections", server["curr_connections"]), ("items", server["curr_items"]),
        ("handler generation", server["handler_generation"]),
        ("reservations", http["reservations"]),
    )
    rows = "".join(f"<dt>{escape(k)}</dt><dd data-field=\"{escape(k)}\">{escape(str(v))}</dd>" for k, v in fields)
    return (
        '<div class="server" data-server="0"><h2>this server</h2>'
        f"<dl>{rows}</dl></div>"
    )


def render(state, data: dict, settings) -> str:
    snap = stats.snapshot(state, data, settings, with_history=True)
    page_config = {
        "servers": [{"name": "this server", "base": ""}]
        + [{"name": p["name"], "base": f"/peers/{i}"} for i, p in enumerate(settings.servers)],
        "refresh": settings.refresh,
        "read_only": settings.read_only,
        "auth": settings.auth_scheme or None,
        "initial": snap,
    }
    blob = json.dumps(page_config, separators=(",", ":")).replace("</", "<\\/")
    heads = "".join(
        f'<th data-sort="{f}" title="{escape(tip)}">{escape(h)}</th>' if f not in ("spark", "actions")
        else f"<th>{escape(h)}</th>"
        for f, h, tip in COLUMNS
    )
    rows = "".join(_row(name, info) for name, info in snap["queues"].items())
    refresh_options = "".join(
        f'<option value="{s}"{" selected" if s == settings.refresh else ""}>{s:g} s</option>'
        for s in sorted({1, 2, 5, 15, 30, 60, settings.refresh})
    )
    token_box = ""
    if settings.auth_scheme == "bearer":
        token_box = '<label>token <input id="token" type="password" autocomplete="off" size="12"></label>'
    mode = '<span class="badge">read-only</span>' if settings.read_only else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>erqpy dashboard</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/dashboard.css">
</head>
<body>
<header>
  <h1>erqpy</h1> {mode}
  <label>refresh <select id="refresh-interval">{refresh_options}</select></label>
  <button id="refresh-toggle" type="button">Pause updates</button>
  <span id="last-update">rendered by the server</span>
  <span id="errors" hidden>errors: <b id="error-count">0</b> <span id="last-error"></span></span>
  {token_box}
</header>
<section id="servers">{_server_panel(snap["server"], snap["http"])}</section>
<section id="queues-section">
  <div class="toolbar">
    <input id="filter" type="search" size="40"
      placeholder="filter: name, or field op value (items>=10, queue!=.*_prod$)">
    <span id="enqueue-form" class="writes">
      <input id="enqueue-queue" placeholder="queue" size="12">
      <input id="enqueue-job" placeholder='{{"test": true}}' size="24">
      <button id="enqueue-button" type="button">Enqueue</button>
    </span>
    <span id="message" role="status"></span>
  </div>
  <table id="queues">
    <thead><tr>{heads}</tr></thead>
    <tbody>{rows}</tbody>
  </table>
  <p id="no-queues"{" hidden" if rows else ""}>No queues yet.</p>
</section>
<section id="detail" hidden>
  <h2 id="detail-title"></h2>
  <button id="detail-close" type="button">Close</button>
  <ol id="detail-items"></ol>
</section>
<script id="erqpy-config" type="application/json">{blob}</script>
<script src="/static/dashboard.js"></script>
</body>
</html>
"""
