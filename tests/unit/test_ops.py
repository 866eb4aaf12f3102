"""The operations layer (erqpy.server.ops): every queue operation and the status rules,
without a protocol.

Storage is reached only through the ``backend`` fixture, parametrized over the two
implementations of the storage seam: the journaled QueueCollection in tmp_path and the
in-memory MemoryCollection.  A test that needs files asks for ``journaled_backend``.
"""

import dataclasses
import os

import gevent
import pytest

from erqpy.errors import JournalWriteError, LimitReached, Unavailable
from erqpy.events import EventBus
from erqpy.server import ops, waiters
from erqpy.server.config import Settings
from erqpy.server.state import ServerState, ServerStats
from erqpy.storage.collection import QueueCollection
from erqpy.storage.datadir import DataDir
from erqpy.storage.journal import Syncer
from erqpy.storage.memory import MemoryCollection
from erqpy.storage.pqueue import now_ms


@pytest.fixture
def settings(tmp_path):
    return Settings(data_dir=str(tmp_path / "data"), fsync="always",
                    queues={"small": {"max_memory_size": 64}, "tiny": {"max_items": 1}})


@pytest.fixture
def syncer():
    syncer = Syncer()
    syncer.start()
    yield syncer
    syncer.stop()


@pytest.fixture
def journaled_backend(settings, syncer):
    """The journaled QueueCollection in tmp_path."""
    datadir = DataDir(settings.data_dir)
    datadir.lock()
    collection = QueueCollection(datadir, settings, syncer, EventBus(), ServerStats())
    yield collection
    collection.close_all()
    datadir.unlock()


@pytest.fixture(params=["journaled", "memory"])
def backend(request, settings):
    """The queues' storage, once per implementation of the seam."""
    if request.param == "journaled":
        return request.getfixturevalue("journaled_backend")
    collection = MemoryCollection(settings, EventBus(), ServerStats())
    request.addfinalizer(collection.close_all)
    return collection


def _state(settings, collection, syncer):
    state = ServerState(settings)
    state.collection = collection
    state.syncer = syncer
    return state


@pytest.fixture
def server(settings, backend, syncer):
    """The state the rules read (status) over ``backend``."""
    return _state(settings, backend, syncer)


@pytest.fixture
def journaled_server(settings, journaled_backend, syncer):
    """As ``server``, for what only a journal has: files, fsyncs, read-behind."""
    return _state(settings, journaled_backend, syncer)


def wait_with_gevent(line, timeout, take):
    """A front end's wait, for a caller with no client socket to watch."""
    return waiters.wait_for_item(line, timeout, take, lambda: False)


def fill(server, name, *payloads):
    queue = ops.queue_for_write(server, name)
    for payload in payloads:
        assert ops.put(server, queue, payload)
    return queue


def drain(server, queue):
    taken = []
    while (item := ops.take(server, queue)) is not None:
        taken.append(item.data)
    return taken


# -- put and take ---------------------------------------------------------------------------


def test_put_then_take_is_first_in_first_out(server):
    queue = fill(server, b"q", b"a", b"b", b"c")

    assert [b"a", b"b", b"c"] == drain(server, queue)
    assert ops.take(server, queue) is None


def test_take_of_a_missing_queue_is_none_and_creates_nothing(server, backend):
    assert ops.take(server, backend.get_for_read(b"nosuch")) is None
    assert [] == list(backend.queues)


def test_put_refused_by_the_queue_is_false(server):
    queue = fill(server, b"tiny", b"one")

    assert not ops.put(server, queue, b"two")
    assert 1 == ops.depth(queue)


def test_put_on_a_master_feeds_its_fanout_children(server, backend):
    child = backend.get_for_read(b"m+sub")
    master = fill(server, b"m", b"event")

    assert [b"event"] == drain(server, child)
    assert [b"event"] == drain(server, master)


def test_queue_for_write_passes_on_the_limits(server, backend, settings):
    backend.apply_settings(dataclasses.replace(settings, max_queues=1))
    fill(server, b"first")

    with pytest.raises(LimitReached):
        ops.queue_for_write(server, b"second")


def test_expiry_given_to_put_is_applied(server):
    queue = ops.queue_for_write(server, b"q")
    ops.put(server, queue, b"old", expires_ms=now_ms() - 1)
    ops.put(server, queue, b"new")

    assert [b"new"] == drain(server, queue)


# -- reliable reads ---------------------------------------------------------------------------


