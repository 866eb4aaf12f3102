"""Queue and server figures for the JSON API, the dashboard and ``/metrics``.

Rates come from counters sampled every ``sample_interval`` seconds into
``api.data["history"]`` (so a plugin reload keeps the sparklines): per queue a list of
``(monotonic time, items put, items taken)``.
"""

import time
from collections import deque

from erqpy.server import ops
from erqpy.server.stats import server_stats
from erqpy.storage.pqueue import now_ms

from erqpy_http import reservations
from erqpy_http.ws import counters as ws_counters


def sample(data: dict, state, keep: int) -> None:
    """Record one counter sample per queue; forget queues that are gone."""
    history = data.setdefault("history", {})
    now = time.monotonic()
    previous = data.get("last_sample")
    queues = state.collection.queues
    for name in [n for n in history if n not in queues]:
        del history[name]
    for name, queue in list(queues.items()):
        samples = history.get(name)
        if samples is None or samples.maxlen != keep + 1:
            samples = history[name] = deque(samples or (), maxlen=keep + 1)
            if not samples and previous is not None:
                # Created since the last sample: its counters started at zero then, so
                # a burst that created the queue shows in its first rate.
                samples.append((previous, 0, 0))
        samples.append((now, queue.stats.puts, queue.stats.gets))
    data["last_sample"] = now


def rates(samples) -> tuple[list, list]:
    """Items per second in and out between consecutive samples, oldest first."""
    rate_in, rate_out = [], []
    previous = None
    for sample_ in samples or ():
        if previous is not None:
            dt = sample_[0] - previous[0]
            if dt > 0:
                # A queue deleted and created again restarts its counters: never negative.
                rate_in.append(round(max(sample_[1] - previous[1], 0) / dt, 2))
                rate_out.append(round(max(sample_[2] - previous[2], 0) / dt, 2))
        previous = sample_
    return rate_in, rate_out


def head_age_ms(queue, now: int) -> int:
    head = ops.head_items(queue, 1)
    return max(now - head[0].added_ms, 0) if head else 0


def queue_info(state, data: dict, queue, held: dict, with_history: bool = False) -> dict:
    """One queue's figures: the core's stats fields plus the HTTP view's own."""
    info = ops.queue_stats(state, queue)
    rate_in, rate_out = rates(data.get("history", {}).get(queue.name))
    info.update({
        "paused": queue.paused,
        "head_age_ms": head_age_ms(queue, now_ms()),
        "rate_in": rate_in[-1] if rate_in else 0.0,
        "rate_out": rate_out[-1] if rate_out else 0.0,
        "enqueued": queue.stats.puts,
        "dequeued": queue.stats.gets,
        "reservations": held.get(queue.name, 0),
    })
    if with_history:
        info["history"] = {"in": rate_in, "out": rate_out}
    return info


def server_info(state, settings) -> dict:
    info = server_stats(state)
    registry = state.registry
    info.update({
        "status": state.status,
        "handler_generation": registry.generation if registry is not None else 0,
        "plugin_generation": state.plugins.generation if state.plugins is not None else 0,
        "fsync": state.settings.fsync,
        "fsync_count": state.syncer.fsync_count,
        "fsync_seconds": round(state.syncer.fsync_seconds, 6),
    })
    return info


def snapshot(state, data: dict, settings, names=None, with_history: bool = False) -> dict:
    held = reservations.count_by_queue(data)
    queues = state.collection.queues
    selected = sorted(queues) if names is None else [n for n in names if n in queues]
    return {
        "server": server_info(state, settings),
        "http": {
            "read_only": settings.read_only,
            "auth": settings.auth_scheme or None,
            "sample_interval": settings.sample_interval,
            "refresh": settings.refresh,
            "reservations": sum(held.values()),
            "websockets": dict(ws_counters(data)),
        },
        "queues": {name: queue_info(state, data, queues[name], held, with_history) for name in selected},
    }


