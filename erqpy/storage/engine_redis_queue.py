"""RedisQueue: one queue of the Redis backend, behind the same names as PersistentQueue.

The items, the limits, the pause flag and the counters are in Redis (engine_redis_lua.py
lists the keys); what stays in this process is per node: the line of local waiters and
the open reads this node took (``open``: item id -> Item, for ``open_read_timeout`` and
for the give-back when the node's lease is lost).  Which connection holds an open read
stays session state, as with the journal.

Every read of ``count``, ``bytes``, ``paused`` or ``stats`` asks Redis, since another
node may have changed it; none is cached.
"""

import logging
import time

from erqpy.errors import Unavailable
from erqpy.storage.engine_redis_staging import Stager, WaiterLine
from erqpy.storage.items import Item, QueueStats, delivery_limit, now_ms
from erqpy.storage.names import FANOUT_SEPARATOR
from erqpy.storage.pqueue import DEAD_LETTER_SUFFIX, PersistentQueue

log = logging.getLogger("erqpy.engine")

#: Expired items one script call drops before it returns (it is called again for more),
#: so a head of a million expired items does not hold Redis for long.
EXPIRE_BATCH = 1000
STATS_FIELDS = QueueStats.__slots__
#: A dead-letter queue refused an over-delivered head: it is delivered once more.
DEAD_LETTER_REFUSED = "refused"
#: The PUT script's answers other than an item id (engine_redis_lua.PUT).
REFUSED, GONE, FANOUT_ONLY_ACCEPTED = 0, -1, -2
#: ``bytes`` is a property of RedisQueue (the seam's name); in the class body the type of
#: a payload needs another name.
Payload = bytes


class EngineUnavailable(Unavailable):
    """Redis did not answer (down, failing over, out of reach); ``SERVER_ERROR``."""

    def __init__(self, cause: Exception):
        super().__init__(f"engine unavailable ({type(cause).__name__})")
        self.cause = cause


class NotReplicated(Unavailable):
    """``WAIT`` returned fewer replica acknowledgements than required in time."""

    def __init__(self, acknowledged: int, required: int):
        super().__init__("not replicated")
        self.acknowledged = acknowledged
        self.required = required


class QueueKeys:
    """The Redis keys of queue ``name`` under ``prefix`` (see engine_redis_lua.py)."""

    __slots__ = ("base", "children", "is_child", "items", "meta", "name", "opennodes")

    def __init__(self, prefix: str, name: str):
        master, plus, _child = name.partition(FANOUT_SEPARATOR)
        self.name = name
        self.is_child = bool(plus)
        self.base = f"{prefix}:{{{master}}}:"
        self.items = self.base + "items:" + name
        self.meta = self.base + "meta:" + name
        self.opennodes = self.base + "opennodes:" + name
        self.children = self.base + "children:" + master

    def open(self, node: str) -> str:
        return f"{self.base}open:{node}:{self.name}"

    def staged(self, node: str) -> str:
        return f"{self.base}staged:{node}:{self.name}"


def config_fields(config) -> list:
    """The limits the scripts enforce, as HSET field/value pairs."""
    return [
        "max_items", config.max_items, "max_size", config.max_size,
        "max_item_size", config.max_item_size,
        "discard_old", int(config.discard_old_when_full),
        "max_age_ms", int(config.max_age * 1000), "fanout_only", int(config.fanout_only),
    ]


def parse_item(raw: bytes) -> Item:
    header, _, data = raw.partition(b"\n")
    item_id, flags, added_ms, expires_ms, deliveries = (int(field) for field in header.split(b" "))
    item = Item(item_id, flags, data, added_ms, expires_ms)
    item.deliveries = deliveries
    return item


