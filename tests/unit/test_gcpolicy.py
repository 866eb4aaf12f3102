"""gcpolicy with the real collector of this process: survivors of a full collection are
frozen, cyclic garbage among them waits, and is reclaimed once the heap has fallen back
and the policy unfreezes."""

import gc
import sys
import weakref

import pytest

from erqpy.server import gcpolicy
from erqpy.storage.snapshot import RunCopy


class Node:
    """An object in a reference cycle: only the cyclic collector can free it."""

    def __init__(self):
        self.me = self


@pytest.fixture
def policy():
    thresholds = gc.get_threshold()
    gc.collect()
    policy = gcpolicy.GcPolicy()
    policy.start()
    yield policy
    gc.callbacks.remove(policy._on_collection)
    gc.set_threshold(*thresholds)
    gc.unfreeze()
    gc.collect()


def grow_heap():
    """Tracked objects standing for items in memory (a queue's share of the heap)."""
    return [[n] for n in range(gcpolicy.LARGE_HEAP_ITEMS * 2)]


def test_the_survivors_of_a_full_collection_are_frozen(policy):
    frozen_before = gc.get_freeze_count()
    heap = grow_heap()

    gc.collect()

    assert gc.get_freeze_count() >= frozen_before + len(heap)
    assert policy.check(items_held=len(heap)) is False, "frozen, large, not for long"
    status = policy.status()
    assert status["gc_freezes"] == status["gc_full_collections"] >= 1
    assert status["gc_heap_grew"] is True
    assert status["gc_items_held"] == len(heap)
    assert status["gc_thresholds"][1:] == [gcpolicy.MIDDLE_THRESHOLD, gcpolicy.FULL_THRESHOLD]


def test_cyclic_garbage_frozen_with_a_large_heap_is_reclaimed_once_it_falls_back(policy):
    heap = grow_heap()
    node = Node()
    alive = weakref.ref(node)
    gc.collect()  # node and the heap are frozen
    del node

    gc.collect()
    assert alive() is not None, "frozen: the collector does not walk it"
    assert policy.check(items_held=len(heap)) is False, "the heap is still large"
    assert policy.check(items_held=gcpolicy.UNFREEZE_BELOW_ITEMS) is False, "fallen, not yet under the line"

    del heap
    assert policy.check(items_held=0) is True, policy.status()
    gc.collect()

    assert alive() is None
    assert policy.status()["gc_unfreezes"] == 1 and policy.status()["gc_heap_grew"] is False


def test_the_policy_never_walks_the_allocator_while_serving(policy, monkeypatch):
    """Session 16: sys.getallocatedblocks() visits every pymalloc pool (45-50 ms on the
    hub with 8 M blocks, cold), and the policy called it after every full collection,
    at every sweep of a grown heap, and for every ``erqctl status``."""
    heap = grow_heap()
    gc.collect()

    def walks_the_allocator():
        raise AssertionError("sys.getallocatedblocks() called while serving")

    monkeypatch.setattr(sys, "getallocatedblocks", walks_the_allocator)
    gc.collect()  # a full collection: its survivors frozen
    gc.collect(1)
    assert policy.check(items_held=len(heap)) is False
    assert policy.status()["gc_heap_grew"] is True
    del heap
    assert policy.check(items_held=0) is True


def test_a_small_heap_stays_frozen_until_max_frozen_seconds(policy, monkeypatch):
    gc.collect()
    assert policy.check(items_held=10) is False  # frozen, small, not for long
    assert policy.status()["gc_heap_grew"] is False

    monkeypatch.setattr(gcpolicy, "MAX_FROZEN_SECONDS", 0.0)

    assert policy.check(items_held=10) is True
    assert policy.status()["gc_frozen_for_seconds"] == 0


def churn(window, rounds: int) -> None:
    """A drain in balance: each round consumes the oldest item and makes a new one, so
    frees cancel allocations in the young generation's count (no collection comes)."""
    for n in range(rounds):
        window.pop(0)
        window.append([n])


def young_objects() -> int:
    return len(gc.get_objects(generation=0)) + len(gc.get_objects(generation=1))


def test_a_drain_in_balance_brings_a_young_collection_at_each_tick(policy):
    """Session 16: frees take one off gen 0's count as allocations add one, so a drain that
    makes items as fast as it consumes them brought no collection, and the young
    generation grew to the whole window; the collection that finally came walked it
    (16 ms in a drain of 10 M items).  bound_the_young, called every
    YOUNG_BOUND_SECONDS, collects the young generations when traffic brought none."""
    window = [[n] for n in range(20_000)]
    gc.collect()  # frozen: the window is old
    assert policy.bound_the_young(activity=0) is False  # no traffic yet; it notes that collection
    churn(window, 20_000)
    assert young_objects() >= 20_000  # what the old policy left: all of the window, young

    assert policy.bound_the_young(activity=1) is True  # traffic, and no collection since
    made = policy.young_collections
    for tick in range(2, 22):
        churn(window, 1_000)
        assert policy.bound_the_young(activity=tick) is True
        assert young_objects() < 1_000  # at most a tick's items
    assert policy.young_collections == made + 20
    assert policy.status()["gc_young_collections"] == policy.young_collections

    assert policy.bound_the_young(activity=21) is False  # no traffic: nothing to bound
    held = [[n] for n in range(2_000)]  # net allocations: the collector's own collection
    assert policy.bound_the_young(activity=22) is False  # one came by itself
    assert policy.young_collections == made + 20
    del held


def test_no_young_collection_is_forced_while_a_snapshot_copy_is_alive(policy, monkeypatch):
    """A snapshot's copy of a deep queue is one list of a reference to each item, and a
    collection walks all of it while it is young: forcing one each tick during
    ``erqctl compact`` of 1 M items held the hub 8.6-15.4 ms (against 0.7 without)."""
    gc.collect()
    policy.bound_the_young(activity=0)
    monkeypatch.setattr(RunCopy, "alive", 1)

    assert policy.bound_the_young(activity=1) is False
    assert policy.young_collections == 0

    monkeypatch.setattr(RunCopy, "alive", 0)
    assert policy.bound_the_young(activity=2) is True
