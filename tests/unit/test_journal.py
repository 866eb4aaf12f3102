"""Journal files (erqpy.storage.journal) on a real directory: creation, append and
replay, a torn tail versus damage in the middle, atomic rewrite, write errors (the
Syncer's own tests are in test_syncer.py)."""

import os

import pytest

from erqpy.storage import records
from erqpy.errors import JournalWriteError
from erqpy.storage.datadir import TEMP_MARK, journal_path
from erqpy.storage.journal import DamagedHeader, Journal
from erqpy.storage.syncer import FSYNC_INTERVAL, FSYNC_NEVER, Syncer


def new_journal(tmp_path, policy=FSYNC_NEVER, syncer=None, name="q"):
    return Journal(journal_path(str(tmp_path), name), name, policy, syncer or Syncer())


def replay(tmp_path, name="q", next_id=1):
    """Open the journal again and collect what replay hands to ``apply``."""
    journal = new_journal(tmp_path, name=name)
    seen = []
    report, header_next_id = journal.open(seen.append, next_id)
    return journal, seen, report, header_next_id


def summary(recs):
    return [(r.opcode, r.item_id, r.data) for r in recs]


def write_items(tmp_path, payloads, name="q"):
    """A journal with one ADD per payload; returns the offset where each record starts."""
    journal = new_journal(tmp_path, name=name)
    journal.open(lambda record: None)
    offsets = []
    for item_id, data in enumerate(payloads, start=1):
        offsets.append(journal.size)
        journal.append(journal.format.encode_add(item_id, 0, 1000 + item_id, 0, data))
    journal.close()
    return offsets


# -- creation and replay ----------------------------------------------------------------------


def test_open_creates_a_file_holding_only_a_header(tmp_path):
    """A missing journal is created with a header carrying the caller's next_id."""
    journal = new_journal(tmp_path)

    report, next_id = journal.open(lambda record: None, next_id=17)
    journal.close()

    with open(journal.path, "rb") as f:
        content = f.read()
    assert journal.format.encode_header(17) == content
    assert (17, 0, records.HEADER_SIZE) == (next_id, report.records, journal.size)


def test_appended_records_replay_in_order(tmp_path):
    """Every appended record comes back through apply, in write order, with a clean report."""
    journal = new_journal(tmp_path)
    journal.open(lambda record: None)
    journal.append(journal.format.encode_add(1, 0, 1, 0, b"one"))
    journal.append(journal.format.encode_add(2, 0, 2, 0, b"two"))
    journal.append(journal.format.encode_id_op(records.OP_OPEN, 1))
    journal.append(journal.format.encode_flush())
    size = journal.size
    journal.close()

    again, seen, report, _ = replay(tmp_path)

    expected = [(1, 1, b"one"), (1, 2, b"two"), (3, 1, b""), (6, 0, b"")]
    assert expected == summary(seen)
    assert (4, 0, [], size, size) == (
        report.records, report.torn_tail_bytes, report.corrupt, report.valid_end, again.size,
    )
    assert os.path.getsize(again.path) == size


def test_append_after_replay_goes_to_the_end_of_the_file(tmp_path):
    """A reopened journal appends after the replayed records, not over them."""
    write_items(tmp_path, [b"a", b"b"])
    journal, _seen, _report, _ = replay(tmp_path)
    journal.append(journal.format.encode_add(3, 0, 3, 0, b"c"))
    journal.close()

    _journal, seen, _report, _ = replay(tmp_path)

    assert [b"a", b"b", b"c"] == [r.data for r in seen]


def test_zeroed_short_header_starts_an_empty_journal(tmp_path):
    """A file cut short while its header was written (nothing acknowledged) starts empty."""
    path = journal_path(str(tmp_path), "q")
    with open(path, "wb") as f:
        f.write(b"\0" * 10)

    journal, seen, report, next_id = replay(tmp_path, next_id=5)

    assert ([], 5, records.HEADER_SIZE) == (seen, next_id, os.path.getsize(path))


def test_foreign_file_is_refused_not_overwritten(tmp_path):
    """A file with a wrong header raises BadHeader and keeps its bytes."""
    path = journal_path(str(tmp_path), "q")
    content = b"this is not a journal, but someone's data" * 3
    with open(path, "wb") as f:
        f.write(content)

    with pytest.raises(records.BadHeader):
        new_journal(tmp_path).open(lambda record: None)

    with open(path, "rb") as f:
        assert content == f.read()


# -- torn tail versus damage in the middle ----------------------------------------------------------


