"""A new queue's journal file, created by a worker thread while the hub serves.

Creating a file (``open(O_CREAT)``) on ext4 waits for a handle on the file system's
journal, which waits behind a commit that a concurrent fsync started: on a busy machine
5-30 ms, and a pipeline creating thousands of queues held the hub that long again and
again.  So the file and its header are made by gevent's worker thread (``make_files``
touches nothing but the file system) while the creating greenlet waits; the queue then
opens the file as it opens any journal it finds.  A crash in between leaves an empty or
header-only journal, which loads as an empty queue (nothing was acknowledged).

While the thread runs, other greenlets run: a second creation of the same name waits
for the first instead of making the file again, and the collection counts creations in
flight against ``max_queues`` and ``max_fanout_children``.
"""

import os

from gevent.event import Event

from erqpy.descriptors import is_exhausted
from erqpy.errors import JournalWriteError
from erqpy.storage import filewrite, records
from erqpy.storage.failpoints import failpoint
from erqpy.storage.datadir import file_mode, journal_path, record_long_name, unlink_quietly, write_all
from erqpy.storage.names import FANOUT_SEPARATOR


def make_files(data_dir: str, queue_name: str) -> None:
    """The queue's long-name file (if its name is hashed) and a journal holding a header,
    unless the journal exists already.  Not fsynced, as a journal the hub creates."""
    record_long_name(data_dir, queue_name)
    path = journal_path(data_dir, queue_name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, file_mode())
    except FileExistsError:
        return
    try:
        failpoint("create-before-header")
        write_all(fd, records.V2Format().encode_header(1))
    except OSError:
        os.close(fd)
        unlink_quietly(path)  # a full disk: leave nothing behind, as Journal._create
        raise
    os.close(fd)


class Creations:
    """The new queues whose files a worker thread is making, by name."""

    def __init__(self, datadir):
        self.datadir = datadir  # storage.datadir.DataDir (None for queues in memory only)
        self.pending: dict[str, Event] = {}

    def __len__(self) -> int:
        return len(self.pending)

    def __contains__(self, name: str) -> bool:
        return name in self.pending

    def children_of(self, master: str) -> int:
        prefix = master + FANOUT_SEPARATOR
        return sum(1 for name in self.pending if name.startswith(prefix))

    def wait_for(self, name: str) -> None:
        """Return once no creation of ``name`` is in flight (a greenlet, never the loop)."""
        for _ in range(1000):  # each wait ends with one creation; a thousand in a row is not a real case
            pending = self.pending.get(name)
            if pending is None:
                return
            pending.wait()

    def make(self, name: str) -> None:
        """Make the files of new queue ``name`` in the worker thread, this greenlet waiting."""
        done = self.pending[name] = Event()
        try:
            filewrite.off_the_hub(make_files, self.datadir.path, name)
        except OSError as exc:
            if not is_exhausted(exc):
                raise JournalWriteError(name, exc) from exc
            # Out of descriptors: the queue's own open closes idle files, then creates it.
        finally:
            del self.pending[name]
            done.set()
