"""The operations layer: every queue operation, protocol-free, under every front end.

The memcache handlers, the HTTP routes and the control channel translate a request into
these calls, and their results (or the exceptions of ``erqpy.errors``) into a reply.  So
the rules that do not depend on the protocol live here, once (Kestrel's "common
implementations of kestrel commands that don't depend on which protocol you're using"):

* READONLY refuses writes: put, flush, flush_all, flush_expired, flush_all_expired and
  delete (dropping expired items removes journaled items: a write).  Reads still work;
* QUIESCENT refuses those and the reads: take, peek and the waits for them;
* confirm and abort are never refused: they finish reads already handed out;
* a paused queue hands out nothing (a take finds it empty) and still accepts writes.

A refusal is ``Unavailable("server is <status>")``.

``server`` is what the rules read: ``ServerState``, or any object with its
``collection``, ``syncer``, ``status``, ``writes_allowed`` and ``reads_allowed``.  A
queue and the collection are used only through the storage seam (``add``, ``remove``,
``peek``, ``confirm``, ``unremove``, ``flush``, ``discard_expired``, ``pass_on``, ... of
the queue; ``put``, ``delete``, ``set_paused``, ``await_queue``, ... of the collection), so
another storage behind the collection needs no front end changed.

A wait for an item needs the caller's way of waiting, which watches its client (a
memcache connection's socket, an HTTP request's): ``wait(line, timeout, take)``, which
stands in ``line``'s waiters (a queue, or the line of a queue not created yet) until
``take()`` returns an item, ``timeout`` seconds pass, or the client goes
(``erqpy.server.waiters.wait_for_item`` wrapped with the caller's socket).

Code only: nothing here keeps state between calls.
"""

from erqpy.errors import ClientError, LimitReached, Unavailable, Unsupported
from erqpy.server import stats
from erqpy.server.aliases import Alias, alias_named, is_alias
from erqpy.storage.items import now_ms
from erqpy.storage.levels import DEFAULT_PRIORITY, LOWEST_PRIORITY
from erqpy.storage.schedule import MAX_DELAY_MS

# -- status rules ------------------------------------------------------------------------


def refusal(server) -> Unavailable:
    """The error for an operation the server status refuses."""
    return Unavailable(f"server is {server.status}")


def require_writes(server) -> None:
    if not server.writes_allowed:
        raise refusal(server)


def require_reads(server) -> None:
    if not server.reads_allowed:
        raise refusal(server)


# -- writes ------------------------------------------------------------------------------


def queue_for_write(server, raw: bytes):
    """The queue named ``raw``, created if missing, or the ``Alias`` of that name (which
    ``put`` takes too); refused unless writes are allowed.

    Raises ``ClientError`` for a bad name, ``LimitReached`` past ``max_queues``."""
    require_writes(server)
    return alias_named(server, raw) or server.collection.get_or_create(raw)


def put(server, queue, data: bytes, flags: int = 0, expires_ms: int = 0, now: int = 0, *,
        delay_ms: int = 0, due_ms: int = 0, priority: int = DEFAULT_PRIORITY) -> bool:
    """Enqueue on ``queue`` and each of its fanout children; False when ``queue`` refused
    the item (over ``max_item_size``, or full and not discarding).  ``queue`` may be an
    ``Alias`` (``queue_for_write``): see ``put_to_alias``.

    ``delay_ms`` (from now) or ``due_ms`` (ms since the epoch; one of the two): a delayed
    item, stored now and out of every reader's reach until then.  ``priority``: its level,
    0 (most urgent) to 9, default 5 (``storage.levels``).  ``ClientError`` for a value out
    of range, ``Unsupported`` where the storage has neither (engine mode)."""
    if not server.writes_allowed:  # require_writes, inlined: every set comes here
        raise refusal(server)
    now = now or now_ms()
    if queue.__class__ is Alias:
        return put_to_alias(server, queue, data, flags, expires_ms, now, delay_ms, due_ms, priority)
    if delay_ms or due_ms or priority != DEFAULT_PRIORITY:
        return _put_scheduled(server, queue, data, flags, expires_ms, now, delay_ms, due_ms, priority)
    return server.collection.put(queue, data, flags, expires_ms, now)


