"""The records of a queue's snapshot (``segments.QueueStore.snapshot``), encoded while
the hub keeps serving.

A large rewrite gives the hub away between steps of encoding (``journal.Journal.rewrite``),
so what can change under it is taken at the start (``TakenNow``): a delivery made
meanwhile is an OPEN record the rewrite captures and must not be counted twice; an item
due meanwhile keeps the ATTRS it had.  Every item in memory is looked at then, on the hub
in one go, so that look is kept to what can differ (tens of ns an item).
"""

from itertools import compress, islice
from operator import attrgetter

from erqpy.storage import records
from erqpy.storage.levels import DEFAULT_PRIORITY

_IN_SEGMENT = attrgetter("in_segment")


class TakenNow:
    """Deliveries, and due times and priorities, of the snapshot's items when it starts.

    The first ``plain`` items of ``run`` are the default level's, all due: only their
    deliveries can differ from an added item's (a retried item that came due), so only
    that is looked at (about 50 ns an item, the bulk of this look).
    """

    __slots__ = ("deliveries", "attrs")

    def __init__(self, held, front, run, plain: int = 0):
        self.deliveries = {item.id: item.deliveries for items in (held, front, run)
                           for item in items if item.deliveries}
        self.attrs = {item.id: (item.due_ms, item.priority) for items in (held, front, islice(run, plain, None))
                      for item in items if item.due_ms or item.priority != DEFAULT_PRIORITY}


def records_of(encode, head: int, with_head: bool, held, front, run, taken: TakenNow):
    """HEAD (when ``with_head``), then HELD, FRONT and ADD records; ``in_segment``
    items of the run at or above ``head`` are not copied, delayed or prioritised ones
    (an ATTRS record first) always are."""
    attrs, deliveries = taken.attrs, taken.deliveries
    if with_head:
        yield encode.encode_id_op(records.OP_HEAD, head)
    for op, items in ((records.OP_HELD, held), (records.OP_FRONT, front), (records.OP_ADD, run)):
        for item in items:
            item_id = item.id
            if item_id in attrs:
                yield encode.encode_attrs(item_id, *attrs[item_id])
            elif item.due_ms or item.priority != DEFAULT_PRIORITY:  # not expected among the plain ones
                yield encode.encode_attrs(item_id, item.due_ms, item.priority)
            elif op == records.OP_ADD and item.in_segment and item_id >= head:
                continue
            yield encode.encode_item(op, item_id, item.flags, item.added_ms, item.expires_ms, item.data)
            if item_id in deliveries:
                yield encode.encode_deliveries(item_id, deliveries[item_id])


def data_now_in_journal(held, front, run, head, taken: TakenNow) -> None:
    """After the switch to the new journal: the items it copied are no longer only in
    segments.  Called with no yield in between, so no other snapshot sees half of it."""
    for item in held:
        item.in_segment = False
    for item in front:
        item.in_segment = False
    attrs = taken.attrs
    for item in compress(run, map(_IN_SEGMENT, run)):
        if item.id < head or item.due_ms or item.id in attrs and attrs[item.id][0]:
            item.in_segment = False