@pytest.mark.parametrize("keep", [1, 5, records.RECORD_HEAD_SIZE, records.RECORD_HEAD_SIZE + 20])
def test_torn_tail_is_truncated_and_earlier_records_kept(tmp_path, keep):
    """A last record cut anywhere (head or body) is dropped and the file truncated there."""
    offsets = write_items(tmp_path, [b"first", b"second", b"third item, longer"])
    path = journal_path(str(tmp_path), "q")
    os.truncate(path, offsets[2] + keep)

    journal, seen, report, _ = replay(tmp_path)

    assert [b"first", b"second"] == [r.data for r in seen]
    assert (keep, [], offsets[2]) == (report.torn_tail_bytes, report.corrupt, report.valid_end)
    assert (offsets[2], offsets[2]) == (os.path.getsize(path), journal.size)
    assert report.damaged is False


def test_torn_tail_then_append_leaves_a_clean_file(tmp_path):
    """After truncating a torn tail, new records follow the last good one and replay cleanly."""
    offsets = write_items(tmp_path, [b"first", b"second"])
    os.truncate(journal_path(str(tmp_path), "q"), offsets[1] + 12)
    journal, _seen, _report, _ = replay(tmp_path)
    journal.append(journal.format.encode_add(3, 0, 3, 0, b"third"))
    journal.close()

    _journal, seen, report, _ = replay(tmp_path)

    assert [b"first", b"third"] == [r.data for r in seen]
    assert (0, []) == (report.torn_tail_bytes, report.corrupt)


@pytest.mark.parametrize(
    "where",
    ["crc", "head_crc", "length", "opcode", "data"],
)
def test_damage_in_the_middle_is_skipped_and_reported(tmp_path, where):
    """A damaged record followed by good ones is reported as corrupt with its offset and
    size, the records on both sides are replayed, and nothing is truncated."""
    payloads = [b"first", b"second, the damaged one", b"third", b"fourth"]
    offsets = write_items(tmp_path, payloads)
    path = journal_path(str(tmp_path), "q")
    size = os.path.getsize(path)
    # Version 2 head: length 0-3, opcode 4, body_crc 5-8, head_crc 9-12, then the body.
    flip_at = {"length": 1, "opcode": 4, "crc": 6, "head_crc": 10, "data": 13 + 28 + 3}[where]
    with open(path, "r+b") as f:
        f.seek(offsets[1] + flip_at)
        byte = f.read(1)[0]
        f.seek(offsets[1] + flip_at)
        f.write(bytes((byte ^ 0x5A,)))

    journal, seen, report, _ = replay(tmp_path)

    assert [b"first", b"third", b"fourth"] == [r.data for r in seen]
    assert [(offsets[1], offsets[2] - offsets[1])] == report.corrupt
    assert (0, True, 3) == (report.torn_tail_bytes, report.damaged, report.records)
    assert (size, size) == (os.path.getsize(path), journal.size)


def test_garbage_in_the_middle_is_skipped_and_reported(tmp_path):
    """Bytes that are no record at all, between good records, are reported with their length."""
    offsets = write_items(tmp_path, [b"first", b"second"])
    path = journal_path(str(tmp_path), "q")
    with open(path, "rb") as f:
        content = f.read()
    garbage = b"\xde\xad\xbe\xef" * 10
    with open(path, "wb") as f:
        f.write(content[: offsets[1]] + garbage + content[offsets[1] :])

    _journal, seen, report, _ = replay(tmp_path)

    assert [b"first", b"second"] == [r.data for r in seen]
    assert [(offsets[1], len(garbage))] == report.corrupt


def test_damage_in_the_middle_and_a_torn_tail_are_reported_separately(tmp_path):
    """One file can have both: the damage is in ``corrupt``, the tail in ``torn_tail_bytes``."""
    offsets = write_items(tmp_path, [b"one", b"two", b"three", b"four"])
    path = journal_path(str(tmp_path), "q")
    with open(path, "r+b") as f:
        f.seek(offsets[1] + 20)
        f.write(b"\xff\xff")
    os.truncate(path, offsets[3] + 15)

    _journal, seen, report, _ = replay(tmp_path)

    assert [b"one", b"three"] == [r.data for r in seen]
    assert ([(offsets[1], offsets[2] - offsets[1])], 15) == (report.corrupt, report.torn_tail_bytes)
    assert offsets[3] == os.path.getsize(path)


def test_damage_in_the_last_record_counts_as_a_torn_tail(tmp_path):
    """With no good record after it, a damaged last record cannot be told from a torn one."""
    offsets = write_items(tmp_path, [b"one", b"two"])
    path = journal_path(str(tmp_path), "q")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size - 1)
        f.write(b"!")

    _journal, seen, report, _ = replay(tmp_path)

    assert [b"one"] == [r.data for r in seen]
    assert ([], size - offsets[1]) == (report.corrupt, report.torn_tail_bytes)


# -- rewrite ----------------------------------------------------------------------------------


