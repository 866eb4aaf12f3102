"""The delivery count of a journaled queue (``max_deliveries``): live, across a replay
of the journal, and as seen by event subscribers."""

from erqpy.events import EventBus
from erqpy.server.config import Settings
from erqpy.server.state import ServerStats
from erqpy.storage.collection import QueueCollection
from erqpy.storage.datadir import DataDir
from erqpy.storage.journal import Syncer


def make_collection(path, events=None, **queue_settings):
    settings = Settings(data_dir=str(path), queues={"default": queue_settings})
    return QueueCollection(DataDir(str(path)), settings, Syncer(), events or EventBus(), ServerStats())


def deliver_and_give_back(queue, times):
    for _ in range(times):
        item = queue.remove(open_read=True)
        assert queue.unremove(item.id)
    return item


def test_each_reliable_read_counts_and_a_plain_one_does_not(tmp_path):
    collection = make_collection(tmp_path)
    queue = collection.get_or_create(b"q")
    queue.add(b"a")

    item = deliver_and_give_back(queue, 3)

    assert 3 == item.deliveries
    assert item is queue.remove()
    assert 3 == item.deliveries
    collection.close_all()


def test_replay_rebuilds_the_count_from_open_records_and_from_a_snapshot(tmp_path):
    collection = make_collection(tmp_path)
    queue = collection.get_or_create(b"q")
    queue.add(b"a")
    queue.add(b"b")
    deliver_and_give_back(queue, 2)
    queue.compact()  # the OPEN records go; a DELIVERIES record keeps the 2
    deliver_and_give_back(queue, 1)  # one more OPEN after the snapshot
    collection.close_all()

    replayed = make_collection(tmp_path)
    replayed.load_all()
    queue = replayed.queues["q"]

    assert [(b"a", 3), (b"b", 0)] == [(item.data, item.deliveries) for item in queue.items]
    replayed.close_all()


def test_subscribers_see_dead_lettered_items(tmp_path):
    """An active event bus must know the event, or the move would raise in ``emit``."""
    events = EventBus()
    seen = []
    events.subscribe("dead_lettered", lambda event, name, item: seen.append((name, item.data)))
    collection = make_collection(tmp_path, events, max_deliveries=1)
    queue = collection.get_or_create(b"q")
    queue.add(b"poison")
    deliver_and_give_back(queue, 1)

    assert queue.remove(open_read=True) is None

    assert [("q", b"poison")] == seen
    assert [b"poison"] == [item.data for item in collection.queues["q_errors"].items]
    collection.close_all()


def test_a_delivery_made_while_a_large_snapshot_is_written_counts_once(tmp_path):
    """The snapshot reads delivery counts as it encodes (not in a pass over every item
    at its start): a delivery made meanwhile is an OPEN record the rewrite captures, so
    the snapshot must write the count from before it, or a replay counts it twice.  The
    prioritised item is encoded last, after the other greenlet delivered it again."""
    import gevent

    from tests.unit.test_readbehind import T0, open_queue

    config = dict(max_memory_size=64 << 20, max_journal_size=16 << 20)
    queue = open_queue(tmp_path, **config)
    queue.add(b"urgent", priority=1, now=T0)
    for n in range(400):  # about 2 MB: written by the worker thread, in steps
        queue.add(b"%05d" % n + b"y" * 5000, now=T0)
    deliver_and_give_back(queue, 2)
    during = []

    def deliver_meanwhile():
        during.append(queue.journal._capture is not None)
        item = queue.remove(open_read=True, now=T0)
        during.append((item.data, item.deliveries))
        assert queue.unremove(item.id)

    worker = gevent.spawn(deliver_meanwhile)
    queue.compact()
    worker.join()
    queue.close()
    queue = open_queue(tmp_path, **config)
    replayed = queue.remove(now=T0)

    assert [True, (b"urgent", 3)] == during
    assert (b"urgent", 3) == (replayed.data, replayed.deliveries)
    queue.close()
