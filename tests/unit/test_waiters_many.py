"""waiters.wait_for_item over several lines (``get a/any b/any``): one reader in every
line at once; a line's turn it did not use passes to that line's next reader.  Real
journaled queues in tmp_path, real greenlets."""

import gevent
import pytest

from erqpy.events import EventBus
from erqpy.server import waiters
from erqpy.server.config import Settings
from erqpy.server.state import ServerStats
from erqpy.storage.collection import QueueCollection
from erqpy.storage.datadir import DataDir
from erqpy.storage.syncer import Syncer

pytestmark = pytest.mark.unit

WAIT = 5.0


@pytest.fixture
def queues(tmp_path):
    settings = Settings(data_dir=str(tmp_path))
    collection = QueueCollection(DataDir(str(tmp_path)), settings, Syncer(), EventBus(), ServerStats())
    yield collection.create("a"), collection.create("b")
    collection.close_all()


def first_of(*lines):
    def take():
        for line in lines:
            item = line.remove()
            if item is not None:
                return item
        return None
    return take


def test_an_item_on_either_line_wakes_the_reader_and_it_leaves_both(queues):
    a, b = queues
    reader = gevent.spawn(waiters.wait_for_item, [a, b], WAIT, first_of(a, b), lambda: False)
    gevent.sleep(0.01)
    assert (1, 1) == (len(a.waiters), len(b.waiters))

    b.add(b"on b")

    assert b"on b" == bytes(reader.get(timeout=WAIT).data)
    assert (0, 0) == (len(a.waiters), len(b.waiters))


def test_a_turn_the_reader_did_not_use_goes_to_the_lines_next_reader(queues):
    """Items land on a and b before the two-line reader runs: both lines notify it; it
    takes a's, and b's turn passes to b's own reader, which would otherwise wait on."""
    a, b = queues
    both = gevent.spawn(waiters.wait_for_item, [a, b], WAIT, first_of(a, b), lambda: False)
    gevent.sleep(0.01)
    only_b = gevent.spawn(waiters.wait_for_item, b, WAIT, b.remove, lambda: False)
    gevent.sleep(0.01)

    a.add(b"on a")
    b.add(b"on b")

    assert b"on a" == bytes(both.get(timeout=WAIT).data)
    assert b"on b" == bytes(only_b.get(timeout=1.0).data)


def test_a_lost_race_keeps_the_readers_place_at_the_head(queues):
    """Notified by b, but the item was taken meanwhile: the reader stays first in b's
    line and gets the next item there before a later reader."""
    a, b = queues
    both = gevent.spawn(waiters.wait_for_item, [a, b], WAIT, first_of(a, b), lambda: False)
    gevent.sleep(0.01)
    later = gevent.spawn(waiters.wait_for_item, b, WAIT, b.remove, lambda: False)
    gevent.sleep(0.01)

    b.add(b"stolen")
    assert b"stolen" == bytes(b.remove().data)  # before the notified reader runs
    gevent.sleep(0.01)
    b.add(b"next")

    assert b"next" == bytes(both.get(timeout=WAIT).data)
    b.add(b"last")
    assert b"last" == bytes(later.get(timeout=WAIT).data)
