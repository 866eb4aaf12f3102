"""``max_queue_age`` in engine mode: which queues are empty and idle, so that the sweep
deletes them as the journaled collection does.

Idle means: no item waits, no node holds an open read of it (``opennodes``), no reader
waits on this node, and its activity counters in Redis have not moved for
``max_queue_age`` seconds as this node saw them (any node's reads and writes move them).
"""

import time

ACTIVITY_FIELDS = ("puts", "gets", "transactions", "total_flushes")


def idle_queues(engine, queues, clock: float | None = None) -> list:
    """The queues of ``queues`` to delete now; one pipelined round trip."""
    clock = time.monotonic() if clock is None else clock
    candidates = [queue for queue in queues if queue.config.max_queue_age and not queue.waiters]
    if not candidates:
        return []
    pipe = engine.client.pipeline(transaction=False)
    for queue in candidates:
        pipe.llen(queue.keys.items)
        pipe.scard(queue.keys.opennodes)
        pipe.hmget(queue.keys.meta, ACTIVITY_FIELDS)
    replies = engine.call(pipe.execute)
    idle = []
    for index, queue in enumerate(candidates):
        count, open_nodes, activity = replies[3 * index:3 * index + 3]
        if activity != queue.seen_activity:
            queue.seen_activity = activity
            queue.last_activity = clock
        elif not count and not open_nodes and clock - queue.last_activity > queue.config.max_queue_age:
            idle.append(queue)
    return idle
