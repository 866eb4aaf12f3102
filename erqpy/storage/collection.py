"""QueueCollection: queue names to queues, created on first use, loaded at start.

Also owns what spans queues: fanout (``m`` feeds every existing child ``m+x``), moving
expired items to ``expire_to``, deleting, and applying new settings to live queues.
"""

import logging
import os
import time

from erqpy.descriptors import is_exhausted
from erqpy.errors import ClientError, JournalWriteError, LimitReached, OutOfDescriptors
from erqpy.fairness import give_way, on_the_loop, sum_giving_way
from erqpy.storage.failpoints import check_environment as check_failpoint_environment
from erqpy.storage.awaited import AwaitedQueue
from erqpy.storage.datadir import file_stem, journal_path, segments_by_stem
from erqpy.storage.journal import DamagedHeader
from erqpy.storage.levels import DEFAULT_PRIORITY
from erqpy.storage.names import FANOUT_SEPARATOR, check_name
from erqpy.storage.newfiles import Creations
from erqpy.storage.pqueue import PersistentQueue, now_ms
from erqpy.storage.segments import QueueStore

log = logging.getLogger("erqpy.collection")

#: An empty queue that saw no traffic for a whole sweep is compacted once its files
#: exceed this, so disk use after draining falls back to almost nothing.  The rewrite
#: runs in a worker thread: 10,000 drained queues cost 10,000 small fsyncs, which must
#: not hold up the hub.
IDLE_COMPACT_BYTES = 4 * 1024
#: A fanout set gives the hub to other connections after writing this many children,
#: or fewer when their journal writes add up to more than FANOUT_BYTES_PER_YIELD.
CHILDREN_PER_YIELD = 8
FANOUT_BYTES_PER_YIELD = 256 * 1024
#: A walk over every queue (the maintenance sweep, a reload's new settings) gives the
#: hub away after this many queues.
QUEUES_PER_YIELD = 200


