"""The storage seam: what the operations layer may use of a queue and of the collection.

Two implementations: the journaled one (``pqueue.PersistentQueue`` over ``segments.QueueStore``,
in ``collection.QueueCollection``) and an in-memory one (``memory.MemoryQueue`` in
``memory.MemoryCollection``), which unit tests of the operations layer use.  A new backend
implements these two protocols; front ends and the operations layer use nothing else, so
they need no change.  tests/unit/test_storage_seam.py runs the same sequences against both.

Rules every implementation keeps:

* **Ids.**  Each item gets an id, unique within its queue and one above the previous
  item's; ids never go back, not even across a restart, a flush or a compaction.  The id
  is the ``gets`` cas value and names an open read in ``confirm`` and ``unremove``.
* **Journal before memory.**  A call that changes a queue writes its record first; when
  that write fails it raises ``errors.JournalWriteError`` and the queue is as it was, so
  the caller acknowledges nothing.  A call that returned has changed memory and written
  its record to the kernel; it does *not* wait for that record's fsync: the caller
  waits for durability itself (``syncer.Syncer.wait_durable`` under ``fsync = always``).
* **Blocking.**  No call waits for a client.  ``add``, ``remove``, ``confirm``,
  ``flush``, ``discard_expired`` and ``compact`` may rewrite the journal (a compaction),
  which fsyncs the new file: on the hub when it is small, in a worker thread when it is
  large, and then they yield to other greenlets meanwhile.  ``put`` yields between
  fanout children, ``maintain`` between queues.  After a call that may yield, the
  caller must not assume that nothing else ran (a queue can be deleted: check
  ``deleted``).
* **Expiry.**  An item whose ``expires_ms`` (or ``added_ms`` plus the queue's ``max_age``)
  is at or before ``now`` is never returned: ``remove`` and ``peek`` first drop expired
  items at the head, moving them to the queue's ``expire_to`` when it has one.  ``now``
  is milliseconds since the epoch; 0 means the current time.
* **Paused** is a flag the storage keeps (and the collection persists); it refuses
  nothing itself.  Whoever serves reads checks it.
* **Waiting readers.**  ``waiters`` is the line of blocked readers of a queue, oldest
  first, each an object with ``notify()`` and an ``event`` (``server.waiters.Waiter``).
  The reader appends itself and removes itself when it leaves; the queue never hands it
  an item.  When an item becomes available (``add``, ``unremove``, a resume) the queue
  pops the oldest waiter and calls ``notify()``, and the reader takes the item itself.  A
  notified reader that leaves without taking calls ``pass_on()``, which notifies the
  next.  ``deleted`` queues and shutdown wake every waiter (``event.set()``) with nothing.
"""

import builtins
from collections.abc import Sized
from typing import Protocol, runtime_checkable


class Item(Protocol):
    id: int
    flags: int
    data: bytes
    added_ms: int
    expires_ms: int  # 0: never
    opened_ms: int  # when it was taken by an open read
    open_token: int  # which open read of it this is: a new one after every give-back
    deliveries: int  # times taken by an open read; kept across restarts where the queue is


class Waiter(Protocol):
    def notify(self) -> None: ...


