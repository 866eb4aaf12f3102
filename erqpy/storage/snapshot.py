"""The records of a queue's snapshot (``segments.QueueStore.snapshot``), encoded while
the hub keeps serving.

A large rewrite gives the hub away between steps of encoding (``journal.Journal.rewrite``),
so what can change under it is taken at the start (``TakenNow``): a delivery made
meanwhile is an OPEN record the rewrite captures and must not be counted twice; an item
due meanwhile keeps the ATTRS it had.  That look at the start is on the hub in one go,
so it is kept to the items that can carry ATTRS; a delivery count is read as the
records are encoded, and the queue tells the snapshot the count an item had before a
delivery made meanwhile (``TakenNow.delivering``).  A pass over every item in memory
would cost ~60 ns an item: 30 ms for the 500,000 items of a 1 GiB journal (issue 12).
"""

from itertools import compress
from operator import attrgetter

from erqpy.fairness import give_way
from erqpy.storage import filewrite, records
from erqpy.storage.levels import DEFAULT_PRIORITY

_IN_SEGMENT = attrgetter("in_segment")

#: Items records_of passes over without a record (in a segment already) before it gives
#: way: the rewrite's step ends there (``filewrite.STEP_BREAK``).  A step's records are
#: encoded on the hub in one go, and a pass over a million such items took ~40 ms.
SKIPS_PER_STEP = 8192
#: Items data_now_in_journal looks at between two turns of the other connections.
ITEMS_PER_TURN = 32768


class TakenNow:
    """Due times and priorities of the snapshot's items when it starts, and the
    delivery counts of those delivered since.

    The first ``plain`` items of ``run`` are the default level's, all due: their ATTRS
    cannot differ from an added item's, so they are not looked at.  ``delivering`` must
    be called before any delivery count of a queue goes up while its snapshot runs.
    """

    __slots__ = ("deliveries_before", "attrs")

    def __init__(self, held, front, run, plain: int = 0):
        self.deliveries_before: dict[int, int] = {}
        self.attrs = {item.id: (item.due_ms, item.priority) for items in (held, front, run[plain:])
                      for item in items if item.due_ms or item.priority != DEFAULT_PRIORITY}

    def delivering(self, item) -> None:
        """``item`` is about to be handed out once more: the snapshot keeps the count it
        had at the start (the OPEN record this delivery writes is captured)."""
        self.deliveries_before.setdefault(item.id, item.deliveries)


def records_of(encode, head: int, with_head: bool, held, front, run, taken: TakenNow):
    """HEAD (when ``with_head``), then HELD, FRONT and ADD records; ``in_segment``
    items of the run at or above ``head`` are not copied, delayed or prioritised ones
    (an ATTRS record first) always are."""
    attrs, before = taken.attrs, taken.deliveries_before
    skipped = 0
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
                skipped += 1
                if not skipped % SKIPS_PER_STEP:
                    yield filewrite.STEP_BREAK
                continue
            yield encode.encode_item(op, item_id, item.flags, item.added_ms, item.expires_ms, item.data)
            deliveries = before[item_id] if item_id in before else item.deliveries
            if deliveries:
                yield encode.encode_deliveries(item_id, deliveries)


def data_now_in_journal(held, front, run, start: int, head: int, taken: TakenNow) -> None:
    """After the switch to the new journal: the items it copied are no longer only in
    segments (none of the first ``start`` items of the run is marked ``in_segment``).

    Only a snapshot acts on the mark, and no other one of this queue starts before this
    returns (``QueueStore.taking``), so it gives way as it goes: a deep queue's memory
    window can be a million small items loaded from segments (~50 ns each here).  An
    item opened meanwhile is copied with its mark (``items.with_fields``), as during the
    rewrite itself; open and given-back items are always copied whole, and their marks
    are cleared by the next snapshot (the loops over ``held`` and ``front`` below).
    """
    for item in held:
        item.in_segment = False
    for item in front:
        item.in_segment = False
    attrs = taken.attrs
    for block_start in range(start, len(run), ITEMS_PER_TURN):
        if block_start != start:
            give_way()
        block = run[block_start:block_start + ITEMS_PER_TURN]
        for item in compress(block, map(_IN_SEGMENT, block)):
            if item.id < head or item.due_ms or item.id in attrs and attrs[item.id][0]:
                item.in_segment = False
