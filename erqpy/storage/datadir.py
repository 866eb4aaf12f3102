"""The data directory: its lock, the journals in it, and the persisted server status."""

import errno
import fcntl
import json
import logging
import os

from erqpy.errors import ServerHalt
from erqpy.storage.journal import JOURNAL_SUFFIX, NAME_SUFFIX, TEMP_MARK, file_mode, write_file_atomically

log = logging.getLogger("erqpy.datadir")

LOCK_NAME = "erqpy.lock"
STATUS_NAME = "status"
PAUSED_NAME = "paused.json"
STATUSES = ("up", "readonly", "quiescent")


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