def test_rewrite_replaces_the_file_atomically_and_keeps_appending(tmp_path):
    """rewrite leaves exactly header + given records, no temp file, and later appends land after."""
    write_items(tmp_path, [b"old-%d" % i for i in range(50)])
    journal, _seen, _report, _ = replay(tmp_path)
    live = [journal.format.encode_add(49, 0, 49, 0, b"old-48"), journal.format.encode_add(50, 0, 50, 0, b"old-49")]

    journal.rewrite(51, iter(live))
    journal.append(journal.format.encode_id_op(records.OP_REMOVE, 49))
    journal.close()

    expected_size = records.HEADER_SIZE + sum(map(len, live)) + records.RECORD_HEAD_SIZE + 8
    assert (1, expected_size) == (journal.rewrites, journal.size)
    assert [] == [n for n in os.listdir(tmp_path) if TEMP_MARK in n]
    _journal, seen, report, next_id = replay(tmp_path)
    assert [(1, 49, b"old-48"), (1, 50, b"old-49"), (2, 49, b"")] == summary(seen)
    assert (51, 3, expected_size) == (next_id, report.records, os.path.getsize(journal.path))


def test_rewrite_to_nothing_keeps_next_id(tmp_path):
    """An empty rewrite still carries next_id, so ids never go backwards after compaction."""
    write_items(tmp_path, [b"a", b"b", b"c"])
    journal, _seen, _report, _ = replay(tmp_path)

    journal.rewrite(4, iter(()))
    journal.close()

    _journal, seen, _report, next_id = replay(tmp_path, next_id=1)
    assert ([], 4) == (seen, next_id)


def test_rewrite_of_many_records_spans_write_batches(tmp_path):
    """A rewrite larger than one write batch (1 MiB) keeps every record."""
    journal = new_journal(tmp_path)
    journal.open(lambda record: None)
    payload = b"x" * 4000
    live = [journal.format.encode_add(i, 0, i, 0, payload + b"%d" % i) for i in range(1, 601)]

    journal.rewrite(601, iter(live))
    journal.close()

    _journal, seen, _report, _ = replay(tmp_path)
    assert [payload + b"%d" % i for i in range(1, 601)] == [r.data for r in seen]


def test_rewrite_removes_the_journal_from_the_dirty_set(tmp_path):
    """A rewrite fsyncs its own file, so the syncer no longer counts the journal dirty."""
    syncer = Syncer()
    journal = new_journal(tmp_path, policy=FSYNC_INTERVAL, syncer=syncer)
    journal.open(lambda record: None)
    journal.append(journal.format.encode_add(1, 0, 1, 0, b"a"))
    assert {journal} == syncer.dirty

    journal.rewrite(2, iter(()))

    assert set() == syncer.dirty
    journal.close()


def test_keep_damaged_copy_holds_the_same_bytes(tmp_path):
    """The copy kept before a repair is byte-for-byte the journal as found."""
    write_items(tmp_path, [b"a" * 3000, b"b"])
    journal, _seen, _report, _ = replay(tmp_path)

    copy = journal.keep_damaged_copy()
    journal.close()

    assert copy.startswith(journal.path + ".corrupt-")
    with open(copy, "rb") as a, open(journal.path, "rb") as b:
        assert b.read() == a.read()


def test_erase_deletes_the_file(tmp_path):
    """erase closes the journal and removes its file (the queue was deleted)."""
    journal = new_journal(tmp_path)
    journal.open(lambda record: None)

    journal.erase()

    assert (False, -1) == (os.path.exists(journal.path), journal.fd)


# -- write errors -----------------------------------------------------------------------------


def test_failed_append_raises_and_does_not_count_the_record(tmp_path):
    """A write that fails (disk full, here /dev/full) raises JournalWriteError and
    leaves ``size`` as it was, so nothing is acknowledged."""
    journal = new_journal(tmp_path)
    journal.open(lambda record: None)
    size = journal.size
    os.close(journal.fd)
    journal.fd = os.open("/dev/full", os.O_WRONLY)

    with pytest.raises(JournalWriteError) as caught:
        journal.append(journal.format.encode_add(1, 0, 1, 0, b"data"))

    assert ("q", size) == (caught.value.queue, journal.size)
    journal.close()


# -- headers that cannot be read, and version 1 files ------------------------------------------


@pytest.mark.parametrize("content", [b"ERQJ\x02\x00\x00\x00\x01\x02", b"ERQJ" + b"\x07" * 40])
def test_unreadable_header_raises_damaged_header_naming_the_file(tmp_path, content):
    """A short or damaged header is DamagedHeader (a BadHeader) with the path and reason,
    and the file keeps its bytes for whoever looks at it."""
    path = journal_path(str(tmp_path), "q")
    with open(path, "wb") as f:
        f.write(content)

    with pytest.raises(DamagedHeader) as caught:
        new_journal(tmp_path).open(lambda record: None)

    assert (path, True) == (caught.value.path, bool(caught.value.reason))
    with open(path, "rb") as f:
        assert content == f.read()