class RedisQueue:
    """The seam's queue, with its state in Redis.  ``engine`` is the collection's
    ``RedisEngine`` (client, scripts, node id, durability options)."""

    # No files: what code written for the journaled queue finds in ``store`` (stats,
    # compaction) when it asks for them.
    store = None
    disk_count = 0  # items are in Redis's memory: none read behind
    schedules = False  # delayed items and priorities are refused in engine mode (ops)
    delayed = ()
    compact_pending = False

    def __init__(self, name: str, config, engine, events, move_expired, dead_letter):
        self.name = name
        self.config = config
        self.keys = QueueKeys(engine.prefix, name)
        self.engine = engine
        self.events = events
        self.move_expired = move_expired  # (target name, Item) -> None, for expire_to
        self.dead_letter = dead_letter  # (target name, Item) -> stored?, for max_deliveries
        self.stager = Stager(self, engine, engine.options.poll_interval)
        self.waiters = WaiterLine(self.stager.ensure)
        self.open = {}  # item id -> Item: open reads this node holds
        self.deleted = False
        self._open_seq = 0
        self.seen_activity = None  # the activity counters, and when they last moved
        self.last_activity = time.monotonic()  # (engine_redis_idle.py)

    # -- levels and flags, read from Redis ----------------------------------------

    @property
    def count(self) -> int:
        return self.engine.call(self.engine.client.llen, self.keys.items)

    @property
    def bytes(self) -> int:
        return int(self.engine.call(self.engine.client.hget, self.keys.meta, "bytes") or 0)

    @property
    def paused(self) -> bool:
        return self.engine.call(self.engine.client.hget, self.keys.meta, "paused") == b"1"

    @property
    def stats(self) -> QueueStats:
        """A snapshot of the counters (they change on every node)."""
        values = self.engine.call(self.engine.client.hmget, self.keys.meta, STATS_FIELDS)
        stats = QueueStats()
        for field, value in zip(STATS_FIELDS, values, strict=True):
            setattr(stats, field, int(value or 0))
        return stats

    @property
    def _config(self):
        return self.config

    @property
    def open_count(self) -> int:
        return len(self.open)

    # -- the seam's operations ------------------------------------------------------

    def add(self, data: Payload, flags: int = 0, expires_ms: int = 0, now: int = 0) -> bool:
        """Append an item (to this queue only; ``RedisCollection.put`` does fanout)."""
        now = now or now_ms()
        item_id, _children = self.engine.put(self.keys, data, flags, expires_ms, now, fanout=False)
        if item_id == GONE:
            self.deleted = True  # by another node
        if item_id <= 0:
            return False
        self.stored(item_id, data, flags, expires_ms, now)
        return True

    def stored(self, item_id: int, data: Payload, flags: int, expires_ms: int, now: int) -> None:
        """After a script stored an item in this queue: events.  Local waiters are not
        notified here: the queue's stager (running while there are any) moves the item
        for the oldest of them, so that one waiter at a time takes and FIFO holds."""
        if self.events.active:
            self.events.emit("enqueued", self.name, Item(item_id, flags, data, now, expires_ms))

    def remove(self, open_read: bool = False, now: int = 0, max_deliveries: int = 0):
        item = self._take("open" if open_read else "take", now, max_deliveries)
        if item is None:
            return None
        if open_read:
            item.opened_ms = item.opened_ms or now_ms()
            self._open_seq += 1
            item.open_token = self._open_seq
            self.open[item.id] = item
        if self.events.active:
            self.events.emit("opened" if open_read else "dequeued", self.name, item)
        return item

    def peek(self, now: int = 0, max_deliveries: int = 0):
        return self._take("peek", now, max_deliveries)

    def discard_expired(self, now: int = 0, limit: int = 1 << 62) -> int:
        count = 0
        while count < limit:
            expired, more = self._run_take("expire", now or now_ms())
            count += expired
            if not more:
                break
        return count

    def confirm(self, item_id: int) -> bool:
        node = self.engine.node_id
        done = self.engine.call(self.engine.scripts.confirm,
                                keys=[self.keys.open(node), self.keys.opennodes], args=[item_id, node])
        # Forgotten only once Redis answered: a read that Redis still holds as open stays
        # here, so that a later give-back (the connection closing, a clean stop) finds it.
        item = self.open.pop(item_id, None)
        if done and item is not None and self.events.active:
            self.events.emit("confirmed", self.name, item)
        return bool(done)

    def unremove(self, item_id: int) -> bool:
        """Give an open read of this node back to the head and notify the oldest waiter."""
        if self.deleted:
            self.open.pop(item_id, None)
            return False
        given, _left = self.engine.give_back(self.keys, self.engine.node_id, [item_id])
        item = self.open.pop(item_id, None)  # after Redis answered, as in confirm
        if not given:
            return False
        if item is not None and self.events.active:
            self.events.emit("aborted", self.name, item)
        return True  # back at the head: a blocked stager (this node's or another's) takes it

    # Open reads past ``open_read_timeout`` and the line of waiters: the same rules as
    # the journaled queue, which keeps them in the same attributes (``open``, ``waiters``,
    # ``_config``).
    def give_back_stale(self, now: int) -> int:
        # The journaled queue's method run on this one: the type checker cannot know
        # that it needs only the attributes named above.
        return PersistentQueue.give_back_stale(self, now)  # type: ignore[arg-type]

    wake_all = PersistentQueue.wake_all

    def flush(self) -> int:
        return self.engine.call(self.engine.scripts.flush,
                                keys=[self.keys.items, self.keys.meta, self.keys.staged(self.engine.node_id)])

    def pass_on(self) -> None:
        """A notified waiter left without an item: the next one gets the turn, and with
        none left what this node staged goes back to the head."""
        if not self.waiters:
            self.stager.unstage()
        elif self.engine.call(self.engine.client.llen, self.keys.staged(self.engine.node_id)):
            self.waiters.popleft().notify()  # the staged item was the leaver's
        # Items at the head reach the waiters through the stager, one at a time.

    # -- read-only facts for the operations layer, as in the journaled queue ------------

    def is_open(self, item_id: int) -> bool:
        """True while ``item_id`` is an open read this node holds."""
        return item_id in self.open

    def first_items(self, count: int) -> list:
        """The first ``count`` waiting items, not removed (expired ones included: Redis
        drops them on the next read or sweep)."""
        raw = self.engine.call(self.engine.client.lrange, self.keys.items, 0, max(count, 0) - 1) if count > 0 else []
        return [parse_item(entry) for entry in raw]

    @property
    def mem_bytes(self) -> int:
        return self.bytes  # every item is in Redis's memory

    journal_size = 0  # no journal

    def compact(self) -> None:
        """Nothing to rewrite: Redis keeps the state."""

    def compact_safely(self, force: bool = False, background: bool = False) -> bool:
        return False

    def close(self) -> None:
        """The stager ends (giving back what it staged); the connection pool is the
        collection's."""
        self.stager.stop()

    # -- internals ----------------------------------------------------------------------

    def _take(self, mode: str, now: int, read_limit: int = 0):
        now = now or now_ms()
        if mode != "peek":
            self.stager.moved.set()  # what it staged is taken now, or was taken before
        limit = delivery_limit(self.config.max_deliveries, read_limit) if self._dead_letter_queue() else 0
        while True:
            item, more = self.took(self.engine.call(self.send_take, mode, now, max_deliveries=limit), mode, now)
            if not more:
                return item
            if more is DEAD_LETTER_REFUSED:
                return self.took(self.engine.call(self.send_take, mode, now, max_deliveries=0), mode, now)[0]

    def _run_take(self, mode: str, now: int):
        """One TAKE script call; returns (item or expired count for "expire", more)."""
        return self.took(self.engine.call(self.send_take, mode, now), mode, now)

    def send_take(self, mode: str, now: int, client=None, max_deliveries=None):
        """Run TAKE (queued on ``client`` when that is a pipeline); ``took`` reads its reply."""
        node = self.engine.node_id
        if max_deliveries is None:
            max_deliveries = self.config.max_deliveries if self._dead_letter_queue() else 0
        return self.engine.scripts.take(
            keys=[self.keys.items, self.keys.meta, self.keys.open(node), self.keys.opennodes,
                  self.keys.staged(node)],
            args=[now, mode, node, EXPIRE_BATCH, max_deliveries], client=client,
        )

    def _dead_letter_queue(self) -> str:
        """Where items opened ``max_deliveries`` times go; "" when nowhere (a dead-letter
        queue that inherits the setting keeps its items, as in the journaled queue)."""
        target = self.config.dead_letter_to or self.name + DEAD_LETTER_SUFFIX
        return target if target != self.name else ""

    def took(self, reply, mode: str, now: int):
        """What TAKE answered: (the item, or for "expire" how many expired; more may wait,
        or ``DEAD_LETTER_REFUSED``: deliver the head once more)."""
        raw, expired, more = reply[:3]
        if len(reply) > 3:  # the head was opened max_deliveries times
            return None, self._dead_letter(reply[3])
        for entry in expired:
            self._expired(parse_item(entry))
        item = parse_item(raw) if raw else None
        if item is not None and mode == "open":
            item.opened_ms = now
        if mode == "expire":
            return len(expired), more
        return item, more

    def _dead_letter(self, raw: Payload):
        """Store the over-delivered head in the dead-letter queue, then drop it here (in
        that order: a crash in between leaves it in both, never in neither).  Returns
        True to take again, or ``DEAD_LETTER_REFUSED`` when the target refused it."""
        item = parse_item(raw)
        target = self._dead_letter_queue()
        if not self.dead_letter(target, item):
            log.error("queue %s: item %d was delivered %d times; it stays because queue %r "
                      "cannot take it", self.name, item.id, item.deliveries, target)
            return DEAD_LETTER_REFUSED
        keys = [self.keys.items, self.keys.meta, self.keys.staged(self.engine.node_id)]
        if self.engine.call(self.engine.scripts.drop_head, keys=keys, args=[raw]):
            if self.events.active:
                self.events.emit("dead_lettered", self.name, item)
        return True

    def _expired(self, item: Item) -> None:
        if self.events.active:
            self.events.emit("expired", self.name, item)
        target = self.config.expire_to
        if target and target != self.name:
            # Another hash slot: not in the same script.  An item between the two calls
            # is lost if this node dies there (at-most-once for expire_to).
            self.move_expired(target, item)