def peek(queue, count: int, preview_bytes: int = 1000) -> list:
    """The first ``count`` waiting items, not removed, with a text preview of each."""
    now = now_ms()
    out = []
    for item in ops.head_items(queue, count):
        data = item.data
        out.append({
            "item_id": item.id,
            "bytes": len(data),
            "age_ms": max(now - item.added_ms, 0),
            "preview": data[:preview_bytes].decode("utf-8", "replace"),
            "truncated": len(data) > preview_bytes,
        })
    return out


# -- Prometheus text format ------------------------------------------------------------------


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text(state, data: dict, settings) -> str:
    snap = snapshot(state, data, settings)
    server = snap["server"]
    lines = []

    def metric(name, kind, help_text, samples):
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lines.append(f"{name}{labels} {value}")

    metric("erqpy_info", "gauge", "Server version (the value is always 1).",
           [(f'{{version="{_label(server["version"])}",status="{server["status"]}"}}', 1)])
    metric("erqpy_uptime_seconds", "gauge", "Seconds since the server started.", [("", server["uptime"])])
    metric("erqpy_connections", "gauge", "Open memcache-protocol connections.",
           [("", server["curr_connections"])])
    metric("erqpy_connections_total", "counter", "Memcache-protocol connections accepted.",
           [("", server["total_connections"])])
    metric("erqpy_items", "gauge", "Items waiting in all queues.", [("", server["curr_items"])])
    metric("erqpy_bytes", "gauge", "Payload bytes waiting in all queues.", [("", server["bytes"])])
    metric("erqpy_fsync_seconds", "summary", "Time spent in journal fsync rounds.",
           # A summary's samples are <name>_sum and <name>_count: the "labels" slot names them.
           [("_sum", f'{state.syncer.fsync_seconds:.6f}'), ("_count", state.syncer.fsync_count)])
    requests = data.get("requests", {})
    metric("erqpy_http_requests_total", "counter", "HTTP requests answered, by status code.",
           [(f'{{code="{code}"}}', count) for code, count in sorted(requests.items())])
    metric("erqpy_http_reservations", "gauge", "Reservations (HTTP reliable reads) held.",
           [("", snap["http"]["reservations"])])

    per_queue = (
        ("erqpy_queue_items", "gauge", "Items waiting.", "items"),
        ("erqpy_queue_bytes", "gauge", "Payload bytes waiting.", "bytes"),
        ("erqpy_queue_enqueued_total", "counter", "Items added since the server started.", "enqueued"),
        ("erqpy_queue_dequeued_total", "counter", "Items taken since the server started.", "dequeued"),
        ("erqpy_queue_expired_total", "counter", "Items expired.", "expired_items"),
        ("erqpy_queue_rate_in", "gauge", "Items added per second over the last sample interval.", "rate_in"),
        ("erqpy_queue_rate_out", "gauge", "Items taken per second over the last sample interval.", "rate_out"),
        ("erqpy_queue_open_reads", "gauge", "Reliable reads open (memcache and HTTP).", "open_transactions"),
        ("erqpy_queue_reservations", "gauge", "HTTP reservations held.", "reservations"),
        ("erqpy_queue_waiters", "gauge", "Blocked readers.", "waiters"),
        ("erqpy_queue_head_age_seconds", "gauge", "Age of the item at the head.", "head_age_ms"),
        ("erqpy_queue_journal_bytes", "gauge", "Journal file size.", "logsize"),
        ("erqpy_queue_paused", "gauge", "1 when consumers of the queue are paused.", "paused"),
    )
    queues = snap["queues"]
    for name, kind, help_text, field in per_queue:
        samples = []
        for queue_name, info in queues.items():
            value = info[field]
            if field == "head_age_ms":
                value = value / 1000.0
            elif isinstance(value, bool):
                value = int(value)
            samples.append((f'{{queue="{_label(queue_name)}"}}', value))
        metric(name, kind, help_text, samples)
    return "\n".join(lines) + "\n"
