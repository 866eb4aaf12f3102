"""The data directory: its lock, the persisted server status, and every file name in it.

A queue's files are ``<stem>.journal`` (its journal), ``<stem>.<first id>.seg`` (segments,
read-behind), ``<stem>.name`` (the full name behind a hashed stem); any of them may be
followed by TEMP_MARK (a rewrite in progress), CORRUPT_MARK (a damaged copy kept for
inspection) or QUARANTINE_MARK (moved aside, unreadable).  Only this module spells them.
"""

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import time

from erqpy.errors import ServerHalt

log = logging.getLogger("erqpy.datadir")

LOCK_NAME = "erqpy.lock"
STATUS_NAME = "status"
PAUSED_NAME = "paused.json"
STATUSES = ("up", "readonly", "quiescent")

JOURNAL_SUFFIX = ".journal"
SEGMENT_SUFFIX = ".seg"
#: Marks a file being written by a rewrite; such files are deleted at start (Kestrel ~~).
TEMP_MARK = "~~"
#: Marks the copy of a journal in which replay found damage, kept for inspection.
CORRUPT_MARK = ".corrupt-"
#: Marks a file moved aside because its header is unreadable (``<file>.quarantined-<ms>``):
#: not a journal or segment name and no TEMP_MARK, so start-up neither loads nor deletes it.
QUARANTINE_MARK = ".quarantined-"

#: Queue names may be 250 bytes, but file names end at 255 and a queue's files add up to
#: 47 bytes to its name (``.<16 digits>.seg.quarantined-<ms>``).  A longer name is stored under a
#: stem of a prefix, ".h" and a hash; the "." cannot occur in a queue name, so no real
#: name can collide with it.  The full name is kept beside it in ``<stem>.name``.
MAX_STEM_BYTES = 200
NAME_SUFFIX = ".name"


def file_stem(queue_name: str) -> str:
    """The part of a queue's file names that stands for the queue."""
    raw = queue_name.encode()
    if len(raw) <= MAX_STEM_BYTES:
        return queue_name
    prefix = raw[:120].decode("utf-8", "ignore")
    return f"{prefix}.h{hashlib.sha256(raw).hexdigest()[:40]}"


def journal_path(data_dir: str, queue_name: str) -> str:
    return os.path.join(data_dir, file_stem(queue_name) + JOURNAL_SUFFIX)


def record_long_name(data_dir: str, queue_name: str) -> None:
    """Keep the full name of a queue whose files use a hashed stem (see file_stem)."""
    stem = file_stem(queue_name)
    if stem == queue_name:
        return
    path = os.path.join(data_dir, stem + NAME_SUFFIX)
    if os.path.exists(path):
        return
    write_file_atomically(path, queue_name.encode())


def segment_path(data_dir: str, queue_name: str, first_id: int) -> str:
    return os.path.join(data_dir, f"{file_stem(queue_name)}.{first_id:016d}{SEGMENT_SUFFIX}")


_SEGMENT_NAME = re.compile(r"(.+)\.(\d{16})" + re.escape(SEGMENT_SUFFIX) + "$")


def segments_by_stem(data_dir: str) -> dict[str, list[tuple[int, str]]]:
    """Every segment file in ``data_dir`` by file stem, each list sorted: one directory
    listing for a whole start-up (``list_segments`` per queue is quadratic in files)."""
    found = {}
    for name in os.listdir(data_dir):
        match = _SEGMENT_NAME.match(name)
        if match:
            found.setdefault(match.group(1), []).append((int(match.group(2)), os.path.join(data_dir, name)))
    for files in found.values():
        files.sort()
    return found


def list_segments(data_dir: str, queue_name: str) -> list[tuple[int, str]]:
    pattern = re.compile(re.escape(file_stem(queue_name)) + r"\.(\d{16})" + re.escape(SEGMENT_SUFFIX) + "$")
    found = []
    for name in os.listdir(data_dir):
        match = pattern.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(data_dir, name)))
    return sorted(found)


def temporary_path(path: str) -> str:
    """Where a rewrite of ``path`` is written before it is renamed over it."""
    return path + TEMP_MARK


def damaged_copy_path(path: str) -> str:
    """Where a copy of ``path`` is kept before a rewrite drops damaged records."""
    return f"{path}{CORRUPT_MARK}{int(time.time() * 1000)}"


