"""The storage seam (erqpy.storage.seam): the same operation sequences, run against the
journaled collection (real files in tmp_path) and the in-memory one, give the same
results.  Only seam names are used, as the operations layer may use only those."""

import pytest

from erqpy.errors import ClientError, LimitReached
from erqpy.events import EventBus
from erqpy.server.config import Settings
from erqpy.server.state import ServerStats
from erqpy.server.waiters import Waiter
from erqpy.storage import seam
from erqpy.storage.collection import QueueCollection
from erqpy.storage.datadir import DataDir
from erqpy.storage.memory import MemoryCollection
from erqpy.storage.syncer import Syncer

T0 = 1_700_000_000_000  # a fixed "now" in ms


@pytest.fixture(params=["journaled", "memory"])
def make(request, tmp_path):
    """``make(**settings)`` -> a collection of the parametrized kind."""
    made = []

    def build(**settings):
        settings = Settings(data_dir=str(tmp_path), **settings)
        if request.param == "journaled":
            collection = QueueCollection(DataDir(str(tmp_path)), settings, Syncer(), EventBus(), ServerStats())
        else:
            collection = MemoryCollection(settings)
        made.append(collection)
        return collection

    yield build
    for collection in made:
        collection.close_all()


def take_all(queue, now=T0):
    taken = []
    while (item := queue.remove(now=now)) is not None:
        taken.append(item.data)
    return taken


def test_both_implement_the_protocols(make):
    collection = make()
    assert isinstance(collection, seam.Collection)
    assert isinstance(collection.get_or_create(b"q"), seam.Queue)


def test_items_leave_in_order_with_ids_one_apart(make):
    queue = make().get_or_create(b"q")
    for data in (b"a", b"bb", b"ccc"):
        assert queue.add(data, flags=7, now=T0)
    assert (3, 6) == (queue.count, queue.bytes)
    assert queue.peek(now=T0).data == b"a"
    first, second = queue.remove(now=T0), queue.remove(now=T0)
    assert (b"a", 7, b"bb") == (first.data, first.flags, second.data)
    assert second.id == first.id + 1
    assert [b"ccc"] == take_all(queue)
    assert (0, 0, None, None) == (queue.count, queue.bytes, queue.remove(now=T0), queue.peek(now=T0))
    assert (3, 3) == (queue.stats.puts, queue.stats.gets)


def test_open_reads_are_confirmed_once_or_given_back_to_the_head(make):
    queue = make().get_or_create(b"q")
    for data in (b"a", b"b", b"c"):
        queue.add(data, now=T0)
    first = queue.remove(open_read=True, now=T0)
    second = queue.remove(open_read=True, now=T0)
    assert (1, 1) == (queue.count, queue.bytes)
    assert queue.confirm(first.id)
    assert not queue.confirm(first.id)
    assert not queue.unremove(first.id)
    assert queue.unremove(second.id)
    assert not queue.confirm(second.id)  # given back: no longer out
    assert (2, 2, 2, 1) == (queue.count, queue.bytes, queue.stats.transactions,
                            queue.stats.canceled_transactions)
    again = queue.remove(open_read=True, now=T0)
    assert (second.id, b"b") == (again.id, again.data)
    assert again.open_token != 0
    assert [b"c"] == take_all(queue)


def test_flush_empties_the_queue_but_leaves_open_reads_out(make):
    queue = make().get_or_create(b"q")
    for data in (b"a", b"b", b"c"):
        queue.add(data, now=T0)
    held = queue.remove(open_read=True, now=T0)
    assert 2 == queue.flush()
    assert (0, 0, 1) == (queue.count, queue.bytes, queue.stats.total_flushes)
    assert queue.unremove(held.id)
    assert [b"a"] == take_all(queue)
    queue.add(b"d", now=T0)
    assert queue.remove(now=T0).id == held.id + 3  # ids never go back, not even after a flush


