"""The consumers view: who holds reliable reads and who is blocked waiting, per queue.

Read-only, from the server's own state: each memcache connection's session (its open
reads, oldest first), the HTTP reservations, the WebSocket consumers' held jobs, and each
queue's line of blocked readers.
"""

import time

from erqpy.server import ops
from erqpy.storage.items import now_ms

from erqpy_http import reservations
from erqpy_http.ws_consumer import live_consumers

#: Connections listed at most (the busiest by open reads); the rest are only counted.
MAX_LISTED = 500


def _address(address) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host = address[0]
        return f"[{host}]:{address[1]}" if ":" in str(host) else f"{host}:{address[1]}"
    return str(address or "-")


def _peer(sock) -> str:
    if sock is None:
        return "-"
    try:
        return _address(sock.getpeername())
    except OSError:
        return "-"


def _held(queue, item_ids, now: int) -> dict:
    opened = [queue.open[i].opened_ms for i in item_ids if i in queue.open]
    return {"queue": queue.name, "count": len(item_ids), "held_ms": max(now - min(opened), 0) if opened else 0}


def _connection_reads(conn, now: int) -> list:
    session = conn.session
    reads = []
    for name, entries in list(session.open_reads.items()):
        if not session.open_count(name):  # drops reads given back or on a deleted queue
            continue
        queue = entries[0][0]
        reads.append(_held(queue, [item_id for _q, item_id, _t in entries], now))
    return reads


def _http_reads(data: dict, now: int) -> list:
    by_queue = {}
    for entry in reservations.table(data).values():
        if ops.still_open(entry["queue"], entry["item_id"]):
            by_queue.setdefault(entry["name"], (entry["queue"], []))[1].append(entry["item_id"])
    return [_held(queue, ids, now) for queue, ids in by_queue.values()]


def view(state, data: dict) -> dict:
    now = now_ms()
    clock = time.monotonic()
    holders = []
    for conn in list(state.connections):
        reads = _connection_reads(conn, now)
        if reads:
            holders.append({"kind": "memcache", "address": _address(conn.address), "session": conn.session.id,
                            "open_reads": sum(r["count"] for r in reads),
                            "held_ms": max(r["held_ms"] for r in reads), "queues": reads})
    http_reads = _http_reads(data, now)
    if http_reads:
        holders.append({"kind": "http", "address": "HTTP reservations", "session": None,
                        "open_reads": sum(r["count"] for r in http_reads),
                        "held_ms": max(r["held_ms"] for r in http_reads), "queues": http_reads})
    for consumer in list(live_consumers(data)):
        by_queue = {}
        for queue, item_id in consumer.held_reads():
            if ops.still_open(queue, item_id):
                by_queue.setdefault(queue.name, (queue, []))[1].append(item_id)
        reads = [_held(queue, ids, now) for queue, ids in by_queue.values()]
        if reads:
            holders.append({"kind": "websocket", "address": consumer.ws.peer, "session": None,
                            "open_reads": sum(r["count"] for r in reads),
                            "held_ms": max(r["held_ms"] for r in reads), "queues": reads})
    holders.sort(key=lambda h: (-h["open_reads"], -h["held_ms"]))
    lines = [(name, queue.waiters, True) for name, queue in state.collection.queues.items()]
    # Readers of a queue not created yet wait in a line of their own (storage.awaited).
    lines += [(key.decode("utf-8", "replace"), awaited.waiters, False)
              for key, awaited in getattr(state.collection, "awaited", {}).items() if awaited.queue is None]
    blocked = []
    for name, waiters, exists in sorted(lines, key=lambda line: line[0]):
        line = list(waiters)
        if line:
            blocked.append({"queue": name, "exists": exists, "count": len(line), "readers": [
                {"address": _peer(w.sock), "waiting_ms": int((clock - w.since) * 1000)} for w in line[:MAX_LISTED]
            ]})
    return {
        "connections": len(state.connections),
        "holders": holders[:MAX_LISTED],
        "holders_total": len(holders),
        "blocked": blocked,
    }
