"""QueueCollection: creating queues costs the same whatever is in the data directory."""

import os

from erqpy.storage.collection import QueueCollection
from erqpy.server.config import Settings
from erqpy.storage.datadir import DataDir
from erqpy.events import EventBus
from erqpy.storage.syncer import Syncer
from erqpy.server.state import ServerStats


def make_collection(path, **settings):
    settings = Settings(data_dir=str(path), **settings)
    return QueueCollection(DataDir(str(path)), settings, Syncer(), EventBus(), ServerStats())


def test_creating_a_queue_lists_the_data_directory_never(tmp_path, monkeypatch):
    """Start-up lists the directory once; a queue created later needs no listing, so
    creation stays O(1) however many queues (files) there are."""
    first = make_collection(tmp_path)
    for n in range(20):
        first.create(f"old{n}").add(b"x")
    first.close_all()
    collection = make_collection(tmp_path)
    assert 20 == collection.load_all()
    listings = []
    real_listdir = os.listdir

    def counting_listdir(path="."):
        listings.append(path)
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", counting_listdir)

    for n in range(50):
        collection.get_or_create(b"new%d" % n).add(b"y")

    assert [] == listings
    assert 70 == len(collection.queues)
    collection.close_all()


def test_a_read_creates_no_queue_but_a_fanout_child(tmp_path):
    """get_for_read: None for a missing queue (nothing made), a new child for ``m+x``."""
    collection = make_collection(tmp_path)

    assert collection.get_for_read(b"plain") is None
    child = collection.get_for_read(b"m+sub")

    assert ["m+sub"] == list(collection.queues)
    assert {"m": {"m+sub": child}} == collection.children
    assert not any(name.startswith("plain") for name in os.listdir(tmp_path))
    collection.close_all()


def test_queues_without_a_table_share_one_config_and_a_reload_applies_changes_to_each(tmp_path):
    """A reload with many queues builds and compares one config for all the queues
    without a table of their own (it cost a QueueConfig and a comparison per queue)."""
    collection = make_collection(tmp_path, queues={"default": {"max_items": 10}, "own": {"max_items": 3}})
    for name in ("a", "b", "c", "own", "own+child"):
        collection.get_or_create(name.encode())
    configs = {name: q.config for name, q in collection.queues.items()}
    assert configs["a"] is configs["b"] is configs["c"]
    assert (10, 3, 3) == (configs["a"].max_items, configs["own"].max_items, configs["own+child"].max_items)

    unchanged = Settings(data_dir=str(tmp_path), queues={"default": {"max_items": 10}, "own": {"max_items": 3}})
    assert [] == collection.apply_settings(unchanged)
    assert collection.queues["a"].config is collection.queues["c"].config is unchanged.queue_config("x")

    changed = Settings(data_dir=str(tmp_path), queues={"default": {"max_items": 20}, "own": {"max_items": 3}})
    assert ["a", "b", "c"] == sorted(collection.apply_settings(changed))
    queues = collection.queues
    assert (20, 20, 3) == (queues["a"].config.max_items, queues["b"].config.max_items, queues["own"].config.max_items)


class _FaultyOpenReads(dict):
    """A queue's open reads that fail to be counted: a fault inside one queue."""

    def __len__(self):
        raise RuntimeError("a fault in one queue")


def test_one_queues_fault_ends_neither_the_sweep_nor_its_count(tmp_path):
    """The sweep counts each queue's items in memory (gcpolicy reads the sum) inside that
    queue's own try: a queue that fails is logged and skipped, and the queues after it
    are still counted and maintained (their expired items dropped)."""
    collection = make_collection(tmp_path)
    first, broken, last = (collection.create(name) for name in ("first", "broken", "last"))
    first.add(b"a")
    first.add(b"b")
    broken.add(b"c")
    last.add(b"expired", expires_ms=1)  # long past
    last.add(b"kept")
    broken.open = _FaultyOpenReads()

    held = collection.maintain()

    assert 2 + 2 == held  # first's and last's, counted before expiry; not broken's
    assert [b"kept"] == [item.data for item in last.items]
    assert 1 == last.stats.expired_items
    broken.open = {}
    collection.close_all()