@runtime_checkable
class Queue(Protocol):
    """One FIFO queue of items, with the items out on open reads."""

    name: str
    config: object  # server.config.QueueConfig; a new one may be assigned (reload)
    paused: bool
    deleted: bool  # set when the collection deleted it; every call after that is moot
    stats: object  # items.QueueStats: counters of PROTOCOL.md "Stats fields"
    waiters: object  # a deque of Waiter, oldest first

    @property
    def count(self) -> int:
        """Items waiting (open reads excluded)."""

    bytes: int  # payload bytes of the waiting items, delayed ones included
    # Whether ``add`` takes ``due_ms`` and ``priority`` and ``unremove`` ``due_ms``; a
    # queue that does not (engine mode) has no ``delayed`` items (an empty sequence).
    schedules: bool
    delayed: Sized  # items stored but not due yet: out of ``count``, invisible to reads

    def add(self, data: builtins.bytes, flags: int = 0, expires_ms: int = 0, now: int = 0,
            due_ms: int = 0, priority: int = 5) -> bool:
        """Append an item and notify the oldest waiter.  False when refused: larger than
        ``max_item_size``, or the queue is at ``max_items``/``max_size`` (delayed items
        count) and does not ``discard_old_when_full`` (which drops head items, never the
        new one, to make room).  ``max_age`` caps ``expires_ms``.  ``due_ms`` later than
        ``now``: held in ``delayed`` until then, then appended in due order and a waiter
        notified; ``errors.LimitReached`` past ``schedule.MAX_DELAYED_ITEMS``.  ``priority``
        0 to 9: the item's level (``levels``): reads take the most urgent first."""

    def remove(self, open_read: bool = False, now: int = 0, max_deliveries: int = 0):
        """Take the head item, or None when none is waiting.  First expired heads are
        dropped (or moved to ``expire_to``) and heads taken ``max_deliveries`` times
        moved to ``dead_letter_to`` (default ``<name>_errors``; one that the target
        refuses stays).  ``max_deliveries``: this read's own bound, applied when tighter
        than the queue's (``items.delivery_limit``).  With ``open_read`` the item's
        ``deliveries`` goes up by one and it stays out until ``confirm`` or ``unremove``
        of its id."""

    def peek(self, now: int = 0, max_deliveries: int = 0):
        """The head item without taking it, or None (heads are made deliverable as in
        ``remove``)."""

    def confirm(self, item_id: int) -> bool:
        """Finish an open read for good; False when that id is not out."""

    def unremove(self, item_id: int, due_ms: int = 0) -> bool:
        """Give an open read back to the head of the queue (ahead of every waiting item)
        and notify the oldest waiter; False when that id is not out or the queue is
        deleted.  With ``due_ms``: delayed until then, as by ``add``, keeping its
        ``deliveries``."""

    def flush(self) -> int:
        """Remove every waiting item, delayed ones too; open reads stay out.  Returns
        how many."""

    def discard_expired(self, now: int = 0) -> int:
        """Drop (or move to ``expire_to``) the expired items at the head; how many."""

    def pass_on(self) -> None:
        """A notified waiter left without taking: notify the next, if an item waits."""

    def compact(self) -> None:
        """Rewrite what the queue keeps on disk to its current state (may do nothing)."""

    def is_open(self, item_id: int) -> bool:
        """True while ``item_id`` is out on an open read."""

    def first_items(self, count: int) -> list:
        """The first ``count`` waiting items (those in memory), not taken."""

    journal_size: int  # bytes the queue's journal holds; 0 without one
    disk_count: int  # waiting items not in memory (read-behind); 0 where all are
    store: object  # the queue's files (segments.QueueStore), or None: a queue without any


@runtime_checkable
class Collection(Protocol):
    """The queues by name: created on first write, fanout children, blocked readers of
    queues that do not exist yet.  ``raw`` is a queue name as the client sent it
    (bytes); an invalid name raises ``errors.ClientError``."""

    queues: dict  # name -> Queue
    children: dict  # master name -> {child name: Queue}: fanout (``m`` feeds ``m+x``)
    # True when its operations wait for the network (a greenlet switch): the connection
    # then never runs them from the event loop's callback (server/loop_serving).
    waits_for_io: bool

    def lookup(self, raw: builtins.bytes):
        """The queue, or None; never creates."""

    def get_for_read(self, raw: builtins.bytes):
        """The queue a read takes from, or None; creates only fanout children (reading
        ``m+x`` subscribes to ``m``)."""

    def get_or_create(self, raw: builtins.bytes):
        """The queue, created if missing.  ``errors.LimitReached`` past ``max_queues`` or
        ``max_fanout_children``."""

    def await_queue(self, raw: builtins.bytes):
        """For a blocking read of a missing queue: an object with ``waiters``,
        ``deleted`` and ``pass_on`` to wait on; the queue adopts its waiters when a
        write creates it.  Give it back with ``release_awaited`` when the wait ends."""

    def release_awaited(self, awaited) -> None: ...

    def put(self, queue, data: builtins.bytes, flags: int, expires_ms: int, now: int, due_ms: int = 0,
            priority: int = 5) -> bool:
        """``queue.add`` and the same item to each fanout child; the result is the
        master's (``fanout_only``: whether the size was acceptable).  ``due_ms`` and
        ``priority`` only where ``queue.schedules``."""

    def delete(self, name: str) -> bool:
        """Forget a queue and its data; its waiters are woken with nothing.  False when
        there was no such queue."""

    def set_paused(self, queue, paused: bool) -> None:
        """Pause or resume reads of ``queue``; persisted before it takes effect (an
        ``OSError`` leaves it as it was).  A resume notifies as many waiters as items
        wait."""

    def flush_all(self) -> int: ...

    def flush_all_expired(self) -> int: ...

    def wake_all(self) -> None:
        """Wake every waiter of every queue, and of missing queues, with nothing."""

    @property
    def total_items(self) -> int: ...

    @property
    def total_bytes(self) -> int: ...

    def maintain(self) -> int:
        """The periodic sweep: expiry, stale open reads given back, compaction, idle
        queues deleted (``max_queue_age``).  Returns how many items the queues hold in
        this process's memory (counted on the way: ``gcpolicy`` reads it)."""

    def load_all(self) -> int:
        """Load every queue the storage holds (start-up); how many."""

    def close_all(self) -> None: ...

    def apply_settings(self, settings) -> list:
        """Give every queue its config from new settings; the names that changed."""
