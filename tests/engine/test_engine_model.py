"""The Redis queue and the journaled queue (memory-only) given the same random operations
answer the same: the same items with the same ids, the same levels and counters.  Time is
a clock the test moves (``now`` of every call), so expiry is compared too."""

import itertools
import time

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from erqpy.events import EventBus
from erqpy.server.config import QueueConfig
from erqpy.storage.pqueue import PersistentQueue
from tests.engine.engine_helpers import make_collection, settings_with

_runs = itertools.count()

operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.tuples(st.binary(min_size=0, max_size=12), st.sampled_from([0, 0, 5, 50]))),
        st.tuples(st.just("tick"), st.sampled_from([1, 5, 20, 45])),  # lands on expiry times
        st.tuples(st.just("expire"), st.none()),
        st.tuples(st.just("remove"), st.booleans()),
        st.tuples(st.just("confirm"), st.integers(0, 5)),
        st.tuples(st.just("unremove"), st.integers(0, 5)),
        st.tuples(st.just("peek"), st.none()),
        st.tuples(st.just("flush"), st.none()),
    ),
    min_size=5,
    max_size=40,
)
limits = st.fixed_dictionaries({
    "max_items": st.integers(1, 6),
    "max_size": st.integers(8, 40),
    "discard_old_when_full": st.booleans(),
    "max_age": st.sampled_from([0, 0, 0.02]),
    "max_deliveries": st.sampled_from([0, 0, 1, 2]),
})


def view(item):
    return None if item is None else (item.id, item.data)


LIMITS = {"max_items": 5, "max_size": 40, "discard_old_when_full": False, "max_deliveries": 0}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=limits, steps=operations)
# The edges random runs seldom hit: an item read at the very millisecond it expires.
@example(config={**LIMITS, "max_age": 0}, steps=[("add", (b"a", 5)), ("tick", 5), ("remove", False)])
@example(config={**LIMITS, "max_age": 0.02}, steps=[("add", (b"a", 0)), ("tick", 20), ("peek", None)])
# ... and a head given back as often as max_deliveries allows.
@example(config={**LIMITS, "max_age": 0, "max_deliveries": 1},
         steps=[("add", (b"a", 0)), ("add", (b"b", 0)), ("remove", True), ("unremove", 0), ("peek", None)])
def test_same_answers_as_the_journaled_queue(redis_primary, key_prefix, config, steps):
    redis_side = make_collection(redis_primary.port, f"{key_prefix}-{next(_runs)}", settings_with(q=config),
                                 started=False)
    redis_side.lease.acquire()
    try:
        remote = redis_side.get_or_create(b"q")
        dead = []  # what the journaled queue dead-lettered (its move_item is this stand-in)
        def move_item(target, item, _setting):
            dead.append((target, item.data))
            return True

        local = PersistentQueue("q", QueueConfig(**config), None, move_item, EventBus())
        opened = []  # ids of open reads, oldest first (the same on both sides)
        now = int(time.time() * 1000)
        for step, argument in steps:
            if step == "add":
                data, ttl = argument
                expires = now + ttl if ttl else 0
                answers = [local.add(data, 0, expires, now), redis_side.put(remote, data, 0, expires, now)]
            elif step == "tick":
                now += argument
                continue
            elif step == "expire":
                answers = [queue.discard_expired(now) for queue in (local, remote)]
            elif step == "remove":
                answers = [view(queue.remove(open_read=argument, now=now)) for queue in (local, remote)]
                if argument and answers[0] is not None:
                    opened.append(answers[0][0])
            elif step in ("confirm", "unremove"):
                item_id = opened[argument % len(opened)] if opened else 999
                answers = [getattr(queue, step)(item_id) for queue in (local, remote)]
                if item_id in opened:
                    opened.remove(item_id)
            elif step == "peek":
                answers = [view(queue.peek(now)) for queue in (local, remote)]
            else:
                answers = [queue.flush() for queue in (local, remote)]
            assert answers[0] == answers[1], (step, argument)
            assert (local.count, local.bytes) == (remote.count, remote.bytes), (step, argument)
        for name in ("total_items", "expired_items", "discarded", "dead_lettered", "transactions",
                     "canceled_transactions", "gets", "puts", "last_age_ms"):
            assert getattr(local.stats, name) == getattr(remote.stats, name), name
        errors = redis_side.lookup(b"q_errors")
        moved = [] if errors is None else [item.data for item in iter(errors.remove, None)]
        assert dead == [("q_errors", data) for data in moved]
    finally:
        redis_side.close_all()