def quarantine_file(path: str) -> str:
    """Rename ``path`` to ``<path>.quarantined-<ms>``: not a journal or segment name, and
    no temporary mark, so it is neither loaded nor cleaned up at start."""
    target = f"{path}{QUARANTINE_MARK}{int(time.time() * 1000)}"
    os.rename(path, target)
    return target


#: Permissions of every file the server creates in the data directory (``[server]
#: file_mode``, set once at start): queue payloads are nobody else's business.
_file_mode = 0o600


def set_file_mode(mode: int) -> None:
    global _file_mode
    _file_mode = mode


def file_mode() -> int:
    return _file_mode


def write_file_atomically(path: str, data: bytes) -> None:
    """``path`` holds ``data`` or what it held before, never a mix: temporary file,
    fsync, rename."""
    tmp = temporary_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _file_mode)
    try:
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        unlink_quietly(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def write_all(fd: int, data: bytes) -> int:
    view = memoryview(data)
    total = 0
    while total < len(data):
        total += os.write(fd, view[total:])
    return total


class DataDir:
    def __init__(self, path: str, dir_mode: int = 0o700):
        self.path = os.path.abspath(path)
        self.dir_mode = dir_mode
        self._lock_fd = -1

    def lock(self) -> None:
        """Create the directory and take an exclusive lock on it, or halt.

        flock is released by the kernel when the process dies, even by SIGKILL, so a
        crashed server never leaves a stale lock behind.
        """
        if not os.path.isdir(self.path):
            os.makedirs(self.path, mode=self.dir_mode, exist_ok=True)
            os.chmod(self.path, self.dir_mode)  # makedirs' mode is cut by the umask
        fd = os.open(os.path.join(self.path, LOCK_NAME), os.O_RDWR | os.O_CREAT, file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                holder = ""
                try:
                    with open(os.path.join(self.path, LOCK_NAME)) as f:
                        holder = f.read().strip()
                except OSError:
                    pass
                raise ServerHalt(
                    f"data directory {self.path} is in use by another erqpy server"
                    + (f" (pid {holder})" if holder else "")
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def clean_temporary_files(self) -> list[str]:
        """Delete leftovers of interrupted rewrites; their originals are intact."""
        removed = []
        for name in os.listdir(self.path):
            if TEMP_MARK in name:
                os.unlink(os.path.join(self.path, name))
                removed.append(name)
                log.warning("removed leftover temporary file %s", name)
        return removed

    def queue_names(self) -> list[str]:
        names = []
        for name in sorted(os.listdir(self.path)):
            if name.endswith(JOURNAL_SUFFIX) and TEMP_MARK not in name:
                stem = name[: -len(JOURNAL_SUFFIX)]
                if "." in stem:  # a long name stored under a hashed stem
                    try:
                        with open(os.path.join(self.path, stem + NAME_SUFFIX), "rb") as f:
                            stem = f.read().decode("utf-8")
                    except (OSError, UnicodeDecodeError):
                        log.error("journal %s has no readable %s file; skipped", name, NAME_SUFFIX)
                        continue
                names.append(stem)
        return names

    def read_status(self) -> str:
        try:
            with open(os.path.join(self.path, STATUS_NAME)) as f:
                status = f.read().strip().lower()
        except FileNotFoundError:
            return "up"
        if status not in STATUSES:
            log.warning("ignoring unknown persisted status %r", status)
            return "up"
        return status

    def write_status(self, status: str) -> None:
        write_file_atomically(os.path.join(self.path, STATUS_NAME), (status + "\n").encode())

    def read_paused(self) -> set[str]:
        """Names of queues whose consumers are paused (``write_paused``)."""
        try:
            with open(os.path.join(self.path, PAUSED_NAME)) as f:
                names = json.load(f)
        except FileNotFoundError:
            return set()
        except ValueError as exc:
            log.warning("ignoring unreadable %s: %s", PAUSED_NAME, exc)
            return set()
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            log.warning("ignoring %s: not a list of queue names", PAUSED_NAME)
            return set()
        return set(names)

    def write_paused(self, names) -> None:
        """Persist the paused queue names atomically (temporary file, fsync, rename)."""
        write_file_atomically(os.path.join(self.path, PAUSED_NAME), json.dumps(sorted(names)).encode())