def test_open_read_is_held_until_confirmed(server):
    queue = fill(server, b"q", b"a", b"b")
    item = ops.take(server, queue, open_read=True)

    assert ops.still_open(queue, item.id)
    assert 1 == ops.depth(queue)
    assert ops.confirm(queue, item.id)
    assert not ops.still_open(queue, item.id)
    assert not ops.confirm(queue, item.id)
    assert [b"b"] == drain(server, queue)


def test_abort_gives_the_read_back_to_the_head(server):
    queue = fill(server, b"q", b"a", b"b")
    item = ops.take(server, queue, open_read=True)

    assert ops.abort(queue, item.id)

    assert not ops.abort(queue, item.id)
    assert [b"a", b"b"] == drain(server, queue)


def test_a_read_of_a_deleted_queue_is_no_longer_open(server):
    queue = fill(server, b"q", b"a")
    item = ops.take(server, queue, open_read=True)

    ops.delete(server, queue)

    assert not ops.still_open(queue, item.id)


def test_peek_leaves_the_item(server):
    queue = fill(server, b"q", b"a")

    _queue, first = ops.take_or_wait(server, queue, b"q", peek=True)
    _queue, again = ops.take_or_wait(server, queue, b"q", peek=True)

    assert (b"a", b"a") == (first.data, again.data)
    assert [b"a"] == drain(server, queue)


def test_a_reads_own_delivery_bound_dead_letters_an_item_handed_out_that_often(server, backend):
    """``get q/open/max_deliveries=N``: the bound of one reader, the queue sets none."""
    queue = fill(server, b"q", b"poison", b"fine")
    for _ in range(2):
        _queue, item = ops.take_or_wait(server, queue, b"q", open_read=True)
        assert ops.abort(queue, item.id)

    _queue, unbounded = ops.take_or_wait(server, queue, b"q", peek=True)
    _queue, bounded = ops.take_or_wait(server, queue, b"q", open_read=True, max_deliveries=2)

    assert (b"poison", b"fine") == (unbounded.data, bounded.data)
    assert [b"poison"] == drain(server, backend.lookup(b"q_errors"))
    assert 1 == ops.queue_stats(server, queue)["dead_lettered"]


def test_the_tighter_of_the_queues_and_the_reads_bound_applies(server, backend, settings):
    settings.queues["capped"] = {"max_deliveries": 1}
    queue = fill(server, b"capped", b"poison")
    _queue, item = ops.take_or_wait(server, queue, b"capped", open_read=True)
    assert ops.abort(queue, item.id)

    _queue, looser = ops.take_or_wait(server, queue, b"capped", open_read=True, max_deliveries=5)

    assert looser is None
    assert [b"poison"] == drain(server, backend.lookup(b"capped_errors"))


def test_open_if_makes_the_take_an_open_read(server):
    """A front end that cannot be sure its reply is read takes an open read."""
    queue = fill(server, b"q", b"a", b"b")

    _queue, held = ops.take_or_wait(server, queue, b"q", open_if=lambda: True)
    _queue, plain = ops.take_or_wait(server, queue, b"q", open_if=lambda: False)

    assert ops.still_open(queue, held.id)
    assert not ops.still_open(queue, plain.id)


# -- waits --------------------------------------------------------------------------------------


def test_a_waiting_take_gets_the_next_put(server):
    queue = fill(server, b"q")
    waiting = gevent.spawn(ops.take_or_wait, server, queue, b"q", 5.0, wait_with_gevent)
    gevent.idle()
    assert not waiting.ready()

    fill(server, b"q", b"late")

    _queue, item = waiting.get(timeout=5)
    assert b"late" == item.data
    assert 0 == ops.depth(queue)


def test_a_wait_on_a_missing_queue_gets_the_queue_a_write_creates(server, backend):
    waiting = gevent.spawn(ops.take_or_wait, server, None, b"later", 5.0, wait_with_gevent)
    gevent.idle()
    assert [] == list(backend.queues)

    created = fill(server, b"later", b"first")

    queue, item = waiting.get(timeout=5)
    assert (created, b"first") == (queue, item.data)
    assert {} == backend.awaited  # the line of waiters is given up with its last waiter


def test_a_wait_with_nothing_put_ends_at_its_timeout(server):
    queue = fill(server, b"q")

    assert (queue, None) == ops.take_or_wait(server, queue, b"q", 0.05, wait_with_gevent)
    assert (None, None) == ops.take_or_wait(server, None, b"nosuch", 0.05, wait_with_gevent)


