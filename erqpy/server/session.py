"""Per-connection state: the reliable reads a connection holds.

An open read belongs to its connection.  ``finish`` is called exactly once when the
connection ends, for any reason, and gives every open read back to the head of its queue,
oldest at the front.
"""

import itertools
import logging
from collections import deque

from erqpy.server import ops

log = logging.getLogger("erqpy.session")

_session_ids = itertools.count(1)


class Session:
    __slots__ = ("id", "open_reads", "finished")

    def __init__(self):
        self.id = next(_session_ids)
        # queue name -> deque of (queue, item id, open token), oldest first.  The queue
        # object is kept so that a read on a queue deleted (and perhaps re-created)
        # meanwhile is dropped instead of resurrecting or polluting the new queue.  The
        # token tells this open read from a later one of the same item (after
        # open_read_timeout gave it back and another connection opened it).
        self.open_reads = {}
        self.finished = False

    def open_count(self, name: str) -> int:
        reads = self.open_reads.get(name)
        if not reads:
            return 0
        self._prune(reads)
        return len(reads)

    def add_open(self, queue, item) -> None:
        reads = self.open_reads.get(queue.name)
        if reads is None:
            reads = self.open_reads[queue.name] = deque()
        reads.append((queue, item.id, item.open_token))

    @staticmethod
    def _still_ours(entry) -> bool:
        queue, item_id, token = entry
        item = queue.open.get(item_id)
        return item is not None and item.open_token == token and not queue.deleted

    def _prune(self, reads) -> None:
        # Drop reads that are no longer this session's: the queue was deleted, or the
        # read was given back (open_read_timeout) and perhaps opened again elsewhere.
        if not all(map(self._still_ours, reads)):
            kept = [entry for entry in reads if self._still_ours(entry)]
            reads.clear()
            reads.extend(kept)

    def close_oldest(self, name: str, count: int = 1) -> bool:
        """Confirm the ``count`` oldest open reads on ``name``; all or nothing."""
        reads = self.open_reads.get(name)
        if count < 1 or not reads or self.open_count(name) < count:
            return False
        for _ in range(count):
            queue, item_id, _token = reads[0]
            # Taken off the session only once the CONFIRM is journaled: a failed write
            # (disk full) leaves the read this connection's, to close again or give back.
            ops.confirm(queue, item_id)
            reads.popleft()
        return True

    def abort_oldest(self, name: str, delay_ms: int = 0) -> bool:
        reads = self.open_reads.get(name)
        if not reads or not self.open_count(name):
            return False
        queue, item_id, _token = reads[0]
        given_back = ops.abort(queue, item_id, delay_ms)  # raises on a failed write: still ours
        reads.popleft()
        return given_back

    def finish(self) -> None:
        """Give every open read back, newest first so the oldest ends at the head."""
        if self.finished:
            return
        self.finished = True
        for reads in self.open_reads.values():
            self._prune(reads)
            give_back([(queue, item_id) for queue, item_id, _token in reads])
        self.open_reads.clear()


def give_back(reads) -> int:
    """Give open reads back to the heads of their queues; return how many went back.

    ``reads`` are ``(queue, item id)`` pairs, oldest opened first.  They go back newest
    first, so the oldest ends in front, as replay orders them after a crash.  This is the
    one give-back loop of the server: a connection's session, the reads held past a FIN
    and the graceful stop all end here.
    """
    count = 0
    for queue, item_id in reversed(reads):
        try:
            if ops.abort(queue, item_id):
                count += 1
        except Exception:
            # The item stays open in memory and is given back at the next restart, when
            # replay finds it open; nothing is lost.
            log.exception("could not give back an open read on %s", queue.name)
    return count
