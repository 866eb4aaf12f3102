"""The Syncer (erqpy.storage.syncer) over real journals: what each fsync policy leaves to
do, shutdown's sync, and group commit of concurrent ``always`` writers."""

import gevent
import pytest

from erqpy.storage.datadir import journal_path
from erqpy.storage.journal import Journal
from erqpy.storage.syncer import FSYNC_ALWAYS, FSYNC_INTERVAL, FSYNC_NEVER, Syncer


def new_journal(tmp_path, policy, syncer, name="q"):
    return Journal(journal_path(str(tmp_path), name), name, policy, syncer)


@pytest.mark.parametrize(
    "policy, dirty, seq",
    [(FSYNC_ALWAYS, True, 2), (FSYNC_INTERVAL, True, 0), (FSYNC_NEVER, False, 0)],
)
def test_append_marks_work_for_the_syncer_by_policy(tmp_path, policy, dirty, seq):
    """always counts writes to wait for; interval only marks dirty; never does neither."""
    syncer = Syncer()
    journal = new_journal(tmp_path, policy=policy, syncer=syncer)
    journal.open(lambda record: None)

    journal.append(journal.format.encode_add(1, 0, 1, 0, b"a"))
    journal.append(journal.format.encode_add(2, 0, 2, 0, b"b"))

    assert (dirty, seq) == (journal in syncer.dirty, syncer.write_seq)
    journal.close()


def test_sync_now_marks_everything_durable(tmp_path):
    """sync_now (shutdown) fsyncs every dirty journal and catches synced_seq up."""
    syncer = Syncer()
    journal = new_journal(tmp_path, policy=FSYNC_ALWAYS, syncer=syncer)
    journal.open(lambda record: None)
    journal.append(journal.format.encode_add(1, 0, 1, 0, b"a"))

    syncer.sync_now()

    assert (set(), 1, 1) == (syncer.dirty, syncer.write_seq, syncer.synced_seq)
    journal.close()


def test_concurrent_always_writers_share_one_fsync(tmp_path):
    """Writers that wait for durability at the same moment are released by one group fsync."""
    syncer = Syncer()
    journals = [new_journal(tmp_path, policy=FSYNC_ALWAYS, syncer=syncer, name=f"q{i}") for i in range(8)]
    for journal in journals:
        journal.open(lambda record: None)
    syncer.start()
    try:

        def writer(journal):
            journal.append(journal.format.encode_add(1, 0, 1, 0, b"payload"))
            syncer.wait_durable(syncer.write_seq)
            return syncer.synced_seq

        greenlets = [gevent.spawn(writer, journal) for journal in journals]
        gevent.joinall(greenlets, timeout=30, raise_error=True)
    finally:
        syncer.stop()
        for journal in journals:
            journal.close()

    assert [8] * 8 == [g.value for g in greenlets]
    assert (1, 8) == (syncer.fsync_count, syncer.synced_seq)