def test_a_waiting_peek_passes_the_item_on_to_the_next_waiter(server):
    queue = fill(server, b"q")
    peeking = gevent.spawn(ops.take_or_wait, server, queue, b"q", 5.0, wait_with_gevent, peek=True)
    gevent.idle()
    taking = gevent.spawn(ops.take_or_wait, server, queue, b"q", 5.0, wait_with_gevent)
    gevent.idle()

    fill(server, b"q", b"x")

    assert b"x" == peeking.get(timeout=5)[1].data
    assert b"x" == taking.get(timeout=5)[1].data
    assert 0 == ops.depth(queue)


def test_delete_ends_the_waits_on_the_queue(server):
    queue = fill(server, b"q")
    waiting = gevent.spawn(ops.take_or_wait, server, queue, b"q", 5.0, wait_with_gevent)
    gevent.idle()

    assert ops.delete(server, queue)

    assert (queue, None) == waiting.get(timeout=5)


# -- flush, delete, pause, compact -------------------------------------------------------------


def test_flush_removes_what_waits_but_not_open_reads(server):
    queue = fill(server, b"q", b"a", b"b", b"c")
    item = ops.take(server, queue, open_read=True)

    assert 2 == ops.flush(server, queue)

    assert 0 == ops.depth(queue)
    assert ops.still_open(queue, item.id)
    assert 0 == ops.flush(server, None)


def test_flush_all_and_flush_all_expired_count_over_every_queue(server):
    one = ops.queue_for_write(server, b"one")
    two = ops.queue_for_write(server, b"two")
    for queue in (one, two):
        ops.put(server, queue, b"gone", expires_ms=1)
        ops.put(server, queue, b"kept")

    assert 2 == ops.flush_all_expired(server)
    assert 0 == ops.flush_expired(server, one)  # nothing left to expire
    assert 2 == ops.flush_all(server)
    assert {"one": 0, "two": 0} == ops.depths(server)


def test_delete_forgets_the_queue(server, backend):
    queue = fill(server, b"q", b"a")

    assert ops.delete(server, queue)

    assert "q" not in backend.queues
    assert not ops.delete(server, None)


def test_a_paused_queue_takes_writes_and_hands_out_nothing(server):
    queue = fill(server, b"q", b"a")

    ops.set_paused(server, queue, True)
    assert ops.put(server, queue, b"b")
    assert ops.take(server, queue) is None
    assert (queue, None) == ops.take_or_wait(server, queue, b"q", peek=True)

    ops.set_paused(server, queue, False)
    assert [b"a", b"b"] == drain(server, queue)


def test_resume_wakes_a_waiting_take(server):
    queue = fill(server, b"q", b"a")
    ops.set_paused(server, queue, True)
    waiting = gevent.spawn(ops.take_or_wait, server, queue, b"q", 5.0, wait_with_gevent)
    gevent.sleep(0.05)
    assert not waiting.ready()

    ops.set_paused(server, queue, False)

    assert b"a" == waiting.get(timeout=5)[1].data


def test_compact_reports_the_journal_before_and_after(journaled_server):
    server = journaled_server
    queue = fill(server, b"q", *[b"x" * 100] * 20)
    drain(server, queue)

    before, after = ops.compact(queue)

    assert before > after


# -- figures ------------------------------------------------------------------------------------


def test_depth_counts_items_read_behind_on_disk(journaled_server):
    """``small`` keeps 64 bytes in memory: most of its items wait on disk, and every
    figure of its depth counts them."""
    server = journaled_server
    queue = fill(server, b"small", *[b"%02d" % n + b"." * 30 for n in range(10)])

    assert 10 == ops.depth(queue)
    assert len(ops.head_items(queue, 100)) < 10
    assert 10 == ops.queue_stats(server, queue)["items"]
    assert {"small": 10} == ops.depths(server)


def test_queue_stats_name_the_children_of_a_master(server, backend):
    backend.get_for_read(b"m+b")
    backend.get_for_read(b"m+a")
    master = fill(server, b"m", b"x")

    assert "m+a,m+b" == ops.queue_stats(server, master)["children"]


def test_head_items_are_left_in_the_queue(server):
    queue = fill(server, b"q", b"a", b"b", b"c")

    assert [b"a", b"b"] == [item.data for item in ops.head_items(queue, 2)]
    assert 3 == ops.depth(queue)


# -- the status rules ---------------------------------------------------------------------------