def _put_scheduled(server, queue, data, flags, expires_ms, now, delay_ms, due_ms, priority) -> bool:
    """``put`` of a delayed item or one with a priority: checked before anything is stored."""
    if priority != DEFAULT_PRIORITY:
        _check_priority(queue, priority)
    due = _due(queue, now, delay_ms, due_ms) if delay_ms or due_ms else 0
    return server.collection.put(queue, data, flags, expires_ms, now, due, priority)


def _check_priority(queue, priority: int) -> None:
    if not 0 <= priority <= LOWEST_PRIORITY:
        raise ClientError(f"priority must be 0 to {LOWEST_PRIORITY}")
    if not queue.schedules:
        raise Unsupported("priorities are not supported in engine mode")


def _due(queue, now: int, delay_ms: int, due_ms: int) -> int:
    """The due time of a delayed put or abort, checked."""
    if delay_ms and due_ms:
        raise ClientError("delay and at cannot be combined")
    if delay_ms < 0 or due_ms < 0:
        raise ClientError("delay and at must not be negative")
    if max(delay_ms, due_ms - now) > MAX_DELAY_MS:
        raise ClientError(f"delay must be at most {MAX_DELAY_MS} ms")
    if not queue.schedules:
        raise Unsupported("delayed items are not supported in engine mode")
    return due_ms or now + delay_ms


def put_to_alias(server, alias, data: bytes, flags: int, expires_ms: int, now: int,
                 delay_ms: int = 0, due_ms: int = 0, priority: int = DEFAULT_PRIORITY) -> bool:
    """Write the item to every destination of ``alias``; True only if all stored it.

    As Kestrel 2.3 does, a destination that refuses (full, item too large, or past
    ``max_queues`` so it cannot be created) does not stop the others, and the copies that
    were stored stay: the writer sees ``NOT_STORED`` and knows that at least one queue
    lacks the item, not which.  A bad delay or priority is refused before any is written."""
    scheduled = delay_ms or due_ms or priority != DEFAULT_PRIORITY
    alias.stats.put_items += 1
    alias.stats.put_bytes += len(data)
    collection = server.collection
    stored_all = True
    for destination in alias.destinations:
        try:
            queue = collection.get_or_create(destination.encode())
        except LimitReached:
            stored_all = False
            continue
        if scheduled:
            stored = _put_scheduled(server, queue, data, flags, expires_ms, now, delay_ms, due_ms, priority)
        else:
            stored = collection.put(queue, data, flags, expires_ms, now)
        stored_all = stored_all and stored
    return stored_all


def flush(server, queue) -> int:
    """Remove every waiting item of ``queue`` (None: nothing); open reads stay."""
    require_writes(server)
    return queue.flush() if queue is not None else 0


def flush_all(server) -> int:
    require_writes(server)
    return server.collection.flush_all()


def flush_expired(server, queue) -> int:
    """Drop (or move to ``expire_to``) the expired items at the head of ``queue``."""
    require_writes(server)
    return queue.discard_expired(now_ms()) if queue is not None else 0


def flush_all_expired(server) -> int:
    require_writes(server)
    return server.collection.flush_all_expired()


def delete(server, queue) -> bool:
    """Delete ``queue`` (None: nothing), its journal and its stats; its blocked readers
    wake with nothing."""
    require_writes(server)
    return queue is not None and server.collection.delete(queue.name)


# -- reads -------------------------------------------------------------------------------


def _head(queue, open_read: bool, peek: bool, max_deliveries: int = 0):
    """The head of ``queue`` taken (or looked at): the status was checked by the caller.
    ``max_deliveries``: the read's own delivery bound (``get q/open/max_deliveries=N``)."""
    if queue.paused:
        return None
    if peek:
        return queue.peek(0, max_deliveries)
    return queue.remove(open_read, 0, max_deliveries)