class QueueCollection:
    waits_for_io = False  # files only: no operation switches greenlets (seam.Collection)

    def __init__(self, datadir, settings, syncer, events, server_stats):
        self.datadir = datadir
        self.settings = settings
        self.syncer = syncer
        self.events = events
        self.server_stats = server_stats
        self.queues = {}  # name -> PersistentQueue
        self.by_key = {}  # name as bytes -> PersistentQueue: the hot-path lookup
        self.children = {}  # master name -> {child name: PersistentQueue}
        self.paused_names = set()  # persisted, so that a pause outlives a restart
        self.awaited = {}  # name as bytes -> AwaitedQueue: blocked reads of missing queues
        # Segment files found at start-up whose queue was not loaded (its journal is
        # missing or keep_journal was off), by file stem.  Only a live queue writes
        # segments and the directory is locked, so a queue created later has exactly
        # these: creation needs no directory listing.
        self.unloaded_segments = {}
        self.creations = Creations(datadir)  # new queues whose journal a thread is creating

    # -- lookup and creation ----------------------------------------------------------

    def get_or_create(self, raw: bytes) -> PersistentQueue:
        """The queue, created if missing: for writes, and reads of fanout children.

        Raises ``ClientError`` for a bad name, ``LimitReached`` past ``max_queues`` or
        ``max_fanout_children``.
        """
        queue = self.by_key.get(raw)
        if queue is None:
            queue = self.create(check_name(raw))
            assert queue is not None  # only a replay leaves a quarantined queue out
        return queue

    def get_for_read(self, raw: bytes):
        """The queue a read takes from, or None: a read creates only fanout children
        (reading ``m+x`` is how a Kestrel client subscribes to ``m``)."""
        queue = self.by_key.get(raw)
        if queue is None:
            if FANOUT_SEPARATOR.encode() in raw:
                return self.create(check_name(raw))
            queue = self.lookup(raw)  # waits for a creation in flight
        return queue

    def await_queue(self, raw: bytes) -> AwaitedQueue:
        """The line of waiters for missing queue ``raw``; ``release_awaited`` after."""
        awaited = self.awaited.get(raw)
        if awaited is None:
            awaited = self.awaited[raw] = AwaitedQueue(raw)
        return awaited

    def release_awaited(self, awaited: AwaitedQueue) -> None:
        """A waiter left: forget the entry once nobody waits on it."""
        if not awaited.waiters and self.awaited.get(awaited.key) is awaited:
            del self.awaited[awaited.key]

    def lookup(self, raw: bytes):
        """The queue, or None; never creates.  Validates the name."""
        queue = self.by_key.get(raw)
        if queue is None:
            name = check_name(raw)
            if name in self.creations and not on_the_loop():
                # A write that creates the queue waits for its file (newfiles): a read,
                # delete or flush sent after it on any connection (``set ... noreply``,
                # then ``get`` or ``delete``) must find what it wrote.  Not on the loop,
                # which serves no get while a creation is in flight (_get_never_waits).
                self.creations.wait_for(name)
                queue = self.by_key.get(raw)
        return queue

    def create(self, name: str, replay: bool = False, segments=None) -> PersistentQueue | None:
        """The queue ``name``, made (and replayed from its files) if missing; None when
        ``replay`` finds its files unreadable (they are quarantined)."""
        queue = self.queues.get(name)
        if queue is not None:
            return queue
        master, plus, _child = name.partition(FANOUT_SEPARATOR)
        config = self.settings.queue_config(name)
        if not replay:  # what is on disk always loads; the limits refuse new queues
            if name in self.creations:
                if on_the_loop():
                    return None  # cannot wait here: only a fanout read gets here, and finds no queue yet
                self.creations.wait_for(name)
                queue = self.queues.get(name)
                if queue is not None:
                    return queue
            self._check_limits(master if plus else "")
            if config.keep_journal and self.datadir is not None and not on_the_loop():  # None: in memory
                self.creations.make(name)  # others wait for it (above) meanwhile
        queue = self._open_queue(name, config, replay, segments)
        if queue is None:
            return None
        queue.paused = name in self.paused_names
        key = name.encode()
        self.queues[name] = queue
        self.by_key[key] = queue
        if plus:
            self.children.setdefault(master, {})[name] = queue
        awaited = self.awaited.pop(key, None)
        if awaited is not None:  # blocked readers were waiting for it to exist
            queue.waiters = awaited.waiters
            awaited.queue = queue
        self.server_stats.queue_creates += 1
        return queue

    # -- what depends on the files: how a queue is made, paused names kept, files erased --

    def _open_queue(self, name: str, config, replay: bool, segments):
        store = None
        if not config.keep_journal and os.path.exists(journal_path(self.datadir.path, name)):
            log.warning(
                "queue %s: keep_journal is false, so its journal on disk is not loaded; its "
                "items come back if keep_journal is set again (or delete %s)",
                name, journal_path(self.datadir.path, name),
            )
        if config.keep_journal:
            policy = config.fsync or self.settings.fsync
            try:
                store = QueueStore(self.datadir.path, name, policy, self.syncer, config.max_journal_size)
            except OSError as exc:  # writing the long-name file: disk full, no descriptor
                raise (OutOfDescriptors(exc) if is_exhausted(exc) else JournalWriteError(name, exc)) from exc
            # load_all listed the directory once for every queue; a new queue has only
            # what that listing left unclaimed (usually nothing).
            found = segments if segments is not None else self.unloaded_segments
            store.found_segments = found.pop(file_stem(name), [])
        queue = PersistentQueue(name, config, store, self.move_item, self.events)
        if store is not None:
            try:
                report = queue.replay()
            except DamagedHeader as exc:
                # Nothing in the queue's files can be validated without their header: put
                # them aside for inspection and serve every other queue.  At start the
                # queue is left out; used later, it starts empty with fresh files.
                moved = store.quarantine()
                log.error(
                    "queue %s: QUARANTINED, DATA MAY HAVE BEEN LOST: %s is unreadable (%s); moved "
                    "aside: %s; the queue starts empty when it is next used",
                    name, exc.path, exc.reason, ", ".join(f"{src} -> {dst}" for src, dst in moved),
                )
                return None if replay else self._open_queue(name, config, False, None)
            except BaseException as exc:
                store.close()  # a half-opened queue must not keep its descriptors
                if is_exhausted(exc):
                    raise OutOfDescriptors(exc) from exc
                raise
            if replay:
                log.info(
                    "queue %s: replayed %d records, %d items (%d on disk), %d bytes",
                    name, report.records, queue.count, queue.disk_count, queue.bytes,
                )
        return queue

    def _write_paused(self, names) -> None:
        self.datadir.write_paused(names)

    def _erase(self, queue) -> None:
        if queue.store is not None:
            queue.store.erase()

    def _check_limits(self, master: str) -> None:
        limit = self.settings.max_queues
        if len(self.queues) + len(self.creations) >= limit:
            raise LimitReached(f"too many queues (max_queues is {limit})")
        if master:
            limit = self.settings.queue_config(master).max_fanout_children
            if len(self.children.get(master, ())) + self.creations.children_of(master) >= limit:
                raise LimitReached(
                    f"too many fanout children of {master} (max_fanout_children is {limit})"
                )

    def load_all(self) -> int:
        """Replay every journal in the data directory (before the port opens)."""
        check_failpoint_environment()
        self.datadir.clean_temporary_files()
        self.paused_names = self.datadir.read_paused()
        names = self.datadir.queue_names()
        segments = segments_by_stem(self.datadir.path)
        for name in names:
            try:
                check_name(name.encode())
            except ClientError:
                log.warning("ignoring journal with an invalid queue name: %s", name)
                continue
            self.create(name, replay=True, segments=segments)
        self.unloaded_segments = segments
        self.server_stats.queue_creates = 0
        return len(names)

    # -- operations that span queues ----------------------------------------------------

    def put(self, queue: PersistentQueue, data: bytes, flags: int, expires_ms: int, now: int, due_ms: int = 0,
            priority: int = DEFAULT_PRIORITY) -> bool:
        """Add to ``queue`` and to each of its fanout children; the reply is the master's."""
        children = self.children and self.children.get(queue.name)
        if children:
            # Every child's item shares ``data``; only the journal writes are per child,
            # and max_fanout_children bounds them.  Other connections get the hub every
            # few children, so one large set to many children does not stall them.
            per_yield = max(1, min(CHILDREN_PER_YIELD, FANOUT_BYTES_PER_YIELD // max(len(data), 1)))
            for index, child in enumerate(list(children.values()), 1):
                if not child.deleted:  # deleted while this set yielded
                    child.add(data, flags, expires_ms, now, due_ms, priority)
                if index % per_yield == 0:
                    give_way()
            if queue.config.fanout_only:
                return len(data) <= queue.config.max_item_size
            if queue.deleted:  # while this set yielded: the children have it, m is gone
                return False
        return queue.add(data, flags, expires_ms, now, due_ms, priority)

    def move_item(self, target_name: str, item, setting: str) -> bool:
        """Store a copy of ``item`` in queue ``target_name``, made if missing, for a
        queue's ``setting`` (``expire_to``: the copy never expires; ``dead_letter_to``:
        it keeps its expiry).  False, logged, when that queue cannot take it."""
        expires_ms = 0 if setting == "expire_to" else item.expires_ms
        try:
            target = self.get_or_create(target_name.encode())
            if target.add(item.data, item.flags, expires_ms):
                if getattr(target, "journal", None) is not None:  # the copy is written before
                    target.journal.write_pending_now()  # the original's REMOVE: never in neither
                return True
            reason = "it is full or the item is over its max_item_size"
        except (ClientError, LimitReached, JournalWriteError) as exc:
            reason = str(exc)
        log.error("%s queue %r cannot take an item: %s", setting, target_name, reason)
        return False

    def delete(self, name: str) -> bool:
        queue = self.queues.pop(name, None)
        if queue is None:
            return False
        del self.by_key[name.encode()]
        master, plus, _child = name.partition(FANOUT_SEPARATOR)
        if plus and master in self.children:
            self.children[master].pop(name, None)
            if not self.children[master]:
                del self.children[master]
        queue.deleted = True
        queue.wake_all()
        self._erase(queue)
        if name in self.paused_names:
            try:
                self.set_paused(queue, False)
            except OSError:
                log.exception("queue %s deleted, but its paused mark could not be cleared", name)
        self.server_stats.queue_deletes += 1
        return True

    def set_paused(self, queue: PersistentQueue, paused: bool) -> None:
        """Pause or resume the consumers of ``queue`` (writes are still accepted).

        The file is written first, so a failed write leaves the queue as it was.  On
        resume, enough waiters are woken to take the items that piled up.
        """
        names = set(self.paused_names)
        if paused:
            names.add(queue.name)
        else:
            names.discard(queue.name)
        if names != self.paused_names:
            self._write_paused(names)
            self.paused_names = names
        queue.paused = paused
        if not paused:
            queue.wake_takers()

    def maintain(self) -> int:
        """The periodic sweep: drop expired heads, give back reads open too long,
        compact idle journals, and delete empty queues idle past ``max_queue_age``;
        the items held in memory, counted on the way (``gcpolicy`` reads them).
        Activity is noticed by comparing counters between sweeps: the hot path pays
        nothing for it."""
        now = now_ms()
        clock = time.monotonic()
        held = 0
        for index, queue in enumerate(list(self.queues.values()), 1):
            if index % QUEUES_PER_YIELD == 0:
                give_way()  # thousands of queues: let connections in between
            if queue.deleted:  # this sweep yields: a queue may go meanwhile
                continue
            try:
                held += len(queue.items) + queue.levels.count + len(queue.delayed) + len(queue.open)
                activity = queue.stats.puts + queue.stats.gets
                idle = activity == queue.seen_activity
                if not idle:
                    queue.seen_activity = activity
                    queue.last_activity = clock
                if queue.items:
                    queue.discard_expired(now)
                queue.give_back_stale(now)
                if queue.compact_pending:  # it failed after a command (disk full): retry
                    queue.compact_safely(background=True)
                # Blocked readers do not stop it: a drained queue that its consumers wait
                # on is exactly the one whose leftover files should go.
                if not queue.items:
                    store = queue.store
                    force = idle and store is not None and (
                        store.segments or store.journal.size > IDLE_COMPACT_BYTES
                    )
                    queue.compact_safely(force=bool(force), background=bool(force))
                max_age = queue.config.max_queue_age
                if (
                    max_age and not queue.count and not queue.open and not queue.waiters
                    and clock - queue.last_activity > max_age
                ):
                    log.info("queue %s: empty and idle for %ss, deleted (max_queue_age)", queue.name, max_age)
                    self.delete(queue.name)
                    self.server_stats.queue_expires += 1
            except Exception:
                log.exception("maintenance of queue %s failed", queue.name)
        return held

    def flush_all(self) -> int:
        return sum(queue.flush() for queue in list(self.queues.values()))

    def flush_all_expired(self) -> int:
        return sum(queue.discard_expired() for queue in list(self.queues.values()))

    def apply_settings(self, settings) -> list[str]:
        """Give every live queue its new config; return the names whose config changed."""
        self.settings = settings
        changed = []
        # Most queues share one config object (the default's): compare each pair of old
        # and new objects once.  The objects are kept here, so their ids stay theirs.
        verdicts = {}
        for index, (name, queue) in enumerate(list(self.queues.items()), 1):
            if index % QUEUES_PER_YIELD == 0:
                give_way()  # 10,000 queues: let connections in between
            config = settings.queue_config(name)
            old = queue.config
            if config is old:
                continue
            verdict = verdicts.get((id(old), id(config)))
            if verdict is None:
                verdict = verdicts[(id(old), id(config))] = (old, config, config != old)
            queue.config = config  # equal or not, so that the next reload finds it shared
            if verdict[2]:
                if queue.store is not None:
                    queue.store.policy = config.fsync or settings.fsync
                    queue.store.segment_size = config.max_journal_size
                changed.append(name)
        return changed

    def wake_all(self) -> None:
        for queue in self.queues.values():
            queue.wake_all()
        for awaited in list(self.awaited.values()):
            awaited.wake_all()

    def close_all(self) -> None:
        for queue in self.queues.values():
            queue.close()

    @property
    def total_items(self) -> int:
        return sum_giving_way(q.count for q in list(self.queues.values()))

    @property
    def total_bytes(self) -> int:
        return sum_giving_way(q.bytes for q in list(self.queues.values()))