WRITES = {
    "queue_for_write": lambda server, queue: ops.queue_for_write(server, b"other"),
    "put": lambda server, queue: ops.put(server, queue, b"new"),
    "flush": lambda server, queue: ops.flush(server, queue),
    "flush_all": lambda server, queue: ops.flush_all(server),
    "flush_expired": lambda server, queue: ops.flush_expired(server, queue),
    "flush_all_expired": lambda server, queue: ops.flush_all_expired(server),
    "delete": lambda server, queue: ops.delete(server, queue),
}
READS = {
    "take": lambda server, queue: ops.take(server, queue),
    "take open": lambda server, queue: ops.take(server, queue, open_read=True),
    "peek": lambda server, queue: ops.take_or_wait(server, queue, b"q", peek=True),
    "wait": lambda server, queue: ops.take_or_wait(server, queue, b"q", 1.0, wait_with_gevent),
    "wait on a missing queue": lambda server, queue: ops.take_or_wait(server, None, b"x", 1.0, wait_with_gevent),
}


def expired_and_open(server):
    """A queue with an expired item, a live one and an open read: what every write would
    change."""
    queue = ops.queue_for_write(server, b"q")
    ops.put(server, queue, b"open")
    ops.put(server, queue, b"expired", expires_ms=1)
    ops.put(server, queue, b"live")
    opened = ops.take(server, queue, open_read=True)
    return queue, opened


@pytest.mark.parametrize("status", ["readonly", "quiescent"])
@pytest.mark.parametrize("write", sorted(WRITES))
def test_writes_are_refused_unless_the_server_is_up(server, backend, status, write):
    queue, _opened = expired_and_open(server)
    server.status = status

    with pytest.raises(Unavailable) as refused:
        WRITES[write](server, queue)

    assert f"server is {status}" == str(refused.value.reason)
    assert (["q"], 2) == (list(backend.queues), ops.depth(queue))  # the expired one too


@pytest.mark.parametrize("read", sorted(READS))
def test_reads_are_refused_when_quiescent(server, read):
    queue, _opened = expired_and_open(server)
    server.status = "quiescent"

    with pytest.raises(Unavailable) as refused:
        READS[read](server, queue)

    assert "server is quiescent" == refused.value.reason
    assert 2 == ops.depth(queue)


def test_reads_are_served_when_readonly(server):
    queue, _opened = expired_and_open(server)
    server.status = "readonly"

    assert b"live" == ops.take_or_wait(server, queue, b"q", peek=True)[1].data
    assert b"live" == ops.take(server, queue, open_read=True).data


@pytest.mark.parametrize("status", ["readonly", "quiescent"])
def test_confirm_and_abort_are_never_refused(server, status):
    queue = fill(server, b"q", b"a", b"b")
    first = ops.take(server, queue, open_read=True)
    second = ops.take(server, queue, open_read=True)
    server.status = status

    assert ops.confirm(queue, first.id)
    assert ops.abort(queue, second.id)
    server.status = "up"
    assert [b"b"] == drain(server, queue)


@pytest.mark.parametrize("status", ["readonly", "quiescent"])
def test_pause_is_administration_not_refused_by_the_status(server, status):
    queue = fill(server, b"q", b"a")
    server.status = status

    ops.set_paused(server, queue, True)

    assert queue.paused


# -- durability ---------------------------------------------------------------------------------


def test_wait_durable_returns_once_the_writes_since_the_mark_are_fsynced(journaled_server, syncer):
    server = journaled_server
    mark = ops.write_mark(server)
    fill(server, b"q", b"a")
    assert syncer.synced_seq < syncer.write_seq

    new_mark = ops.wait_durable(server, mark)

    assert syncer.synced_seq >= syncer.write_seq == new_mark > mark


def test_wait_durable_with_nothing_written_does_not_fsync(journaled_server, syncer):
    server = journaled_server
    fill(server, b"q", b"a")
    mark = ops.wait_durable(server, 0)
    rounds = syncer.fsync_count

    assert mark == ops.wait_durable(server, mark)
    assert rounds == syncer.fsync_count


def test_wait_durable_raises_when_the_fsync_fails(journaled_server):
    """The writes since the mark may not be on disk: the wait says so, so that no front
    end acknowledges them.  The journal's descriptor is made a pipe, which fsync refuses
    (so this one needs the journaled backend)."""
    server = journaled_server
    queue = fill(server, b"q")
    mark = ops.write_mark(server)
    ops.put(server, queue, b"a")
    read_end, write_end = os.pipe()
    saved = os.dup(queue.journal.fd)
    os.dup2(read_end, queue.journal.fd)
    try:
        with pytest.raises(JournalWriteError):
            ops.wait_durable(server, mark)
    finally:
        os.dup2(saved, queue.journal.fd)
        for fd in (saved, read_end, write_end):
            os.close(fd)
