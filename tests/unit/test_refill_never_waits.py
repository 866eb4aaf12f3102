"""A refill while memory still holds items takes only the segment pages the page cache
holds (``readahead.read_cached``, preadv2 with RWF_NOWAIT), so that a removal never waits
for the device while there is something to serve (issue 12: draining 10 M items, the main
thread was found waiting for a page in the refill's ``pread``).  Pages are dropped from the cache for real
(``posix_fadvise`` DONTNEED after an fsync), checked with ``mincore``, and the read-ahead
thread is kept off these files, so what is cached at the first try is known.  A read that
finds a page not cached starts the kernel's own read-ahead of it (Linux 6.x), so later
tries may find it cached: only the first one is pinned down."""

import ctypes
import mmap
import os

from erqpy.storage import readahead
from erqpy.storage.readahead import READ_AHEAD
from tests.unit.test_readbehind import T0, drain, open_queue, segments

KIB = b"w" * 1024
ITEMS = 600  # about 600 KiB: 64 KiB in memory, the rest in one segment
SENT = [b"%06d" % n + KIB for n in range(ITEMS)]
PAGE = mmap.PAGESIZE


def deep_queue(tmp_path):
    queue = open_queue(tmp_path, max_memory_size=64 * 1024, max_journal_size=16 << 20)
    for data in SENT:
        queue.add(data, now=T0)
    assert 1 == len(segments(tmp_path)) and queue.disk_count > 400
    # The thread would read these pages back into the cache at any moment: with its
    # frontier far ahead it is asked for nothing.
    queue.store.ahead.until = 1 << 40
    queue.store.ahead.next_asked = True
    return queue


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def cached_pages(path) -> list[bool]:
    """Which pages of the file the page cache holds (``mincore``, which reads nothing)."""
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            vec = ctypes.create_string_buffer(-(-size // PAGE))
            assert 0 == _libc.mincore(addr, size, vec), os.strerror(ctypes.get_errno())
            return [bool(byte & 1) for byte in vec.raw]
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)


def drop_from_cache(path, start: int) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # only clean pages can be dropped
        os.posix_fadvise(fd, start, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    # What the test stands on.
    pages = cached_pages(path)
    assert not any(pages[start // PAGE:]), "the page cache kept pages"
    assert all(pages[: start // PAGE]), "pages before the dropped ones are not cached"


def segment_path(tmp_path) -> str:
    return str(tmp_path / segments(tmp_path)[0])


def remove_until_the_first_refill(queue) -> list:
    """Remove items until one removal leaves memory under the refill mark (that removal
    tried a refill that may not wait)."""
    taken = []
    while queue.mem_bytes >= queue._refill_below:
        taken.append(queue.remove(now=T0).data)
    assert len(queue.items) > 1  # memory still holds items: that refill could not wait
    return taken


def test_a_refill_while_memory_holds_items_reads_no_page_that_is_not_cached(tmp_path):
    queue = deep_queue(tmp_path)
    drop_from_cache(segment_path(tmp_path), 0)
    on_disk = queue.disk_count
    not_cached = READ_AHEAD.not_cached

    taken = remove_until_the_first_refill(queue)

    assert on_disk == queue.disk_count  # nothing loaded ...
    assert 1 == READ_AHEAD.not_cached - not_cached  # ... because its first page was not cached
    assert SENT == taken + drain(queue)  # later refills (the last one waits) bring the rest


def test_a_refill_takes_the_records_on_cached_pages_and_stops_at_the_first_page_that_is_not(tmp_path):
    queue = deep_queue(tmp_path)
    segment = queue.store.segments[0]
    header = segment.format.header_size
    record_size = (segment.size - header) // queue.disk_count
    cached_end = 2 * PAGE
    drop_from_cache(segment.path, cached_end)
    on_disk = queue.disk_count

    # Only the first refill is pinned down: its read starts the kernel's read-ahead of
    # the first page that is not cached, and a later refill may find it there (a helper
    # that went on removing while memory stood over the mark failed 5 runs in 20).
    taken = []
    while queue.disk_count == on_disk:
        taken.append(queue.remove(now=T0).data)

    whole = (cached_end - header) // record_size  # the records wholly on cached pages
    assert whole == on_disk - queue.disk_count
    assert queue.store._cursor_offset == header + whole * record_size
    assert SENT == taken + drain(queue)


def test_without_reads_that_never_wait_a_refill_reads_as_before(tmp_path, monkeypatch):
    """Another kernel or file system: ``read_cached`` is a plain pread."""
    monkeypatch.setattr(readahead, "_nowait", 0)
    queue = deep_queue(tmp_path)
    on_disk = queue.disk_count
    taken = []
    while queue.disk_count == on_disk:
        taken.append(queue.remove(now=T0).data)
    assert len(queue.items) > 1  # refilled while memory still held items
    assert SENT == taken + drain(queue)


def test_a_file_system_without_reads_that_never_wait_turns_them_off_and_reads_plainly(monkeypatch):
    """tmpfs refuses RWF_NOWAIT (its pages are never on a device): the first refusal
    switches them off for the process, and that read and the later ones are plain."""
    assert "tmpfs" == mount_type("/dev/shm")
    monkeypatch.setattr(readahead, "_nowait", os.RWF_NOWAIT)
    fd = os.open("/dev/shm", os.O_RDWR | os.O_TMPFILE, 0o600)
    try:
        os.write(fd, b"t" * 3 * PAGE)
        assert b"t" * PAGE == readahead.read_cached(fd, PAGE, PAGE)
        assert 0 == readahead._nowait
        assert b"t" * 10 == readahead.read_cached(fd, 10, 0)
    finally:
        os.close(fd)


def mount_type(path: str) -> str:
    """The file system type of the mount at ``path`` (/proc/mounts)."""
    with open("/proc/mounts") as mounts:
        types = [fields[2] for fields in (line.split() for line in mounts) if fields[1] == path]
    return types[-1] if types else ""
