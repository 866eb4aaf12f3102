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

The default level's items are copied a step at a time too (``RunCopy``): ``list()`` of a
million small items held the hub for 12-35 ms (each reference taken is a cache miss).
"""

from itertools import chain, compress, count, islice
from operator import attrgetter

from erqpy.fairness import give_way
from erqpy.storage import filewrite, records
from erqpy.storage.items import mark_in_segment
from erqpy.storage.levels import DEFAULT_PRIORITY

_IN_SEGMENT = attrgetter("in_segment")

#: Items records_of passes over without a record (in a segment already) before it gives
#: way: the rewrite's step ends there (``filewrite.STEP_BREAK``).  A step's records are
#: encoded on the hub in one go, and a pass over a million such items took ~40 ms.
SKIPS_PER_STEP = 8192
#: Records records_of encodes before it ends the rewrite's step: a step of 256 KiB
#: (``journal_rewrite.REWRITE_STEP_BYTES``) was 2,500 records of 64 B items, 7-9 ms
#: on the hub; 1 KiB items reach the byte limit first.
RECORDS_PER_STEP = 1024
#: Items data_now_in_journal looks at between two turns of the other connections.  A
#: plain item unpacks its id and changes class to lose its mark (``items``): 0.21 us
#: each on the 2-core machine (0.07 while items had slots), so 8,192 are about 1.7 ms;
#: 32,768 would be 7 ms.
ITEMS_PER_TURN = 8192
#: Items RunCopy copies (or releases) in one step: 1-2.5 ms for 64 B items scattered in
#: memory on the 2-core machine; the step's rotation of the deque to them, under 1 ms.
COPY_PER_STEP = 32768


class RunCopy:
    """The default level's items as they were when a snapshot started, copied a step
    at a time while the queue keeps serving (``copy_in_steps``).

    Meanwhile the deque changes at its ends only: items are appended at the tail, the
    head is popped, and a given-back item is pushed back onto the head (or it is
    cleared by a flush).  So it is always ``pushed + originals[popped:] + appended``,
    and two counts place the next original to copy.  An original popped before it was
    copied is kept when popped (``popped_head``): the snapshot holds every item of the
    start, and the records captured after it (REMOVE, OPEN) find each one by id.  An
    item missing from the snapshot would have a REMOVE moving replay's HEAD past it
    (``recovery._ReplayState._take``).  The queue must call ``popped_head``,
    ``pushed_head`` and ``cleared`` for each such change of the deque while the copy
    runs.  ``items`` is complete, and ``head`` known, once ``copy_in_steps`` is done.
    """

    #: Copies alive now (``QueueFiles.compact``).  While one is, the server's young
    #: collections wait (server/gcpolicy): a copy is one list of a reference to each item
    #: of a deep queue, and a collection walks all of it while it is young (8.6-15.4 ms
    #: for 1 M items).  Class state, in a module that is never reloaded.
    alive = 0

    __slots__ = ("items", "_deque", "_end", "_copied", "_popped", "_pushed", "_early", "_last",
                 "_find_in_segment", "first_in_segment", "_head_if_none")

    def __init__(self, live, start: int, head_if_none: int, find_in_segment: bool):
        self.items: list = []  # the originals from ``start`` on, once copied
        self._deque = live
        self._end = len(live)
        self._copied = start  # originals before this one are copied (or in the front)
        self._popped = 0  # originals popped from the head
        self._pushed = 0  # given-back items pushed onto the head, still there
        self._early: list = []  # originals popped before they were copied, in order
        self._last = live[-1] if self._end > start else None
        self._find_in_segment = find_in_segment
        self.first_in_segment: int | None = None  # index in ``items`` of the first such item
        self._head_if_none = head_if_none

    @property
    def head(self) -> int:
        """The snapshot's HEAD: the first item of the copy loaded from a segment, else
        what the queue said at the start."""
        if self.first_in_segment is None:
            return self._head_if_none
        return self.items[self.first_in_segment].id

    def popped_head(self, item) -> None:
        if self._pushed:
            self._pushed -= 1
        elif self._popped < self._end:
            if self._popped >= self._copied:
                self._early.append(item)
            self._popped += 1

    def pushed_head(self) -> None:
        self._pushed += 1

    def cleared(self) -> None:
        """A flush: no original is left in the deque; those kept when popped are all
        that is left to copy (the FLUSH record captured after them empties the queue)."""
        self._end = self._popped = self._copied + len(self._early)
        self._pushed = 0

    def copy_in_steps(self):
        """Copy ``COPY_PER_STEP`` items at a time, a ``STEP_BREAK`` between steps."""
        while not self._copy_step():
            yield filewrite.STEP_BREAK

    def _copy_step(self) -> bool:
        """One step of the copy; True once it is complete."""
        items, live = self.items, self._deque
        start = len(items)
        if self._early:
            items.extend(self._early)
            self._copied += len(self._early)
            self._early = []
        taken = min(COPY_PER_STEP, self._end - self._copied)
        if taken > 0:
            position = self._pushed + self._copied - self._popped
            if position < 0 or position + taken > len(live):
                raise RuntimeError("snapshot copy lost its place in the queue")  # the old journal stays
            # Rotating moves references without touching the items; islice would touch
            # every one before the position (a cache miss each).
            live.rotate(-position)
            try:
                items.extend(islice(live, 0, taken))
            finally:
                live.rotate(position)
            self._copied += taken
            if self._copied == self._end and items[-1] is not self._last:
                raise RuntimeError("snapshot copy lost its place in the queue")
        if self._find_in_segment and self.first_in_segment is None:
            # A slice, not islice: islice would touch every item before ``start`` again.
            self.first_in_segment = next(compress(count(start), map(_IN_SEGMENT, items[start:])), None)
        return self._copied >= self._end

    def release(self) -> None:
        """Drop the copy a step per turn: letting go of a million references at once
        takes as long as taking them."""
        items, self.items = self.items, []
        while items:
            del items[-COPY_PER_STEP:]
            if items:
                give_way()


class TakenNow:
    """Due times and priorities of the snapshot's items when it starts, and the
    delivery counts of those delivered since.

    The default level's items (``RunCopy``) are all due: their ATTRS cannot differ from
    an added item's, so they are not looked at; ``rest`` is the other levels' and the
    delayed items.  ``delivering`` must be called before any delivery count of a queue
    goes up while its snapshot runs.
    """

    __slots__ = ("deliveries_before", "attrs")

    def __init__(self, held, front, rest):
        self.deliveries_before: dict[int, int] = {}
        self.attrs = {item.id: (item.due_ms, item.priority) for items in (held, front, rest)
                      for item in items if item.due_ms or item.priority != DEFAULT_PRIORITY}

    def delivering(self, item) -> None:
        """``item`` is about to be handed out once more: the snapshot keeps the count it
        had at the start (the OPEN record this delivery writes is captured)."""
        self.deliveries_before.setdefault(item.id, item.deliveries)


def records_of(encode, with_head: bool, held, front, run: RunCopy, rest, taken: TakenNow):
    """Once ``run`` is copied: HEAD (when ``with_head``), then HELD, FRONT and ADD
    records; ``in_segment`` items of the run at or above its head are not copied,
    delayed or prioritised ones (an ATTRS record first) always are."""
    yield from run.copy_in_steps()
    head = run.head
    attrs, before = taken.attrs, taken.deliveries_before
    skipped = written = 0
    if with_head:
        yield encode.encode_id_op(records.OP_HEAD, head)
    for op, items in ((records.OP_HELD, held), (records.OP_FRONT, front), (records.OP_ADD, run.items),
                      (records.OP_ADD, rest)):
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
            written += 1
            if not written % RECORDS_PER_STEP:
                yield filewrite.STEP_BREAK


def data_now_in_journal(held, front, run: RunCopy, rest, taken: TakenNow) -> None:
    """After the switch to the new journal: the items it copied are no longer only in
    segments (none of the run's items before its first ``in_segment`` one is marked).

    Only a snapshot acts on the mark, and no other one of this queue starts before this
    returns (``QueueStore.taking``), so it gives way as it goes: a deep queue's memory
    window can be a million small items loaded from segments (~50 ns each here).  An
    item opened meanwhile is copied with its mark (``items.with_fields``), as during the
    rewrite itself; open and given-back items are always copied whole, and their marks
    are cleared by the next snapshot (the loops over ``held`` and ``front`` below).
    """
    for item in held:
        mark_in_segment(item, False)
    for item in front:
        mark_in_segment(item, False)
    attrs, head, items = taken.attrs, run.head, run.items
    start = len(items) if run.first_in_segment is None else run.first_in_segment
    blocks = (items[at:at + ITEMS_PER_TURN] for at in range(start, len(items), ITEMS_PER_TURN))
    for index, block in enumerate(chain(blocks, (rest,))):
        if index:
            give_way()
        for item in compress(block, map(_IN_SEGMENT, block)):
            item_id = item.id  # a plain item unpacks it: read once
            if item_id < head or item.due_ms or item_id in attrs and attrs[item_id][0]:
                mark_in_segment(item, False)
