"""Live operations and replay agree: a Hypothesis state machine drives a journaled
PersistentQueue (real files, a memory budget small enough for read-behind and segment
files, a journal small enough to be compacted often) with random operations, and after
every step a copy of its files replayed into a fresh queue holds the same items, in the
same order, with the same data, flags and expiry.  Reads open at the copy come back as
waiting items at the head, oldest first, as at a restart.

A plain model (a list of waiting items and a dict of open ones) says what the state is,
so the live queue is checked against it too.
"""

import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from erqpy.events import EventBus
from erqpy.server.config import QueueConfig
from erqpy.storage.pqueue import PersistentQueue
from erqpy.storage.segments import QueueStore
from erqpy.storage.syncer import FSYNC_NEVER, Syncer

T0 = 1_700_000_000_000
CONFIG = QueueConfig(max_memory_size=64, max_journal_size=256)
#: A clock reading at which nothing has expired: draining a replayed copy at it sees
#: every item it holds.
BEFORE_ALL_EXPIRY = 1
#: Compactions fsync; on tmpfs that costs nothing, and the disk is not what is tested.
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None


def open_queue(path: str, config: QueueConfig = CONFIG) -> PersistentQueue:
    store = QueueStore(path, "q", FSYNC_NEVER, Syncer(), config.max_journal_size)
    queue = PersistentQueue("q", config, store, None, EventBus())
    queue.replay()
    return queue


def fields(item) -> tuple:
    return item.id, item.data, item.flags, item.added_ms, item.expires_ms


class QueueAndReplay(RuleBasedStateMachine):
    config = CONFIG

    @initialize()
    def start(self):
        self.dir = tempfile.mkdtemp(prefix="erqpy-replay-", dir=SCRATCH)
        self.queue = open_queue(self.dir, self.config)
        self.now = T0
        self.waiting = []  # the model: fields() of each waiting item, head first
        self.open = {}  # id -> fields(), in the order the reads were opened

    def teardown(self):
        if hasattr(self, "queue"):
            self.queue.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def _drop_expired_heads(self):
        while self.waiting and self.waiting[0][4] and self.waiting[0][4] <= self.now:
            self.waiting.pop(0)

    @rule(items=st.lists(st.tuples(st.binary(max_size=40), st.integers(0, 2**32 - 1),
                                   st.one_of(st.just(0), st.integers(1, 60))), min_size=1, max_size=8))
    def add(self, items):
        for data, flags, lifetime in items:
            expires_ms = self.now + lifetime if lifetime else 0
            assert self.queue.add(data, flags, expires_ms, now=self.now)
            self.waiting.append((self.queue.next_id - 1, data, flags, self.now, expires_ms))
            while len(self.waiting) > self.config.max_items:  # discard_old_when_full
                self.waiting.pop(0)

    @rule(open_read=st.booleans())
    def remove(self, open_read):
        item = self.queue.remove(open_read=open_read, now=self.now)
        self._drop_expired_heads()
        expected = self.waiting.pop(0) if self.waiting else None
        assert expected == (fields(item) if item is not None else None)
        if open_read and expected is not None:
            self.open[expected[0]] = expected

    @precondition(lambda self: self.open)
    @rule(pick=st.integers(min_value=0), give_back=st.booleans())
    def finish_open_read(self, pick, give_back):
        item_id = list(self.open)[pick % len(self.open)]
        if give_back:
            assert self.queue.unremove(item_id)
            self.waiting.insert(0, self.open.pop(item_id))
        else:
            assert self.queue.confirm(item_id)
            del self.open[item_id]

    @rule()
    def flush(self):
        assert len(self.waiting) == self.queue.flush()
        self.waiting.clear()

    @rule(ms=st.integers(0, 40))
    def advance_clock(self, ms):
        self.now += ms

    @rule()
    def discard_expired(self):
        before = len(self.waiting)
        self._drop_expired_heads()
        assert before - len(self.waiting) == self.queue.discard_expired(self.now)

    @rule()
    def compact(self):
        self.queue.compact()

    @rule()
    def restart(self):
        """Close and replay the same files: open reads are given back, oldest first."""
        self.queue.close()
        self.queue = open_queue(self.dir, self.config)
        self.waiting = list(self.open.values()) + self.waiting
        self.open = {}

    @invariant()
    def live_queue_matches_the_model(self):
        assert len(self.waiting) == self.queue.count
        assert sum(len(f[1]) for f in self.waiting) == self.queue.bytes
        assert list(self.open) == list(self.queue.open)

    @invariant()
    def a_replay_of_the_files_gives_the_same_state(self):
        copy = tempfile.mkdtemp(prefix="erqpy-replayed-", dir=SCRATCH)
        try:
            shutil.copytree(self.dir, copy, dirs_exist_ok=True)
            replayed = open_queue(copy, self.config)
            try:
                expected = list(self.open.values()) + self.waiting
                assert (len(expected), sum(len(f[1]) for f in expected)) == (replayed.count, replayed.bytes)
                assert replayed.next_id >= self.queue.next_id  # ids never go back
                drained = []
                while (item := replayed.remove(now=BEFORE_ALL_EXPIRY)) is not None:
                    drained.append(fields(item))
                assert expected == drained
            finally:
                replayed.close()
        finally:
            shutil.rmtree(copy, ignore_errors=True)


class FullQueueAndReplay(QueueAndReplay):
    """The same with a queue that is often full and drops its head to make room: the ADD
    is journaled before the REMOVEs it causes, and replay must still agree."""

    config = QueueConfig(max_memory_size=64, max_journal_size=256, max_items=6, discard_old_when_full=True)


BOUNDED = settings(
    max_examples=40, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
QueueAndReplay.TestCase.settings = BOUNDED
FullQueueAndReplay.TestCase.settings = BOUNDED
test_live_operations_and_replay_agree = QueueAndReplay.TestCase
test_a_full_queue_discarding_its_head_and_replay_agree = FullQueueAndReplay.TestCase