def take(server, queue, open_read: bool = False):
    """Take the head of ``queue`` (None: missing) at once; None when there is none or the
    queue is paused.  ``open_read``: a reliable read, held open until confirmed or
    aborted."""
    if not server.reads_allowed:  # require_reads, inlined: every get comes here
        raise refusal(server)
    if queue is None or queue.paused:
        return None
    return queue.remove(open_read)


def take_or_wait(server, queue, raw: bytes, timeout: float = 0.0, wait=None, *,
                 open_read=False, peek=False, open_if=None, max_deliveries=0):
    """Take (or, with ``peek``, look at) the head of ``queue``, waiting up to ``timeout``
    seconds with ``wait`` (module docstring) when there is none.  Returns ``(queue,
    item)``; ``item`` is None when nothing came.

    ``queue`` None is the missing queue ``raw``: a reader creates no queue, so the wait
    is in the line of a queue not created yet, and the queue returned is the one a write
    created meanwhile, or None.  ``open_if()``, asked just before an item is taken, makes
    it an open read too: for a client that may not read the reply (the memcache
    connection after its client's FIN), whose front end confirms it once delivered.
    ``max_deliveries``: items handed out that often already are dead-lettered, not taken
    (the bound of a consumer that must not be killed forever by one job).
    """
    require_reads(server)
    if is_alias(server, raw):
        return None, None  # an alias holds nothing: no wait, even with a timeout

    def attempt(queue):
        return _head(queue, open_read or (open_if is not None and open_if()), peek, max_deliveries)

    item = None if queue is None else attempt(queue)
    if item is None and timeout > 0 and wait is not None:
        if queue is None:
            queue, item = _wait_for_missing(server, raw, timeout, wait, attempt)
        else:
            item = wait(queue, timeout, lambda: attempt(queue))
        if item is not None and peek:
            queue.pass_on()  # the item is still there for the next waiter
    return queue, item


def _wait_for_missing(server, raw, timeout, wait, attempt):
    """Wait on a queue that does not exist: no journal is made for a mere reader."""
    collection = server.collection
    awaited = collection.await_queue(raw)

    def take():
        queue = awaited.queue
        return None if queue is None else attempt(queue)

    try:
        item = wait(awaited, timeout, take)
    finally:
        collection.release_awaited(awaited)
    return awaited.queue, item


def take_first_or_wait(server, choices, timeout: float = 0.0, wait=None, *, open_read=False, open_if=None,
                       max_deliveries=0):
    """Take the head of the first of several queues that has one, waiting up to
    ``timeout`` seconds on all of them at once when none has (one wait: ``wait`` is given
    the list of lines, ``waiters.wait_for_item``).  ``choices`` is ``[(raw, queue or
    None)]`` in the order to look; an alias is skipped, a missing queue is waited on in
    the line of a queue not created yet, as ``take_or_wait`` does (``max_deliveries``
    too).  Returns ``(index, queue, item)`` of the choice that served, or None when
    nothing came."""
    require_reads(server)
    choices = [(index, raw, queue) for index, (raw, queue) in enumerate(choices) if not is_alias(server, raw)]

    def attempt(queue):
        return _head(queue, open_read or (open_if is not None and open_if()), False, max_deliveries)

    for index, _raw, queue in choices:
        item = None if queue is None else attempt(queue)
        if item is not None:
            return index, queue, item
    if timeout <= 0 or wait is None or not choices:
        return None
    collection = server.collection
    # (index, line, awaited): a missing queue is waited on in its awaited line.
    lines = [(index, queue, False) if queue is not None else (index, collection.await_queue(raw), True)
             for index, raw, queue in choices]
    served = []

    def take():
        for index, line, awaited in lines:
            queue = line.queue if awaited else line  # a line of a missing queue: its queue once made
            item = None if queue is None else attempt(queue)
            if item is not None:
                served.append((index, queue))
                return item
        return None

    try:
        item = wait([line for _index, line, _awaited in lines], timeout, take)
    finally:
        for _index, line, awaited in lines:
            if awaited:
                collection.release_awaited(line)
    if item is None:
        return None
    index, queue = served[-1]
    return index, queue, item


