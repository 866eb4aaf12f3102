"""Reliable reads over HTTP: an open read held by a reservation id instead of a connection.

A reservation is an item the queue holds open (``ops.take(..., open_read=True)``: an OPEN
record in the journal).  Confirming removes it for good; aborting, or letting the lease
run out, gives it back to the head of the queue.  If the server stops meanwhile, journal
replay gives it back at the next start: delivery is at least once.

The table lives in ``api.data["reservations"]`` (plain dicts, no classes of this module)
so it outlives a reload of the plugin's code.
"""

import logging
import secrets
import time

from erqpy.server import ops

log = logging.getLogger("erqpy.plugin.http")


def table(data: dict) -> dict:
    return data.setdefault("reservations", {})


def add(data: dict, queue, item, lease_s: float) -> str:
    rid = secrets.token_urlsafe(12)
    table(data)[rid] = {
        "queue": queue,
        "name": queue.name,
        "item_id": item.id,
        "deadline": time.monotonic() + lease_s,
    }
    return rid


def _live(entry) -> bool:
    return ops.still_open(entry["queue"], entry["item_id"])


def settle(data: dict, name: str, rid: str, confirm: bool) -> bool:
    """Confirm or abort reservation ``rid`` of queue ``name``; False when it is not held."""
    reservations = table(data)
    entry = reservations.get(rid)
    if entry is None or entry["name"] != name:
        return False
    if not _live(entry):
        del reservations[rid]
        return False
    queue = entry["queue"]
    # The journal write comes first; if it fails the reservation is still held.
    done = ops.confirm(queue, entry["item_id"]) if confirm else ops.abort(queue, entry["item_id"])
    del reservations[rid]
    return done


def expire(data: dict, now: float | None = None) -> int:
    """Give back every reservation whose lease ran out; return how many."""
    now = time.monotonic() if now is None else now
    reservations = table(data)
    due = [rid for rid, entry in reservations.items() if entry["deadline"] <= now]
    # Newest first: each goes back to the head, so the oldest ends up in front.
    due.sort(key=lambda rid: reservations[rid]["item_id"], reverse=True)
    count = 0
    for rid in due:
        entry = reservations.pop(rid, None)
        if entry is None or not _live(entry):
            continue
        try:
            if ops.abort(entry["queue"], entry["item_id"]):
                count += 1
        except Exception:
            # Still open in memory and in the journal: replay gives it back at restart.
            log.exception("could not give back expired reservation on %s", entry["name"])
    if count:
        log.info("gave back %d reservation(s) whose lease ran out", count)
    return count


def count_by_queue(data: dict) -> dict:
    counts = {}
    for entry in table(data).values():
        if _live(entry):
            counts[entry["name"]] = counts.get(entry["name"], 0) + 1
    return counts


def forget_queue(data: dict, name: str) -> None:
    reservations = table(data)
    for rid in [r for r, e in reservations.items() if e["name"] == name]:
        del reservations[rid]
