"""Throughput history for the dashboard's charts: a bounded ring of counter samples.

One sample a second goes into three tiers of fixed length (``TIERS``): every sample for
the last 5 minutes, every 10th for the last hour, every 120th for the last day.  A sample
holds the server-wide counters (items put, taken, expired, put to ``*_errors`` queues;
depth; open reads; connections) and the same per queue for at most ``MAX_QUEUES`` queues,
the busiest at that moment.  Rates are worked out when asked for, from consecutive
samples of a tier, so a tier is just counters and nothing is averaged twice.

The rings are plain deques of tuples in ``api.data["timeline"]``: they outlive a reload of
this plugin's code (``erqctl reload``), which replaces this module but not its data.
Memory is bounded: ``sum(keep)`` samples of at most ``MAX_QUEUES + 1`` small tuples.
"""

import heapq
import logging
import time
from collections import deque

import gevent

log = logging.getLogger("erqpy.plugin.http")

#: (name, seconds per point, points kept): 5 min at 1 s, 1 h at 10 s, 24 h at 2 min.
TIERS = (("5m", 1, 300), ("1h", 10, 360), ("24h", 120, 720))
#: Seconds between samples (the finest tier's step).
STEP = TIERS[0][1]
#: Queues with a history of their own, the busiest (put + taken + depth) at each sample.
MAX_QUEUES = 50
ERRORS_SUFFIX = "_errors"


def _ring(data: dict) -> dict:
    timeline = data.get("timeline")
    shape = [(name, keep) for name, _step, keep in TIERS]
    if timeline is None or timeline.get("shape") != shape:
        old = timeline["tiers"] if timeline else {}
        timeline = data["timeline"] = {
            "shape": shape, "count": 0,
            "tiers": {name: deque(old.get(name, ()), maxlen=keep) for name, keep in shape},
        }
    return timeline


def _queue_counts(queue) -> tuple:
    s = queue.stats
    return (s.puts, s.gets, queue.count, len(queue.open))


def take_sample(data: dict, state, now: float | None = None) -> None:
    """Record one sample (wall-clock time ``now``) in every tier it is due for."""
    now = time.time() if now is None else now
    queues = list(state.collection.queues.items())
    per_queue = {name: _queue_counts(queue) for name, queue in queues}
    totals = [0, 0, 0, 0, 0, 0, len(state.connections)]
    for name, queue in queues:
        puts, gets, depth, open_reads = per_queue[name]
        totals[0] += puts
        totals[1] += gets
        totals[2] += queue.stats.expired_items
        if name.endswith(ERRORS_SUFFIX):
            totals[3] += puts
        totals[4] += depth
        totals[5] += open_reads
    # The same order as a full sort's first MAX_QUEUES, without sorting every queue each second.
    busiest = heapq.nsmallest(MAX_QUEUES, per_queue, key=lambda n: (-(sum(per_queue[n][:3])), n))
    sample = (now, tuple(totals), {name: per_queue[name] for name in busiest})
    timeline = _ring(data)
    count = timeline["count"]
    for name, step, _keep in TIERS:
        if count % step == 0:
            timeline["tiers"][name].append(sample)
    timeline["count"] = count + 1


def _rate(a, b, dt: float) -> float:
    # A queue deleted and created again restarts its counters: never negative.
    return round(max(b - a, 0) / dt, 3) if dt > 0 else 0.0


def series(data: dict, window: str, queue: str | None = None) -> dict:
    """The chart data of one tier: times (Unix seconds) and per point the rates in and
    out per second over the step before it, and the depth; for the whole server or, with
    ``queue``, for that queue (points where it was not among the busiest are null)."""
    steps = {name: step for name, step, _keep in TIERS}
    if window not in steps:
        raise ValueError(f"window must be one of {', '.join(steps)}")
    samples = list(_ring(data)["tiers"][window])
    out = {"window": window, "step": steps[window], "queue": queue,
           "t": [], "in": [], "out": [], "depth": [], "open": []}
    if queue is None:
        out.update(expired=[], failed=[], connections=[])
    for before, after in zip(samples, samples[1:], strict=False):
        dt = after[0] - before[0]
        out["t"].append(round(after[0], 3))
        if queue is None:
            a, b = before[1], after[1]
            out["in"].append(_rate(a[0], b[0], dt))
            out["out"].append(_rate(a[1], b[1], dt))
            out["expired"].append(_rate(a[2], b[2], dt))
            out["failed"].append(_rate(a[3], b[3], dt))
            out["depth"].append(b[4])
            out["open"].append(b[5])
            out["connections"].append(b[6])
            continue
        a, b = before[2].get(queue), after[2].get(queue)
        # A queue that just joined (or left) the busiest has no rate over this step.
        out["in"].append(_rate(a[0], b[0], dt) if a and b else None)
        out["out"].append(_rate(a[1], b[1], dt) if a and b else None)
        out["depth"].append(b[2] if b else None)
        out["open"].append(b[3] if b else None)
    return out


def record(api) -> None:
    """The service greenlet: one sample every ``STEP`` seconds while the plugin runs."""
    while True:
        try:
            take_sample(api.data, api.state)
        except Exception:
            log.exception("history sample failed")
        gevent.sleep(STEP)