def test_expired_items_are_never_returned(make):
    queue = make().get_or_create(b"q")
    queue.add(b"old", expires_ms=T0 + 10, now=T0)
    queue.add(b"older", expires_ms=T0 + 5, now=T0)
    queue.add(b"live", now=T0)
    queue.add(b"later", expires_ms=T0 + 10, now=T0)
    assert queue.peek(now=T0 + 9).data == b"old"
    assert queue.peek(now=T0 + 10).data == b"live"  # an item is dead at its expiry moment
    assert 2 == queue.stats.expired_items
    assert 0 == queue.discard_expired(now=T0 + 10)  # the head is live: nothing more
    assert b"live" == queue.remove(now=T0 + 10).data
    assert 1 == queue.discard_expired(now=T0 + 10)
    assert (0, 3) == (queue.count, queue.stats.expired_items)


def test_max_age_caps_every_items_life(make):
    queue = make(queues={"q": {"max_age": 1.0}}).get_or_create(b"q")
    queue.add(b"a", now=T0)
    queue.add(b"b", expires_ms=T0 + 5000, now=T0 + 500)
    assert queue.peek(now=T0 + 999).data == b"a"
    assert queue.peek(now=T0 + 1000).data == b"b"
    assert queue.remove(now=T0 + 1500) is None


def test_expired_items_move_to_expire_to(make):
    collection = make(queues={"q": {"expire_to": "dead"}})
    queue = collection.get_or_create(b"q")
    queue.add(b"stale", flags=3, expires_ms=T0 + 1, now=T0)
    queue.add(b"fresh", now=T0)
    assert b"fresh" == queue.remove(now=T0 + 2).data
    dead = collection.lookup(b"dead")
    assert dead.peek(now=T0 + 2).data == b"stale"
    assert dead.remove(now=T0 + 2).flags == 3


def test_size_limits_refuse_or_discard_the_head(make):
    collection = make(queues={"q": {"max_items": 2, "max_item_size": 4},
                              "d": {"max_items": 2, "max_size": 5, "discard_old_when_full": True}})
    refusing = collection.get_or_create(b"q")
    assert not refusing.add(b"12345", now=T0)
    assert refusing.add(b"a", now=T0) and refusing.add(b"b", now=T0)
    assert not refusing.add(b"c", now=T0)
    assert [b"a", b"b"] == take_all(refusing)
    discarding = collection.get_or_create(b"d")
    for data in (b"1", b"22", b"333"):
        assert discarding.add(data, now=T0)
    assert (2, 5, 1) == (discarding.count, discarding.bytes, discarding.stats.discarded)
    assert discarding.add(b"4444", now=T0)  # drops two heads to fit the size
    assert not discarding.add(b"666666", now=T0)  # larger than max_size: never fits
    assert [b"4444"] == take_all(discarding)


def test_names_lookup_and_fanout(make):
    collection = make()
    with pytest.raises(ClientError):
        collection.lookup(b"bad/name")
    assert collection.lookup(b"m") is None
    assert collection.get_for_read(b"m") is None  # a read never creates a plain queue
    child = collection.get_for_read(b"m+a")  # but subscribes to a master
    master = collection.get_or_create(b"m")
    assert {"m+a": child} == collection.children["m"]
    assert collection.put(master, b"x", 1, 0, T0)
    assert ([b"x"], [b"x"]) == (take_all(master), take_all(child))
    assert sorted(collection.queues) == ["m", "m+a"]
    collection.put(master, b"y", 0, 0, T0)
    assert (2, 2) == (collection.total_items, collection.total_bytes)
    assert 2 == collection.flush_all()


def test_fanout_only_masters_keep_nothing(make):
    collection = make(queues={"m": {"fanout_only": True, "max_item_size": 3}})
    master = collection.get_or_create(b"m")
    child = collection.get_or_create(b"m+a")
    assert collection.put(master, b"abc", 0, 0, T0)
    assert not collection.put(master, b"abcd", 0, 0, T0)
    assert (0, [b"abc"]) == (master.count, take_all(child))


def test_queue_and_fanout_limits(make):
    collection = make(max_queues=3, queues={"m": {"max_fanout_children": 1}})
    collection.get_or_create(b"m")
    collection.get_or_create(b"m+a")
    with pytest.raises(LimitReached):
        collection.get_or_create(b"m+b")
    collection.get_or_create(b"other")
    with pytest.raises(LimitReached):
        collection.get_or_create(b"fourth")


