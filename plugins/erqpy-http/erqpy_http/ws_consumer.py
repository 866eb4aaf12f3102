"""``/ws/q/NAME``: a consumer over a WebSocket (the message protocol is docs/WEBSOCKET.md).

The client subscribes with a prefetch count; the server then keeps up to that many jobs
handed out, each a reliable read (``ops.take_or_wait(..., open_read=True)``, an OPEN
record in the journal), until the client acks it (confirmed for good) or nacks it (given
back to the head, as ``/abort``).  The reads belong to the socket as they belong to a
memcache connection: when it ends, for any reason, every unacknowledged job goes back to
the head of its queue, oldest in front (``session.give_back``).  The status rules and
pause are the operations layer's; the waiting is the core's one wait loop.

Nothing here outlives the socket, so nothing is kept in ``api.data``.
"""

import json
import logging

import gevent
from gevent.event import Event

from erqpy.errors import JournalWriteError, LimitReached, Unavailable
from erqpy.server import ops
from erqpy.server.session import give_back
from erqpy.server.waiters import wait_for_item

from erqpy_http.queue_routes import envelope, queue_name

log = logging.getLogger("erqpy.plugin.http.ws")

#: Seconds one wait for a job lasts before the deliverer looks again at its socket (a
#: socket that ended stops waiting within this time) and at the queue (deleted?).
DELIVERY_WAIT = 1.0
#: Seconds between attempts while the server status refuses reads or the journal fails.
RETRY_DELAY = 1.0


