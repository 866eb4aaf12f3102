"""Routes behind the dashboard's pages: the pages themselves, the throughput history, the
consumers view, browsing a queue's items, the per-job actions on the head of a queue
(delete, move) and the retry of error-queue records back to their origin queue.

Per-job actions take the job at the head only (``ops.remove_head_if``): the storage can
remove a queue's head, not an item in the middle, so the dashboard offers them on the
first item and a later item gets its turn once those before it are taken.
"""

import base64
import dataclasses
import json

from erqpy.errors import JournalWriteError
from erqpy.server import ops
from erqpy.storage.items import DEFAULT_PRIORITY, now_ms

from erqpy_http import consumers, dashboard, history
from erqpy_http.queue_routes import Durable, create_queue, existing_queue, parse_job
from erqpy_http.web import HttpError, Response, json_response

#: Items a page of ``GET /queues/NAME/items`` may reach: offset + limit (items in memory).
MAX_BROWSE = 1000
#: Bytes of an item shown; a longer one comes back as a text preview, marked truncated.
PREVIEW_BYTES = 64 * 1024
#: Records ``POST /queues/NAME/retry`` with ``all`` moves per call; the reply says how many stay.
MAX_RETRY = 1000
NO_CACHE = [("Cache-Control", "no-cache")]


def _page(ctx, view: str, queue: str | None = None):
    page = dashboard.render(ctx.state, ctx.data, ctx.settings, view, queue)
    return Response(200, page.encode(), "text/html; charset=utf-8", NO_CACHE)


def overview_page(ctx, request):
    return _page(ctx, "overview")


def queue_page(ctx, request, name):
    return _page(ctx, "queue", name)


def errors_page(ctx, request):
    return _page(ctx, "errors")


def consumers_page(ctx, request):
    return _page(ctx, "consumers")


def history_series(ctx, request):
    """GET /history?window=5m|1h|24h[&queue=NAME]: the charts' data."""
    try:
        return json_response(history.series(ctx.data, request.arg("window", "5m"), request.arg("queue")))
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None


def consumer_list(ctx, request):
    """GET /consumers: open reads per connection and blocked readers per queue."""
    return json_response(consumers.view(ctx.state, ctx.data))


def _describe(item, now: int) -> dict:
    data = item.data
    entry = {
        "item_id": item.id, "bytes": len(data), "flags": item.flags,
        "added_at": item.added_ms / 1000.0, "age_ms": max(now - item.added_ms, 0),
        "expires_at": item.expires_ms / 1000.0 if item.expires_ms else None,
        "deliveries": item.deliveries, "priority": getattr(item, "priority", DEFAULT_PRIORITY),
    }
    if len(data) > PREVIEW_BYTES:
        entry.update(text=data[:PREVIEW_BYTES].decode("utf-8", "replace"), truncated=True)
        return entry
    try:
        entry["job"] = parse_job(data)
    except (ValueError, UnicodeDecodeError):
        try:
            entry["text"] = data.decode("utf-8")
        except UnicodeDecodeError:
            entry["data_base64"] = base64.b64encode(data).decode("ascii")
    return entry


def queue_items(ctx, request, name):
    """GET /queues/NAME/items?offset=&limit=: waiting items from the head, not removed."""
    queue = existing_queue(ctx, name)
    offset = request.int_arg("offset", 0, minimum=0)
    limit = request.int_arg("limit", 20, minimum=1, maximum=100)
    if offset + limit > MAX_BROWSE:
        raise HttpError(400, f"offset + limit must be at most {MAX_BROWSE}")
    now = now_ms()
    items = ops.head_items(queue, offset + limit)[offset:]
    return json_response({
        "queue": queue.name, "total": ops.depth(queue), "offset": offset, "limit": limit,
        "items": [_describe(item, now) for item in items],
        "settings": dataclasses.asdict(queue.config),
    })


def _item_id(raw: str) -> int:
    if not raw.isdigit():
        raise HttpError(400, "item id must be a number")
    return int(raw)