def test_adding_notifies_the_oldest_waiter_and_pass_on_the_next(make):
    queue = make().get_or_create(b"q")
    first, second = Waiter(), Waiter()
    queue.waiters.extend([first, second])
    queue.add(b"a", now=T0)
    assert (True, False) == (first.notified, second.notified)
    queue.pass_on()  # the first left without taking
    assert second.notified
    held = queue.remove(open_read=True, now=T0)
    third = Waiter()
    queue.waiters.append(third)
    queue.unremove(held.id)
    assert third.notified


def test_resume_notifies_as_many_waiters_as_items_wait(make):
    collection = make()
    queue = collection.get_or_create(b"q")
    collection.set_paused(queue, True)
    assert queue.paused
    waiters = [Waiter() for _ in range(3)]
    for data in (b"a", b"b"):
        queue.add(data, now=T0)
    queue.waiters.extend(waiters)
    collection.set_paused(queue, False)
    assert (False, [True, True, False]) == (queue.paused, [w.notified for w in waiters])


def test_delete_wakes_waiters_with_nothing_and_forgets_the_queue(make):
    collection = make()
    queue = collection.get_or_create(b"q")
    queue.add(b"a", now=T0)
    held = queue.remove(open_read=True, now=T0)
    waiter = Waiter()
    queue.waiters.append(waiter)
    assert collection.delete("q")
    assert not collection.delete("q")
    assert (True, False, True) == (waiter.event.is_set(), waiter.notified, queue.deleted)
    assert not queue.unremove(held.id)
    assert collection.lookup(b"q") is None
    assert collection.get_or_create(b"q").count == 0


def test_a_read_of_a_missing_queue_waits_for_its_creation(make):
    collection = make()
    awaited = collection.await_queue(b"later")
    waiter = Waiter()
    awaited.waiters.append(waiter)
    assert not awaited.deleted
    queue = collection.get_or_create(b"later")
    queue.add(b"x", now=T0)
    assert waiter.notified and list(queue.waiters) == []
    other = collection.await_queue(b"never")
    other.waiters.append(Waiter())
    collection.wake_all()
    assert other.waiters[0].event.is_set()
    other.waiters.clear()
    collection.release_awaited(other)
    assert collection.await_queue(b"never") is not other  # the entry was dropped


def test_maintain_gives_back_stale_reads_and_drops_expired_heads(make):
    collection = make(queues={"q": {"open_read_timeout": 1.0}})
    queue = collection.get_or_create(b"q")
    queue.add(b"held", now=T0)
    queue.add(b"stale", expires_ms=T0 + 1, now=T0)
    held = queue.remove(open_read=True, now=T0)
    collection.maintain()  # the real clock is far past T0
    assert queue.remove(now=T0 + 2).id == held.id  # given back to the head
    assert (0, 1) == (queue.count, queue.stats.expired_items)
    queue.add(b"gone", expires_ms=T0 + 1, now=T0)
    assert 1 == collection.flush_all_expired()


def test_new_settings_reach_live_queues(make):
    collection = make()
    queue = collection.get_or_create(b"q")
    changed = collection.apply_settings(Settings(data_dir="unused", queues={"q": {"max_items": 1}}))
    assert (["q"], 1) == (changed, queue.config.max_items)
    assert queue.add(b"a", now=T0) and not queue.add(b"b", now=T0)


def test_maintain_counts_the_items_held_in_memory(make):
    """What gcpolicy reads as the heap's size: waiting, open and delayed items, every
    queue."""
    collection = make()
    first, second = collection.get_or_create(b"first"), collection.get_or_create(b"second")
    for n in range(5):
        first.add(b"%d" % n, now=T0)
    second.add(b"open", now=T0)
    second.add(b"delayed", now=T0, due_ms=T0 + 3_600_000)
    second.remove(open_read=True, now=T0)
    assert 7 == collection.maintain()
    first.remove(now=T0)
    assert 6 == collection.maintain()
