"""The dashboard's pages: a server-rendered shell per view that ``static/*.js`` fills in.

Views: ``overview`` (``/`` and ``/dashboard``: headline totals, charts, the queues
table, the server panels, the nodes panel in engine mode), ``queue``
(``/dashboard/q/NAME``: its charts, settings, items and per-job actions), ``errors``
(``/dashboard/errors``: the ``*_errors`` queues and their records) and ``consumers``
(``/dashboard/consumers``).  The overview's queue table is rendered here already, so the
page shows the queues without the script; the script then keeps every view live (stats
pushed over ``/ws`` where the server has it, polled otherwise).
"""

import json
from html import escape

from erqpy_http import stats

COLUMNS = (
    # (field, heading, tooltip)
    ("queue", "Queue", "queue name: opens its page"),
    ("items", "Depth", "items waiting"),
    ("rate_in", "In/s", "items added per second"),
    ("rate_out", "Out/s", "items taken per second"),
    ("head_age_ms", "Head age", "age of the item at the head"),
    ("open_transactions", "Open", "reliable reads open (memcache and HTTP)"),
    ("waiters", "Waiting", "blocked readers"),
    ("bytes", "Bytes", "payload bytes waiting"),
    # Shown once the server reports it (scheduled items): the script sets has-delayed.
    ("delayed", "Delayed", "items scheduled for later, not yet takeable"),
    ("paused", "State", "paused: consumers get nothing"),
    ("actions", "", ""),
)
VIEWS = {
    "overview": ("Overview", "/dashboard"),
    "errors": ("Error queues", "/dashboard/errors"),
    "consumers": ("Consumers", "/dashboard/consumers"),
}
SCRIPTS = {
    "overview": ("dashboard-charts.js", "dashboard-overview.js"),
    "queue": ("dashboard-charts.js", "dashboard-queue.js"),
    "errors": ("dashboard-errors.js",),
    "consumers": ("dashboard-consumers.js",),
}


def _fmt(field: str, value) -> str:
    if field == "paused":
        return "paused" if value else "active"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _row(name: str, info: dict) -> str:
    cells = []
    for field, _heading, _tip in COLUMNS:
        if field == "actions":
            value, shown = "", ""
        elif field == "queue":
            value, shown = name, name
        else:
            value = info.get(field, "")
            shown = _fmt(field, value)
        raw = int(value) if isinstance(value, bool) else value
        cells.append(f'<td data-field="{field}" data-value="{escape(str(raw))}">{escape(shown)}</td>')
    # The script's rows replace these (class queue-row, totals over the servers).
    return f'<tr data-server="0" data-queue="{escape(name)}">{"".join(cells)}</tr>'


def _overview(snap: dict) -> str:
    heads = "".join(
        f'<th data-sort="{f}" title="{escape(tip)}" scope="col">{escape(h)}</th>' if f != "actions"
        else '<th scope="col"><span class="sr">actions</span></th>'
        for f, h, tip in COLUMNS
    )
    rows = "".join(_row(name, info) for name, info in snap["queues"].items())
    return f"""
<section id="totals" aria-label="totals"></section>
<section id="charts" class="charts">
  <div class="chart-head"><h2>Throughput</h2>
    <label>window <select id="window"><option value="5m">5 min</option><option value="1h">1 h</option>
      <option value="24h">24 h</option></select></label>
    <label id="chart-server-box" hidden>server <select id="chart-server"></select></label></div>
  <div class="chart" id="chart-rates"></div>
  <div class="chart" id="chart-depth"></div>
</section>
<section id="queues-section">
  <div class="toolbar">
    <input id="filter" type="search" placeholder="filter: name, or items>=10, queue!=_prod$">
    <span id="enqueue-form" class="writes">
      <input id="enqueue-queue" placeholder="queue" size="10">
      <input id="enqueue-job" placeholder='{{"test": true}}' size="16">
      <button id="enqueue-button" type="button">Enqueue</button>
    </span>
  </div>
  <div class="table-wrap"><table id="queues">
    <thead><tr>{heads}</tr></thead>
    <tbody>{rows}</tbody>
  </table></div>
  <p id="no-queues"{" hidden" if rows else ""}>No queues yet.</p>
</section>
<section id="nodes-section" hidden><h2>Nodes</h2><div class="table-wrap"><table id="nodes">
  <thead><tr><th>Node</th><th>Lease expires in</th><th>Open reads</th></tr></thead><tbody></tbody>
</table></div></section>
<section id="servers"></section>"""