def v1_file(path, next_id, bodies):
    """A version 1 journal, laid out by hand from the records docstring."""
    import struct
    import zlib

    header = struct.pack("<4sHHQ", b"ERQJ", 1, 0, next_id)
    out = [header + struct.pack("<II", zlib.crc32(header), 0)]
    for opcode, body in bodies:
        out.append(struct.pack("<IIB", zlib.crc32(bytes((opcode,)) + body), len(body), opcode) + body)
    with open(path, "wb") as f:
        f.write(b"".join(out))


def test_version_1_journal_is_replayed_and_rewritten_in_the_current_format(tmp_path):
    """Old data directories still start: a version 1 file replays, is rewritten in
    version 2 (so appends never mix formats), and replays the same again."""
    import struct

    path = journal_path(str(tmp_path), "q")
    add = lambda i, data: (records.OP_ADD, struct.pack("<QIqq", i, 0, 100 + i, 0) + data)  # noqa: E731
    v1_file(path, 7, [add(1, b"one"), add(2, b"two"), (records.OP_REMOVE, struct.pack("<Q", 1))])

    journal, seen, report, next_id = replay(tmp_path)
    journal.append(journal.format.encode_add(3, 0, 103, 0, b"three"))
    journal.close()

    assert ([(1, 1, b"one"), (1, 2, b"two"), (2, 1, b"")], 7, 1) == (summary(seen), next_id, report.upgraded_from)
    with open(path, "rb") as f:
        fmt, _ = records.decode_header(f.read())
    assert records.JOURNAL_VERSION == fmt.version
    _journal, seen, report, next_id = replay(tmp_path)
    assert ([(1, 1, b"one"), (1, 2, b"two"), (2, 1, b""), (1, 3, b"three")], 7, 0) == (
        summary(seen), next_id, report.upgraded_from)


def test_damage_is_copied_aside_before_anything_is_dropped(tmp_path):
    """The damaged copy is the file as found, even when replay truncates part of it."""
    write_items(tmp_path, [b"one", b"two", b"three"])
    path = journal_path(str(tmp_path), "q")
    with open(path, "rb") as f:
        found = bytearray(f.read())
    found[records.HEADER_SIZE + 1] ^= 0x01  # the first head: the search resumes at "two"
    with open(path, "wb") as f:
        f.write(bytes(found) + b"\x01\x02\x03")  # and a torn tail

    _journal, seen, report, _ = replay(tmp_path)

    assert [b"two", b"three"] == [r.data for r in seen]
    with open(report.damaged_copy, "rb") as f:
        assert bytes(found) + b"\x01\x02\x03" == f.read()


def test_only_the_grouping_greenlet_leaves_its_records_pending(tmp_path):
    """A connection's greenlet groups its records (``Syncer.grouping`` names it); if it
    yields meanwhile (a compaction's thread handoff), another greenlet's append must
    be written at once: that greenlet's reply does not wait for a group write, so a
    record left pending would be acknowledged before it is in the file."""
    import gevent

    syncer = Syncer()
    grouped = Journal(journal_path(str(tmp_path), "a"), "a", FSYNC_INTERVAL, syncer, groups=True)
    other = Journal(journal_path(str(tmp_path), "b"), "b", FSYNC_INTERVAL, syncer, groups=True)
    for journal in (grouped, other):
        journal.open(lambda record: None)
    sizes = {}

    def grouping_greenlet():
        syncer.grouping = gevent.getcurrent()
        try:
            grouped.append(grouped.format.encode_add(1, 0, 1000, 0, b"grouped"))
            gevent.sleep(0.05)  # yields with grouping on (a thread handoff)
        finally:
            syncer.grouping = None

    def other_greenlet():
        before = os.path.getsize(other.path)
        other.append(other.format.encode_add(1, 0, 1000, 0, b"written"))
        sizes["other"] = os.path.getsize(other.path) - before
        sizes["owner"] = syncer.grouping

    first = gevent.spawn(grouping_greenlet)
    gevent.sleep(0)  # it has appended and yielded
    second = gevent.spawn(other_greenlet)
    gevent.joinall([first, second])

    assert sizes["owner"] is first  # the other greenlet ran while the first one grouped
    assert other not in syncer.pending and sizes["other"] > len(b"written")
    assert grouped not in syncer.pending  # written at the turn's end
    assert os.path.getsize(grouped.path) > records.HEADER_SIZE + len(b"grouped")
    grouped.close()
    other.close()