def _remove_head(ctx, queue, item_id: int):
    try:
        item = ops.remove_head_if(ctx.state, queue, item_id)
    except JournalWriteError as exc:
        raise HttpError(500, f"not done: {exc}") from None
    if item is None:
        raise HttpError(409, f"item {item_id} is not at the head of {queue.name} (taken, or not first): reload the list")
    return item


def _put_copy(ctx, target, item) -> None:
    try:
        stored = ops.put(ctx.state, target, item.data, item.flags, item.expires_ms, now_ms(),
                         priority=getattr(item, "priority", DEFAULT_PRIORITY))  # keeps its level
    except JournalWriteError as exc:
        raise HttpError(500, f"not done: {exc}") from None
    if not stored:
        raise HttpError(507, f"queue {target.name} is full")


def delete_item(ctx, request, name, item_id):
    """DELETE /queues/NAME/items/ID: remove that job, which must be at the head."""
    queue = existing_queue(ctx, name)
    durable = Durable(ctx)
    item = _remove_head(ctx, queue, _item_id(item_id))
    durable.wait()
    return json_response({"queue": queue.name, "deleted": item.id})


def _target_of(request) -> str:
    body = request.json_body()
    target = body.get("to") if isinstance(body, dict) else None
    if not isinstance(target, str) or not target:
        raise HttpError(400, 'send {"to": "<queue>"}')
    return target


def move_item(ctx, request, name, item_id):
    """POST /queues/NAME/items/ID/move {"to": Q}: the head job to the tail of Q (Q may
    be NAME itself: the job goes to the back of the line)."""
    queue = existing_queue(ctx, name)
    wanted = _item_id(item_id)
    target = create_queue(ctx, _target_of(request))
    head = ops.head_items(queue, 1)
    if not head or head[0].id != wanted:
        raise HttpError(409, f"item {wanted} is not at the head of {queue.name} (taken, or not first): reload the list")
    durable = Durable(ctx)
    # No yield between the copy and the removal: the head is still the item copied.
    _put_copy(ctx, target, head[0])
    _remove_head(ctx, queue, wanted)
    durable.wait()
    return json_response({"queue": queue.name, "moved": wanted, "to": target.name})


def _origin(queue, item) -> str:
    """The queue an error record came from (``meta.queue``, erqpy.client.envelope)."""
    try:
        record = json.loads(item.data)
    except (ValueError, UnicodeDecodeError):
        record = None
    meta = record.get("meta") if isinstance(record, dict) else None
    origin = meta.get("queue") if isinstance(meta, dict) else None
    if not isinstance(origin, str) or not origin:
        if queue.name.endswith(history.ERRORS_SUFFIX):
            return queue.name[: -len(history.ERRORS_SUFFIX)]
        raise HttpError(409, f"item {item.id} names no origin queue (meta.queue): not an error record")
    return origin


def retry(ctx, request, name):
    """POST /queues/NAME/retry {"item_id": ID} or {"all": true}: error records back to
    the queue they failed on, as they are (the consumer put them back at attempt 1)."""
    queue = existing_queue(ctx, name)
    body = request.json_body()
    if not isinstance(body, dict) or not (body.get("all") is True or isinstance(body.get("item_id"), int)):
        raise HttpError(400, 'send {"item_id": <id>} or {"all": true}')
    durable = Durable(ctx)
    retried = []
    try:
        while len(retried) < (MAX_RETRY if body.get("all") is True else 1):
            head = ops.head_items(queue, 1)
            if not head:
                break
            item = head[0]
            if body.get("all") is not True and item.id != body["item_id"]:
                raise HttpError(409, f"item {body['item_id']} is not at the head of {queue.name}: reload the list")
            target = create_queue(ctx, _origin(queue, item))
            _put_copy(ctx, target, item)
            _remove_head(ctx, queue, item.id)
            retried.append({"item_id": item.id, "to": target.name})
    except HttpError as exc:
        exc.extra["retried"] = retried  # those before the failure are done
        raise
    finally:
        durable.wait()
    return json_response({"queue": queue.name, "retried": retried, "remaining": ops.depth(queue)})