def _queue_view(name: str) -> str:
    return f"""
<nav class="crumbs"><a href="/dashboard">Overview</a> / <b id="queue-name">{escape(name)}</b>
  <label id="queue-server-box" hidden>server <select id="queue-server"></select></label></nav>
<section id="queue-figures" class="cards"></section>
<section id="charts" class="charts">
  <div class="chart-head"><h2>Throughput</h2>
    <label>window <select id="window"><option value="5m">5 min</option><option value="1h">1 h</option>
      <option value="24h">24 h</option></select></label></div>
  <div class="chart" id="chart-rates"></div>
  <div class="chart" id="chart-depth"></div>
</section>
<section id="queue-actions" class="writes toolbar"></section>
<section id="items-section"><h2>Items <small id="items-range"></small></h2>
  <p class="hint">Delete and move act on the job at the head of the queue.</p>
  <ol id="items"></ol>
  <div class="pager"><button id="prev-page" type="button">Previous</button>
    <button id="next-page" type="button">Next</button></div>
</section>
<section id="settings-section"><h2>Settings in force</h2><dl id="settings" class="grid"></dl></section>"""


def _errors_view() -> str:
    return """
<section><h2>Error queues</h2><p class="hint">Jobs a consumer gave up on, with the error it
stored. Retry puts a job back on the queue it failed on, at its first attempt.</p>
<div id="error-queues"></div><p id="no-errors" hidden>No error queues.</p></section>"""


def _consumers_view() -> str:
    return """
<section><h2>Open reads</h2><div class="table-wrap"><table id="holders">
  <thead><tr><th>Server</th><th>Client</th><th>Queue</th><th>Open reads</th><th>Held for</th></tr></thead>
  <tbody></tbody></table></div><p id="no-holders" hidden>No open reads.</p></section>
<section><h2>Blocked readers</h2><div class="table-wrap"><table id="blocked">
  <thead><tr><th>Server</th><th>Queue</th><th>Client</th><th>Waiting for</th></tr></thead>
  <tbody></tbody></table></div><p id="no-blocked" hidden>No reader is waiting.</p></section>"""


def render(state, data: dict, settings, view: str = "overview", queue: str | None = None) -> str:
    snap = stats.snapshot(state, data, settings)
    page_config = {
        "view": view,
        "queue": queue,
        "servers": [{"name": "this server", "base": ""}]
        + [{"name": p["name"], "base": f"/peers/{i}"} for i, p in enumerate(settings.servers)],
        "refresh": settings.refresh,
        "read_only": settings.read_only,
        "auth": settings.auth_scheme or None,
        "initial": snap,
    }
    blob = json.dumps(page_config, separators=(",", ":")).replace("</", "<\\/")
    body = {"overview": lambda: _overview(snap), "queue": lambda: _queue_view(queue or ""),
            "errors": _errors_view, "consumers": _consumers_view}[view]()
    nav = "".join(
        f'<a href="{href}"{" aria-current=page" if key == view else ""}>{escape(label)}</a>'
        for key, (label, href) in VIEWS.items()
    )
    refresh_options = "".join(
        f'<option value="{s}"{" selected" if s == settings.refresh else ""}>{s:g} s</option>'
        for s in sorted({1, 2, 5, 15, 30, 60, settings.refresh})
    )
    token_box = ""
    if settings.auth_scheme == "bearer":
        token_box = '<label>token <input id="token" type="password" autocomplete="off" size="10"></label>'
    mode = '<span class="badge">read-only</span>' if settings.read_only else ""
    title = f"{queue} - erqpy" if view == "queue" else f"{VIEWS[view][0]} - erqpy"
    scripts = "".join(f'<script src="/static/{name}"></script>' for name in SCRIPTS[view])
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/uplot.min.css">
<link rel="stylesheet" href="/static/dashboard.css">
</head>
<body data-view="{view}">
<header>
  <h1><a href="/dashboard">erqpy</a></h1> {mode}
  <nav class="views">{nav}</nav>
  <span class="controls">
  <label>refresh <select id="refresh-interval">{refresh_options}</select></label>
  <button id="refresh-toggle" type="button">Pause updates</button>
  <span id="live" title="how the page gets its figures">polling</span>
  <span id="last-update">rendered by the server</span>
  {token_box}
  </span>
</header>
<div id="message" role="status" hidden></div>
<main>{body}</main>
<script id="erqpy-config" type="application/json">{blob}</script>
<script src="/static/uplot.iife.min.js"></script>
<script src="/static/dashboard.js"></script>
{scripts}
</body>
</html>
"""