def remove_head_if(server, queue, item_id: int):
    """Remove the head of ``queue`` when it is item ``item_id`` (the dashboard's delete and
    move of one job); None when the head is another item or there is none.  A write, so
    refused by the status; not by a pause, which stops consumers, not administrators."""
    require_writes(server)
    head = queue.peek(0)
    if head is None or head.id != item_id:
        return None
    return queue.remove(False)


def confirm(queue, item_id: int) -> bool:
    """Finish the open read ``item_id`` for good; False when it is no longer open.
    Never refused by the status: the item was handed out already."""
    return queue.confirm(item_id)


def abort(queue, item_id: int, delay_ms: int = 0) -> bool:
    """Give the open read ``item_id`` back to the head; False when no longer open.
    ``delay_ms``: back as a delayed item, not before then (beanstalkd's release with a
    delay), with its delivery count."""
    if delay_ms:
        now = now_ms()
        return queue.unremove(item_id, _due(queue, now, delay_ms, 0))
    return queue.unremove(item_id)


def still_open(queue, item_id: int) -> bool:
    """True while ``item_id`` is an open read of ``queue`` (not confirmed, aborted or
    given back, and the queue not deleted)."""
    return not queue.deleted and queue.is_open(item_id)


# -- administration: not subject to the status ----------------------------------------------


def set_paused(server, queue, paused: bool) -> None:
    """Pause or resume the consumers of ``queue`` (persisted).  Raises ``OSError`` when
    the paused list cannot be written; the queue is then as it was."""
    server.collection.set_paused(queue, paused)


def compact(queue) -> tuple[int, int]:
    """Rewrite the journal of ``queue`` as a snapshot; its size before and after."""
    before = queue.journal_size
    queue.compact()
    return before, queue.journal_size


# -- figures -------------------------------------------------------------------------------


def depth(queue) -> int:
    """Items waiting, in memory and on disk (open reads excluded): the depth every front
    end reports."""
    return queue.count


def depths(server) -> dict:
    """``{name: depth}`` of every queue, sorted by name."""
    return {name: queue.count for name, queue in sorted(server.collection.queues.items())}


def nodes(server) -> dict:
    """The erqpy nodes sharing this server's engine (``erqctl nodes``, HTTP ``/nodes``):
    ``{"engine": False, "nodes": []}`` for a journaled server; in engine mode each live
    node (id, host, pid, started_ms, lease_ms_left, open_reads, self), oldest first."""
    lister = getattr(server.collection, "nodes", None)
    if lister is None:
        return {"engine": False, "nodes": []}
    live = [{"id": node, **info} for node, info in lister().items()]
    return {"engine": True, "nodes": sorted(live, key=lambda node: (node.get("started_ms", 0), node["id"]))}


def queue_stats(server, queue) -> dict:
    """The stats fields of ``queue`` (PROTOCOL.md), and ``children`` on a fanout master."""
    fields = stats.queue_stats(queue)
    children = server.collection.children.get(queue.name)
    if children:
        fields["children"] = ",".join(sorted(children))
    return fields


def head_items(queue, count: int) -> list:
    """The first ``count`` items waiting in memory, not removed, nothing expired."""
    return queue.first_items(count)


# -- durability ------------------------------------------------------------------------------


def write_mark(server) -> int:
    """A mark of the journal writes made so far, for ``wait_durable``."""
    return server.syncer.write_seq


def wait_durable(server, mark: int) -> int:
    """Return once every journal write made since ``mark`` is on disk where its queue's
    fsync policy asks (``always``), so that a reply acknowledging them tells the truth;
    returns the new mark.  Raises ``JournalWriteError`` when the fsync failed: those
    writes may not be on disk and must not be acknowledged."""
    syncer = server.syncer
    if syncer.write_seq != mark:
        syncer.wait_durable(syncer.write_seq)
    return syncer.write_seq