class Consumer:
    """The jobs one socket holds, and the greenlet that hands them out."""

    def __init__(self, ctx, ws, raw: bytes):
        self.ctx = ctx
        self.state = ctx.state
        self.ws = ws
        self.raw = raw
        self.name = raw.decode("utf-8", "replace")
        self.queue = None
        self.prefetch = 0  # 0: not subscribed yet
        self.held: dict = {}  # delivery id -> (queue, item id, open token), oldest first
        self.next_id = 1
        self.room = Event()  # set when fewer than prefetch jobs are held
        self.deliverer = None
        self.refusal = ""  # the last status refusal reported, to report each once

    # -- the client's messages ------------------------------------------------------------

    def run(self) -> None:
        live = live_consumers(self.ctx.data)
        live.add(self)
        try:
            for text in self.ws.messages():
                self.handle(text)
        finally:
            live.discard(self)
            self.finish()

    def held_reads(self) -> list:
        """``(queue, item id)`` of the jobs this socket holds still (the consumers view)."""
        return [(queue, item_id) for queue, item_id, _token in list(self.held.values())]

    def handle(self, text: str) -> None:
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
            self.error("message is not JSON")
            return
        op = message.get("op") if isinstance(message, dict) else None
        if op == "subscribe":
            self.subscribe(message)
        elif op in ("ack", "nack"):
            self.settle(message, op == "ack")
        else:
            self.error('a message is {"op": "subscribe" | "ack" | "nack", ...}')

    def error(self, text: str, **extra) -> None:
        self.ws.send_json({"type": "error", "error": text, **extra})

    def subscribe(self, message: dict) -> None:
        limit = self.ctx.settings.ws_max_prefetch
        prefetch = message.get("prefetch", 1)
        if not isinstance(prefetch, int) or isinstance(prefetch, bool) or not 1 <= prefetch <= limit:
            self.error(f"prefetch must be an integer from 1 to {limit} (http.ws_max_prefetch)")
            return
        try:
            self.queue = self.state.collection.get_for_read(self.raw)
        except LimitReached as exc:
            self.error(str(exc))
            return
        self.prefetch = prefetch  # a second subscribe changes the prefetch count
        self._update_room()
        self.ws.send_json({"type": "subscribed", "queue": self.name, "prefetch": prefetch})
        if self.deliverer is None:
            self.deliverer = gevent.spawn(self._deliver_loop)

    def settle(self, message: dict, confirm: bool) -> None:
        op = "ack" if confirm else "nack"
        delivery = message.get("id")
        if not isinstance(delivery, int) or isinstance(delivery, bool):  # True == 1: not an id
            self.error("id must be the integer id of a job message", op=op)
            return
        entry = self.held.get(delivery)
        if entry is None or not _still_ours(entry):
            self.held.pop(delivery, None)  # given back meanwhile, or its queue deleted
            self._update_room()
            self.error(f"no job with id {delivery} is held by this socket", op=op, id=delivery)
            return
        queue, item_id, _token = entry
        mark = ops.write_mark(self.state)
        try:
            done = ops.confirm(queue, item_id) if confirm else ops.abort(queue, item_id)
            ops.wait_durable(self.state, mark)
        except JournalWriteError as exc:  # still held: the client may try again
            self.error(f"{op} not done: {exc}", op=op, id=delivery)
            return
        del self.held[delivery]
        self._update_room()
        if done:
            self.ws.send_json({"type": op + "ed", "id": delivery})
        else:
            self.error(f"job {delivery} was no longer held", op=op, id=delivery)

    def _update_room(self) -> None:
        if len(self.held) < self.prefetch:
            self.room.set()
        else:
            self.room.clear()

    # -- handing out ------------------------------------------------------------------------

    def _wait(self, line, timeout, take):
        return wait_for_item(line, timeout, take, lambda: self.state.stopping or not self._open())

    def _open(self) -> bool:
        return not (self.ws.closed or self.ws.closing)

    def _deliver_loop(self) -> None:
        while self._open():
            if not self.room.wait(DELIVERY_WAIT):
                self._drop_lost()
                continue
            try:
                self._deliver_one()
            except Unavailable as exc:  # the status refuses reads (QUIESCENT)
                if exc.reason != self.refusal:
                    self.refusal = exc.reason
                    self.error(f"{exc.reason}: no jobs until it is not", retrying=True)
                gevent.sleep(RETRY_DELAY)
            except JournalWriteError as exc:
                self.error(f"could not take a job: {exc}", retrying=True)
                gevent.sleep(RETRY_DELAY)
            except Exception:
                log.exception("WebSocket delivery on %s failed", self.name)
                gevent.sleep(RETRY_DELAY)

    def _drop_lost(self) -> None:
        """Free the prefetch slots of jobs this socket no longer holds (given back by the
        queue's ``open_read_timeout``, or the queue deleted), and say so."""
        lost = [delivery for delivery, entry in self.held.items() if not _still_ours(entry)]
        for delivery in lost:
            del self.held[delivery]
            self.error(f"job {delivery} is no longer held by this socket (open_read_timeout, "
                       "or its queue was deleted)", id=delivery)
        if lost:
            self._update_room()

    def _deliver_one(self) -> None:
        if self.queue is not None and self.queue.deleted:
            self.queue = None
        if self.queue is None:
            self.queue = self.state.collection.get_for_read(self.raw)
        mark = ops.write_mark(self.state)
        queue, item = ops.take_or_wait(self.state, self.queue, self.raw, DELIVERY_WAIT, self._wait,
                                       open_read=True)
        self.queue = queue
        self.refusal = ""
        if item is None:  # a second with nothing to hand out: time to look at what is held
            self._drop_lost()
            return
        if not self._open():
            give_back([(queue, item.id)])  # the socket ended while the job was being taken
            return
        delivery = self.next_id
        self.next_id += 1
        self.held[delivery] = (queue, item.id, getattr(item, "open_token", None))
        self._update_room()
        try:
            ops.wait_durable(self.state, mark)
        except JournalWriteError:
            # Not sent, so the client cannot settle it: back to the queue, not held.
            del self.held[delivery]
            self._update_room()
            give_back([(queue, item.id)])
            raise
        self.ws.send_json({"type": "job", "id": delivery, "queue": queue.name, "item_id": item.id,
                           **envelope(item)})

    def finish(self) -> None:
        """The socket ended: every job it holds goes back, oldest at the head."""
        held = [entry for entry in self.held.values() if _still_ours(entry)]
        self.held.clear()
        count = give_back([(queue, item_id) for queue, item_id, _token in held])
        if count:
            log.info("WebSocket consumer of %s gone: %d job(s) given back", self.name, count)


def live_consumers(data: dict) -> set:
    """The WebSocket consumers connected now, in the plugin's data (it outlives reloads)."""
    return data.setdefault("ws_consumers", set())


def _still_ours(entry) -> bool:
    """The read is still this socket's: not given back meanwhile (``open_read_timeout``)
    and perhaps opened again by another reader, nor its queue deleted."""
    queue, item_id, token = entry
    if not ops.still_open(queue, item_id):
        return False
    item = queue.open.get(item_id) if token is not None else None
    return item is None or item.open_token == token


def session_for(ctx, segment: str):
    """The session of ``/ws/q/SEGMENT``; a bad queue name is refused before the upgrade."""
    raw = queue_name(segment)

    def session(ws) -> None:
        Consumer(ctx, ws, raw).run()

    return session
