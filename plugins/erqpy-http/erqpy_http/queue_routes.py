"""Queue routes: ``/q`` (one job), ``/qb`` (batches), ``/j`` (info), ``/control`` (pause),
``/queues`` (list, delete).  presque's routes where they make sense (ecosystem.md §1.1).

A job is stored as the exact bytes posted, so memcache clients read the same JSON text.
Items that memcache clients stored and that are not JSON come back as
``application/octet-stream`` from ``GET /q``, and as ``data_base64`` in envelopes.
"""

import base64
import json

from erqpy.server import ops
from erqpy.storage.names import check_name
from erqpy.errors import ClientError, JournalWriteError, LimitReached, Unsupported
from erqpy.storage.pqueue import now_ms

from erqpy_http import reservations, stats
from erqpy_http.job_options import expiry as _expiry, schedule as _schedule
from erqpy_http.waiting import wait_for_item
from erqpy_http.web import HttpError, Response, json_response

OCTETS = "application/octet-stream"


def _no_constants(name):
    raise ValueError(f"{name} is not JSON")


def parse_job(raw: bytes):
    """``raw`` as JSON, or ValueError (NaN and Infinity are not JSON)."""
    return json.loads(raw, parse_constant=_no_constants)


def envelope(item) -> dict:
    try:
        return {"job": parse_job(item.data)}
    except (ValueError, UnicodeDecodeError):
        return {"data_base64": base64.b64encode(item.data).decode("ascii")}


# -- shared checks --------------------------------------------------------------------------


def queue_name(segment: str) -> bytes:
    raw = segment.encode("latin-1", "replace")
    try:
        check_name(raw)
    except ClientError:
        raise HttpError(400, "bad queue name") from None
    return raw


def existing_queue(ctx, segment: str):
    queue = ctx.state.collection.lookup(queue_name(segment))
    if queue is None:
        raise HttpError(404, "no such queue")
    return queue


def create_queue(ctx, segment: str, for_write: bool = True):
    """The queue, created if missing: refused unless writes are allowed, but for an
    administrative action (pause), which the status does not restrict."""
    raw = queue_name(segment)
    try:
        if for_write:
            return ops.queue_for_write(ctx.state, raw)
        return ctx.state.collection.get_or_create(raw)
    except ClientError:
        raise HttpError(400, "bad queue name") from None
    except LimitReached as exc:  # max_queues, max_fanout_children
        raise HttpError(507, str(exc)) from None


def readable_queue(ctx, segment: str):
    """The queue a GET takes from, or None: as on the data port, a read creates no
    queue (only a fanout child, which is how a reader subscribes)."""
    try:
        return ctx.state.collection.get_for_read(queue_name(segment))
    except LimitReached as exc:
        raise HttpError(507, str(exc)) from None


class Durable:
    """Acknowledge only what is on disk: after journal writes under the ``always`` fsync
    policy, wait for the fsync as the data port does before it replies."""

    def __init__(self, ctx):
        self.state = ctx.state
        self.mark = ops.write_mark(ctx.state)

    def wait(self) -> None:
        try:
            ops.wait_durable(self.state, self.mark)
        except JournalWriteError:
            raise HttpError(500, "fsync failed; the change may not be on disk") from None


def _journal_guard(exc: JournalWriteError):
    return HttpError(500, f"not done: {exc}")


# -- enqueue --------------------------------------------------------------------------------


def _put(ctx, queue, data: bytes, expires: int, schedule=None) -> None:
    if len(data) > queue.config.max_item_size:
        raise HttpError(413, f"job is over max_item_size ({queue.config.max_item_size} bytes)")
    try:
        stored = ops.put(ctx.state, queue, data, 0, expires, now_ms(), **(schedule or {}))
    except JournalWriteError as exc:
        raise _journal_guard(exc) from None
    except ClientError as exc:  # a delayed time too far ahead
        raise HttpError(400, exc.reason) from None
    except Unsupported as exc:  # engine mode
        raise HttpError(501, exc.reason) from None
    if not stored:
        raise HttpError(507, "queue is full")


def post_job(ctx, request, name):
    """POST /q/NAME (and PUT, presque's re-insert): enqueue one JSON job."""
    queue_name(name)
    if request.content_type != "application/json":
        raise HttpError(415, "content-type must be set to application/json")
    expires = _expiry(request)
    schedule = _schedule(request)
    raw = request.body()
    if not raw.strip():
        raise HttpError(400, "job is missing")
    try:
        parse_job(raw)
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "job is not valid JSON") from None
    queue = create_queue(ctx, name)  # only once the request is known to be good
    durable = Durable(ctx)
    _put(ctx, queue, raw, expires, schedule)
    durable.wait()
    return json_response({"queue": queue.name, "queued": 1}, 201)


