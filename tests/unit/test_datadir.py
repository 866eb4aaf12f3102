"""The data directory (erqpy.storage.datadir) on a real directory: every file name a queue
uses, which names start-up loads, deletes or leaves alone, and the status and pause
files."""

import os
import stat

import pytest

from erqpy.storage import datadir
from erqpy.storage.datadir import DataDir


def touch(path) -> None:
    with open(path, "wb") as f:
        f.write(b"x")


def test_short_names_are_their_own_stem_and_long_ones_are_hashed_below_the_file_name_limit():
    assert "q" == datadir.file_stem("q")
    long_name = "é" * 125  # 250 bytes
    other = "é" * 124 + "e"
    stem = datadir.file_stem(long_name)
    assert "." in stem  # no queue name has one: a hashed stem cannot be a real name
    assert stem == datadir.file_stem(long_name) != datadir.file_stem(other)
    worst = f"{stem}.{2**53:016d}{datadir.SEGMENT_SUFFIX}{datadir.QUARANTINE_MARK}{2**41}"
    assert len(worst.encode()) <= 255


def test_a_long_name_is_kept_beside_its_journal_and_listed_under_its_real_name(tmp_path):
    long_name = "n" * 240
    datadir.record_long_name(str(tmp_path), long_name)
    datadir.record_long_name(str(tmp_path), "short")  # nothing to keep
    touch(datadir.journal_path(str(tmp_path), long_name))
    touch(datadir.journal_path(str(tmp_path), "short"))
    touch(tmp_path / "orphan.h0123.journal")  # a hashed stem without its .name file
    assert sorted(["short", long_name]) == sorted(DataDir(str(tmp_path)).queue_names())
    assert not (tmp_path / ("short" + datadir.NAME_SUFFIX)).exists()


def test_segments_are_found_by_stem_in_id_order(tmp_path):
    for first_id in (300, 2, 41):
        touch(datadir.segment_path(str(tmp_path), "q", first_id))
    touch(datadir.segment_path(str(tmp_path), "q+child", 7))
    touch(datadir.temporary_path(datadir.segment_path(str(tmp_path), "q", 500)))
    expected = [(i, datadir.segment_path(str(tmp_path), "q", i)) for i in (2, 41, 300)]
    assert expected == datadir.list_segments(str(tmp_path), "q")
    found = datadir.segments_by_stem(str(tmp_path))
    assert {"q": expected, "q+child": [(7, datadir.segment_path(str(tmp_path), "q+child", 7))]} == found


def test_start_up_deletes_temporary_files_only_and_loads_no_damaged_or_quarantined_copy(tmp_path):
    journal = datadir.journal_path(str(tmp_path), "q")
    touch(journal)
    touch(datadir.temporary_path(journal))
    touch(datadir.damaged_copy_path(journal))
    touch(datadir.journal_path(str(tmp_path), "bad"))
    moved = datadir.quarantine_file(datadir.journal_path(str(tmp_path), "bad"))
    data = DataDir(str(tmp_path))
    assert [os.path.basename(datadir.temporary_path(journal))] == data.clean_temporary_files()
    assert ["q"] == data.queue_names()
    assert os.path.exists(moved)
    names = sorted(os.listdir(tmp_path))
    assert 3 == len(names) and any(datadir.CORRUPT_MARK in n for n in names)


def test_an_atomic_write_leaves_no_temporary_file_and_uses_the_file_mode(tmp_path):
    path = str(tmp_path / "status")
    datadir.set_file_mode(0o640)
    try:
        datadir.write_file_atomically(path, b"up\n")
        datadir.write_file_atomically(path, b"readonly\n")
        assert 0o640 == stat.S_IMODE(os.stat(path).st_mode)
    finally:
        datadir.set_file_mode(0o600)
    assert ["status"] == os.listdir(tmp_path)
    assert b"readonly\n" == (tmp_path / "status").read_bytes()


def test_status_and_paused_names_round_trip_and_bad_files_read_as_defaults(tmp_path):
    data = DataDir(str(tmp_path))
    assert ("up", set()) == (data.read_status(), data.read_paused())
    data.write_status("quiescent")
    data.write_paused({"b", "a"})
    assert ("quiescent", {"a", "b"}) == (data.read_status(), data.read_paused())
    (tmp_path / datadir.STATUS_NAME).write_text("sideways\n")
    (tmp_path / datadir.PAUSED_NAME).write_text('{"not": "a list"}')
    assert ("up", set()) == (data.read_status(), data.read_paused())


@pytest.mark.parametrize("content", ["[1, 2]", "not json"])
def test_unreadable_paused_files_pause_nothing(tmp_path, content):
    (tmp_path / datadir.PAUSED_NAME).write_text(content)
    assert set() == DataDir(str(tmp_path)).read_paused()
