"""Stats rendering: the per-queue and server-wide fields of ``stats``, ``dump_stats``,
``erqctl stats`` and the HTTP plugin, from the live ``ServerState``."""

import time

from erqpy.fairness import give_way, sum_giving_way
from erqpy.storage.levels import DEFAULT_PRIORITY


def queue_stats(queue) -> dict:
    """One queue's fields of ``stats`` and ``dump_stats``, in output order (the list of
    PROTOCOL.md "Stats fields"; the protocol tests check the names and the order)."""
    store = queue.store
    count = queue.count
    return {
        "items": count,
        "bytes": queue.bytes,
        "total_items": queue.stats.total_items,
        "logsize": store.size if store is not None else 0,
        "expired_items": queue.stats.expired_items,
        "mem_items": count - queue.disk_count,
        "mem_bytes": queue.mem_bytes,
        "age": queue.stats.last_age_ms if count else 0,
        "discarded": queue.stats.discarded,
        "dead_lettered": queue.stats.dead_lettered,
        "waiters": len(queue.waiters),
        "open_transactions": len(queue.open),
        "transactions": queue.stats.transactions,
        "canceled_transactions": queue.stats.canceled_transactions,
        "total_flushes": queue.stats.total_flushes,
        "journal_rewrites": store.journal.rewrites if store is not None else 0,
        "journal_rotations": store.rotations if store is not None else 0,
        # erqpy: items stored with a delay, not due yet (not in ``items``).
        "delayed": len(queue.delayed),
        **_level_counts(queue),
    }


def _level_counts(queue) -> dict:
    """``items_pri_<n>`` per non-empty level, once the queue has items of a priority
    other than the default (``storage.levels``); nothing otherwise."""
    levels = getattr(queue, "levels", None)
    if levels is None or not levels.count:
        return {}
    counts = levels.counts()
    default = queue.count - levels.count
    if default:
        counts[DEFAULT_PRIORITY] = default
    return {f"items_pri_{level}": counts[level] for level in sorted(counts)}


def server_stats(state) -> dict:
    now = time.time()
    stats = state.stats
    return {
        "pid": state.pid,
        "uptime": int(now - state.started),
        "time": int(now),
        "version": state.version,
        "curr_connections": len(state.connections),
        "total_connections": stats.total_connections,
        "cmd_get": stats.cmd_get,
        "cmd_set": stats.cmd_set,
        "cmd_peek": stats.cmd_peek,
        "get_hits": stats.get_hits,
        "get_misses": stats.get_misses,
        "bytes_read": stats.bytes_read,
        "bytes_written": stats.bytes_written,
        "curr_items": state.collection.total_items,
        "total_items": sum_giving_way(q.stats.total_items for q in list(state.collection.queues.values())),
        "bytes": state.collection.total_bytes,
        "queue_creates": stats.queue_creates,
        "queue_deletes": stats.queue_deletes,
        "queue_expires": stats.queue_expires,
        # Blocked readers of queues no write has created yet, and how many names.
        "awaited_queues": len(state.collection.awaited),
        "awaited_waiters": sum(len(a.waiters) for a in state.collection.awaited.values()),
    }


def iter_queue_stats(state, names=None):
    """``(name, fields)`` per queue, sorted (or in the order of ``names``).

    A generator, so that a caller may give the hub away between queues (``stats``
    with thousands of queues); a queue deleted meanwhile is skipped.
    """
    queues = state.collection.queues
    selected = sorted(queues) if not names else [n for n in names if n in queues]
    for name in selected:
        queue = queues.get(name)
        if queue is None:
            continue
        fields = queue_stats(queue)
        children = state.collection.children.get(name)
        if children:
            fields["children"] = ",".join(sorted(children))
        yield name, fields


#: Queues whose stats a snapshot gathers between two turns of the other connections.
SNAPSHOT_QUEUES_PER_YIELD = 100


def snapshot(state, names=None) -> dict:
    """``{"server": {...}, "queues": {name: {...}}}`` for erqctl: with 10,000 queues the
    walk would hold the hub for tens of milliseconds, so it gives way as it goes."""
    queues = {}
    for index, (name, fields) in enumerate(iter_queue_stats(state, names), 1):
        queues[name] = fields
        if index % SNAPSHOT_QUEUES_PER_YIELD == 0:
            give_way()
    return {"server": server_stats(state), "queues": queues}