def post_batch(ctx, request, name):
    """POST /qb/NAME with {"jobs": [...]}: enqueue them in order."""
    queue_name(name)
    body = request.json_body("jobs are missing")
    jobs = body.get("jobs") if isinstance(body, dict) else None
    if not isinstance(jobs, list) or not jobs:
        raise HttpError(400, "jobs must be a non-empty array")
    if len(jobs) > ctx.settings.max_batch:
        raise HttpError(400, f"at most {ctx.settings.max_batch} jobs per batch")
    expires = _expiry(request)
    schedule = _schedule(request)
    payloads = [json.dumps(job, separators=(",", ":"), ensure_ascii=False).encode() for job in jobs]
    queue = create_queue(ctx, name)
    limit = queue.config.max_item_size
    if any(len(p) > limit for p in payloads):
        raise HttpError(413, f"a job is over max_item_size ({limit} bytes)")
    durable = Durable(ctx)
    queued = 0
    try:
        for payload in payloads:
            _put(ctx, queue, payload, expires, schedule)
            queued += 1
    except HttpError as exc:
        durable.wait()
        exc.extra["queued"] = queued
        raise
    durable.wait()
    return json_response({"queue": queue.name, "queued": queued}, 201)


# -- dequeue --------------------------------------------------------------------------------


def _take_one(ctx, request, queue, reserve: bool, wait_ms: int, raw: bytes):
    """``(queue, item)``: the queue is None when it does not exist (even after a wait)."""
    if reserve and len(reservations.table(ctx.data)) >= ctx.settings.max_reservations:
        raise HttpError(429, f"too many reservations held (max_reservations is {ctx.settings.max_reservations})")
    sock = request.environ.get("erqpy.socket")

    def wait(line, timeout, take):
        return wait_for_item(ctx.state, line, timeout, take, sock)

    try:
        queue, item = ops.take_or_wait(ctx.state, queue, raw, wait_ms / 1000.0, wait, open_read=reserve)
    except JournalWriteError as exc:
        raise _journal_guard(exc) from None
    if item is None and queue is not None and queue.paused and not queue.deleted:
        raise HttpError(409, "queue is paused")
    return queue, item


def _lease(ctx, request) -> float:
    default_ms = int(ctx.settings.reserve_timeout * 1000)
    return request.int_arg("lease", default_ms, minimum=1, maximum=24 * 3600 * 1000) / 1000.0


def refuse_get_consume(ctx, request, name, batch: bool) -> None:
    """GET /q and GET /qb take jobs only when ``allow_get_consume`` or a token is set.

    Otherwise any web page could make a visitor's browser eat jobs with a plain link or
    image (a GET carries no Origin); POST .../take cannot be sent that way.
    """
    if ctx.settings.get_consumes:
        return
    prefix, allow = ("qb", "POST") if batch else ("q", "DELETE, POST, PUT")
    raise HttpError(405, f"GET /{prefix}/NAME does not take jobs here: use POST /{prefix}/{name}/take "
                         "(or set http.allow_get_consume = true)", [("Allow", allow)])


def get_job(ctx, request, name):
    """GET /q/NAME: presque's dequeue, the same as POST /q/NAME/take when allowed."""
    return take_job(ctx, request, name)


def take_job(ctx, request, name):
    """POST /q/NAME/take: dequeue one job; ?wait=ms blocks; ?reserve=1 is a reliable read."""
    reserve = request.flag("reserve")
    wait_ms = request.int_arg("wait", 0, minimum=0, maximum=ctx.settings.max_wait_ms)
    lease = _lease(ctx, request) if reserve else 0.0
    queue = readable_queue(ctx, name)
    ops.require_reads(ctx.state)  # before the reservation limit, as ever
    durable = Durable(ctx)
    queue, item = _take_one(ctx, request, queue, reserve, wait_ms, queue_name(name))
    if item is None:
        raise HttpError(404, "no job")
    if reserve:
        rid = reservations.add(ctx.data, queue, item, lease)
        durable.wait()
        body = {"id": rid, "queue": queue.name, "lease_ms": int(lease * 1000), "item_id": item.id}
        body.update(envelope(item))
        return json_response(body, 200, [("X-Erqpy-Reservation", rid)])
    durable.wait()
    try:
        parse_job(item.data)
        kind = "application/json"
    except (ValueError, UnicodeDecodeError):
        kind = OCTETS
    return Response(200, item.data, kind)


def get_batch(ctx, request, name):
    """GET /qb/NAME: presque's batch dequeue, the same as POST /qb/NAME/take when allowed."""
    return take_batch(ctx, request, name)


def take_batch(ctx, request, name):
    """POST /qb/NAME/take?batch_size=N: up to N jobs, as envelopes."""
    size = request.int_arg("batch_size", 10, minimum=1, maximum=ctx.settings.max_batch)
    reserve = request.flag("reserve")
    wait_ms = request.int_arg("wait", 0, minimum=0, maximum=ctx.settings.max_wait_ms)
    lease = _lease(ctx, request) if reserve else 0.0
    queue = readable_queue(ctx, name)
    ops.require_reads(ctx.state)  # before the reservation limit, as ever
    durable = Durable(ctx)
    out = []
    queue, item = _take_one(ctx, request, queue, reserve, wait_ms, queue_name(name))
    while item is not None:
        entry = envelope(item)
        if reserve:
            entry["id"] = reservations.add(ctx.data, queue, item, lease)
            entry["item_id"] = item.id
        out.append(entry)
        if len(out) >= size:
            break
        if reserve and len(reservations.table(ctx.data)) >= ctx.settings.max_reservations:
            break
        try:
            item = ops.take(ctx.state, queue, reserve)
        except JournalWriteError:
            break  # what was taken so far is answered; the failure is logged by the journal
    if not out:
        raise HttpError(404, "no job")
    durable.wait()
    return json_response(out)


