"""Writing a new journal file, for ``journal.Journal.rewrite``: these functions touch
only the descriptors and bytes they are given, so a worker thread may run them while
the hub keeps serving."""

import os

import gevent

from erqpy.fairness import on_the_loop
from erqpy.storage.datadir import write_all
from erqpy.storage.syncer import fsync_dir


def off_the_hub(func, *args):
    """``func(*args)`` in gevent's worker thread, the calling greenlet waiting; inline when
    called from the event loop itself, which cannot wait (server/loop_serving)."""
    if on_the_loop():
        return func(*args)
    return gevent.get_hub().threadpool.apply(func, args)


#: A chunk that ends a step early: the producer has worked long without output.
STEP_BREAK = b""


def take_step(chunks, step: list, size: int, limit: int) -> tuple[list, int, bool]:
    """Add chunks to ``step`` until it holds ``limit`` bytes or a chunk is
    ``STEP_BREAK``: ``(step, its size, more)`` where ``more`` is False once ``chunks``
    is exhausted."""
    for chunk in chunks:
        if not chunk:
            return step, size, True
        step.append(chunk)
        size += len(chunk)
        if size >= limit:
            return step, size, True
    return step, size, False


def unlink_all(paths) -> None:
    """Delete these files; one already gone is no error."""
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def close_and_fsync_dir(fd: int, directory: str) -> None:
    """Close ``fd`` (unless -1), then fsync ``directory``."""
    try:
        if fd >= 0:
            os.close(fd)
    finally:
        fsync_dir(directory)


def append_synced(fd: int, data: bytes) -> int:
    """Append and fsync; a worker thread may run it (it touches only ``fd``)."""
    written = write_all(fd, data)
    os.fsync(fd)
    return written


def write_file(path: str, parts: list, mode: int, opener=os.open) -> None:
    """Create ``path`` holding ``parts``, fsynced: a small rewrite, on the hub."""
    fd = opener(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        batch = []
        batch_bytes = 0
        for part in parts:
            batch.append(part)
            batch_bytes += len(part)
            if batch_bytes >= 1 << 20:
                write_all(fd, b"".join(batch))
                batch.clear()
                batch_bytes = 0
        if batch:
            write_all(fd, b"".join(batch))
        os.fsync(fd)
    finally:
        os.close(fd)
