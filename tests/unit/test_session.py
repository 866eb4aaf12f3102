"""Session: the open reads of one connection, on real journaled queues in tmp_path.

What a session promises (erqpy/server/session.py): its open reads are its own until it
confirms or gives them back; ``finish`` gives every one back once, the oldest ending at
the head; a read that stopped being its own (given back by ``open_read_timeout`` and
opened elsewhere, or on a queue deleted meanwhile) is never touched again.
"""

import pytest

from erqpy.events import EventBus
from erqpy.server.config import Settings
from erqpy.server.session import Session, give_back
from erqpy.server.state import ServerStats
from erqpy.storage.collection import QueueCollection
from erqpy.storage.datadir import DataDir
from erqpy.storage.syncer import Syncer

pytestmark = pytest.mark.unit


def make_collection(path):
    settings = Settings(data_dir=str(path))
    return QueueCollection(DataDir(str(path)), settings, Syncer(), EventBus(), ServerStats())


@pytest.fixture
def collection(tmp_path):
    collection = make_collection(tmp_path)
    yield collection
    collection.close_all()


def filled(collection, name, *values):
    queue = collection.create(name)
    for value in values:
        assert queue.add(value)
    return queue


def waiting(queue):
    return [bytes(item.data) for item in queue.items]


def open_reads(session, queue, count):
    items = []
    for _ in range(count):
        item = queue.remove(open_read=True)
        session.add_open(queue, item)
        items.append(item)
    return items


def test_finish_gives_every_read_back_oldest_at_the_head_and_only_once(collection, tmp_path):
    jobs = filled(collection, "jobs", b"a", b"b", b"c")
    mail = filled(collection, "mail", b"x", b"y")
    session = Session()
    open_reads(session, jobs, 2)
    open_reads(session, mail, 1)
    assert [b"c"] == waiting(jobs)

    session.finish()

    assert [b"a", b"b", b"c"] == waiting(jobs)
    assert [b"x", b"y"] == waiting(mail)
    assert {} == jobs.open == mail.open
    assert 0 == session.open_count("jobs")
    # A second finish (the connection's end seen twice) gives nothing back twice.
    taken = jobs.remove()
    session.finish()
    assert [b"b", b"c"] == waiting(jobs)
    assert b"a" == bytes(taken.data)

    # The give-backs are journaled: a restart finds the same order.
    collection.close_all()
    again = make_collection(tmp_path)
    again.load_all()
    assert [b"b", b"c"] == waiting(again.queues["jobs"])
    assert [b"x", b"y"] == waiting(again.queues["mail"])
    again.close_all()


def test_close_oldest_confirms_all_or_nothing(collection):
    jobs = filled(collection, "jobs", b"a", b"b", b"c")
    session = Session()
    first, second = open_reads(session, jobs, 2)

    assert session.close_oldest("jobs", 3) is False  # more than are open: nothing closed
    assert session.close_oldest("jobs", 0) is False
    assert [first.id, second.id] == list(jobs.open)

    assert session.close_oldest("jobs", 1) is True
    assert [second.id] == list(jobs.open)
    assert 1 == session.open_count("jobs")
    assert session.close_oldest("jobs") is True
    assert {} == jobs.open
    assert session.close_oldest("jobs") is False
    assert session.close_oldest("never-opened") is False

    session.finish()
    assert [b"c"] == waiting(jobs)  # confirmed reads are not given back


def test_abort_oldest_gives_back_the_oldest_only(collection):
    jobs = filled(collection, "jobs", b"a", b"b", b"c")
    session = Session()
    open_reads(session, jobs, 2)

    assert session.abort_oldest("jobs") is True

    assert [b"a", b"c"] == waiting(jobs)
    assert 1 == session.open_count("jobs")
    assert session.abort_oldest("other") is False


def test_a_read_given_back_and_opened_by_another_session_is_no_longer_ours(collection):
    """open_read_timeout gives a read back; another connection opens the same item.
    The first session must neither confirm nor give back the second one's read."""
    jobs = filled(collection, "jobs", b"a", b"b")
    first = Session()
    (item,) = open_reads(first, jobs, 1)
    assert jobs.unremove(item.id)  # what the stale-read sweep does
    second = Session()
    (again,) = open_reads(second, jobs, 1)
    assert again.id == item.id

    assert 0 == first.open_count("jobs")
    assert first.close_oldest("jobs") is False
    assert first.abort_oldest("jobs") is False
    first.finish()
    assert [item.id] == list(jobs.open)  # still the second session's
    assert second.close_oldest("jobs") is True
    assert [b"b"] == waiting(jobs)


def test_a_read_on_a_deleted_queue_never_reaches_the_queue_made_again(collection):
    jobs = filled(collection, "jobs", b"a")
    session = Session()
    open_reads(session, jobs, 1)
    collection.delete("jobs")
    remade = filled(collection, "jobs", b"new")

    assert 0 == session.open_count("jobs")
    session.finish()

    assert [b"new"] == waiting(remade)
    assert {} == remade.open


def test_give_back_puts_reads_back_newest_first_and_counts_what_went_back(collection):
    jobs = filled(collection, "jobs", b"a", b"b", b"c", b"d")
    items = [jobs.remove(open_read=True) for _ in range(3)]
    jobs.confirm(items[1].id)  # no longer open: skipped, not counted

    count = give_back([(jobs, item.id) for item in items])

    assert 2 == count
    assert [b"a", b"c", b"d"] == waiting(jobs)
    assert {} == jobs.open
    assert 0 == give_back([])