# -- reservations ---------------------------------------------------------------------------


def _settle_one(ctx, name, rid, confirm: bool) -> bool:
    try:
        return reservations.settle(ctx.data, name, rid, confirm)
    except JournalWriteError as exc:
        raise _journal_guard(exc) from None


def settle_job(ctx, request, name, action, reservation):
    """POST /q/NAME/confirm/ID or /q/NAME/abort/ID."""
    queue = existing_queue(ctx, name)
    durable = Durable(ctx)
    if not _settle_one(ctx, queue.name, reservation, action == "confirm"):
        raise HttpError(404, "no such reservation (never made, already settled, or its lease ran out)")
    durable.wait()
    return json_response({"queue": queue.name, "id": reservation, ("confirmed" if action == "confirm" else "aborted"): True})


def settle_batch(ctx, request, name, action):
    """POST /qb/NAME/confirm or /qb/NAME/abort with {"ids": [...]}."""
    queue = existing_queue(ctx, name)
    body = request.json_body("ids are missing")
    ids = body.get("ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise HttpError(400, "ids must be a non-empty array of reservation ids")
    durable = Durable(ctx)
    done, unknown = [], []
    for rid in ids:
        (done if _settle_one(ctx, queue.name, rid, action == "confirm") else unknown).append(rid)
    durable.wait()
    key = "confirmed" if action == "confirm" else "aborted"
    return json_response({"queue": queue.name, key: done, "unknown": unknown})


# -- management -----------------------------------------------------------------------------


def flush_queue(ctx, request, name):
    """DELETE /q/NAME: remove every waiting item (open reads stay)."""
    queue = existing_queue(ctx, name)
    durable = Durable(ctx)
    try:
        count = ops.flush(ctx.state, queue)
    except JournalWriteError as exc:
        raise _journal_guard(exc) from None
    durable.wait()
    return json_response({"queue": queue.name, "flushed": count})


def delete_queue(ctx, request, name):
    """DELETE /queues/NAME: the queue, its journal and its stats go."""
    queue = existing_queue(ctx, name)
    ops.delete(ctx.state, queue)
    reservations.forget_queue(ctx.data, queue.name)
    ctx.data.get("history", {}).pop(queue.name, None)
    return json_response({"deleted": queue.name})


def queue_list(ctx, request):
    """GET /queues: names and depths."""
    return json_response({"queues": ops.depths(ctx.state)})


def job_info(ctx, request, name):
    """GET /j/NAME (and /queues/NAME): presque's queue info plus erqpy's figures."""
    queue = existing_queue(ctx, name)
    count = request.int_arg("peek", 0, minimum=0, maximum=100)
    held = reservations.count_by_queue(ctx.data)
    info = stats.queue_info(ctx.state, ctx.data, queue, held, with_history=request.flag("history"))
    body = {
        "queue_name": queue.name,
        "job_count": info["items"],
        "job_processed": queue.stats.gets,
        "job_failed": queue.stats.canceled_transactions,
        "stats": info,
    }
    if count:
        body["head"] = stats.peek(queue, count)
    return json_response(body)


def control_get(ctx, request, name):
    """GET /control/NAME: 1 = consumers may take jobs, 0 = paused."""
    queue = existing_queue(ctx, name)
    return json_response({"queue": queue.name, "status": 0 if queue.paused else 1, "paused": queue.paused})


_STATUS_WORDS = {"start": False, "resume": False, "stop": True, "pause": True}


def control_post(ctx, request, name):
    """POST /control/NAME with {"status": "start"|"stop"} (presque) or {"paused": bool}."""
    body = request.json_body()
    if not isinstance(body, dict):
        raise HttpError(400, "invalid status")
    if "paused" in body and isinstance(body["paused"], bool):
        paused = body["paused"]
    elif isinstance(body.get("status"), str) and body["status"].lower() in _STATUS_WORDS:
        paused = _STATUS_WORDS[body["status"].lower()]
    else:
        raise HttpError(400, "invalid status: send {\"status\": \"start\"|\"stop\"} or {\"paused\": true|false}")
    queue = create_queue(ctx, name, for_write=False)
    try:
        ops.set_paused(ctx.state, queue, paused)
    except OSError as exc:
        raise HttpError(500, f"could not persist the paused state: {exc.strerror or exc}") from None
    ctx.log.info("queue %s %s over HTTP", queue.name, "paused" if paused else "resumed")
    return json_response({"queue": queue.name, "response": "updated", "status": 0 if paused else 1,
                          "paused": paused})
