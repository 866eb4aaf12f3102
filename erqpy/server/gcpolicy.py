"""When the cyclic garbage collector may walk the heap, so that it never holds the hub
for long (issue 12: no pause over 10 ms).

CPython's full collection walks every tracked object: with 2 M items in memory it takes
0.7-1.5 s on a 2-core machine, and the hub serves nothing meanwhile.  Items never form
reference cycles (refcounting frees each one once it is read), so walking them finds
nothing.  The policy:

* After every full collection its survivors are frozen (``gc.freeze``, which costs
  nothing): later collections skip them, and each walks only what was allocated since.
  What recovery loads is frozen the same way at start.
* Once the queues have held more than ``LARGE_HEAP_ITEMS`` items in memory and then
  fall back under ``UNFREEZE_BELOW_ITEMS`` (the queues drained), everything is
  unfrozen, so that cyclic garbage that became unreachable while frozen (a deleted
  queue, a closed connection) is reclaimed by the next full collection, which is short
  again because the heap is small.
* An unfreeze is also forced ``MAX_FROZEN_SECONDS`` after the first freeze since the
  last one, so that such garbage waits an hour at most; when the heap is still large
  then, that collection walks all of it (the one long pause the policy allows, at most
  once an hour).

* While clients are served, the young generations are collected every
  ``YOUNG_BOUND_SECONDS`` in which no collection came by itself (``bound_the_young``):
  traffic that frees what it allocates never starts one, and the young generation
  would grow to a whole memory window of items.

The heap is measured by the items the queues hold in memory, which the maintenance
sweep counts as it walks them once a second (``check``): items are its bulk and its
long-lived objects.  ``sys.getallocatedblocks()`` would count every object, but it
visits every pymalloc pool of the process: 45-50 ms on the hub with 8 M blocks while
another queue streamed 1 KiB items through read-behind (session 16), called after every
full collection and by every ``erqctl status``.  ``gc.get_freeze_count()`` walks the
frozen list (75 ms for 2 M objects); neither is called while serving.  The collector is
one per process, so the policy is too: module state, in a module that is never
reloaded.
"""

import gc
import time

from erqpy.storage.snapshot import RunCopy

#: Queues that have held more than this many items in memory while frozen are unfrozen
#: once they fall back (an item is 2 to 4 objects: the item, its bytes, its ints).
LARGE_HEAP_ITEMS = 60_000
#: Frozen objects are unfrozen once the queues hold fewer items than this (below
#: LARGE_HEAP_ITEMS, so that a heap near the line does not flap): the full collection
#: after it walks them and the code's objects, a few ms.
UNFREEZE_BELOW_ITEMS = 25_000
#: Frozen for longer than this, everything is unfrozen anyway: the bound on how long
#: cyclic garbage among frozen objects waits to be reclaimed.
MAX_FROZEN_SECONDS = 3600.0
#: gc.set_threshold's middle and oldest thresholds (CPython's are 10 and 10).  With
#: everything older frozen, a full collection walks what was promoted since the last one:
#: up to 700 x 10 x 11 objects by default (60-140 ms for 10,000 new queues on a loaded
#: 2-core machine), 700 x 5 x 2 with these (25 ms there).  CPython still skips a full
#: collection until the objects promoted since the last one are a quarter of its survivors.
MIDDLE_THRESHOLD = 5
FULL_THRESHOLD = 1
#: While clients are served, the two young generations are collected when no collection
#: came for this long.  Freeing an object takes one off the young generation's count as
#: an allocation adds one, so when items are made as fast as old ones are consumed (a
#: drain through read-behind, a deep queue in balance) the count stays near 0, no
#: collection comes, and the young generation grows to every item made since: the one
#: that finally came walked a whole memory window (3-5 ms for 16 MiB of 1 KiB items,
#: session 16; 16 ms in a 10 M drain).  Young only: a full collection would also walk
#: a snapshot's copy of a deep queue (one list of millions of references, 11-17 ms),
#: which this leaves to the collector's own rule and the freeze; nor does it collect
#: while such a copy is young (``snapshot.RunCopy.alive``).
YOUNG_BOUND_SECONDS = 0.1


class GcPolicy:
    """The freeze and unfreeze decisions, and what ``erqctl status`` shows of them."""

    def __init__(self):
        self.frozen_since = 0.0  # monotonic time of the first freeze since the last unfreeze; 0: none
        self.grew = False  # the queues held over LARGE_HEAP_ITEMS since the last unfreeze
        self.items_held = 0  # in memory at the last sweep
        self.freezes = 0
        self.unfreezes = 0
        self.full_collections = 0
        self.longest_pause_ms = 0.0  # the longest collection of any generation while serving
        self.last_full_pause_ms = 0.0
        self._collection_started = 0.0
        self._installed = False
        self.frozen_at_start = 0  # objects frozen by the start (recovery's items, the code)
        self.collections = 0  # of any generation
        self.young_collections = 0  # run by bound_the_young
        self._collections_seen = 0  # at bound_the_young's last look
        self._activity_seen = 0

    def start(self) -> None:
        """Hook into the collector (before recovery loads)."""
        young, _middle, _full = gc.get_threshold()
        gc.set_threshold(young, MIDDLE_THRESHOLD, FULL_THRESHOLD)
        if not self._installed:
            gc.callbacks.append(self._on_collection)
            self._installed = True

    def started(self) -> None:
        """Recovery's items (and the code) are frozen; a full collection goes first, so
        none of recovery's garbage is frozen with them."""
        gc.collect()
        self._freeze()
        # Counted once, here, before the port opens (the count walks the frozen list).
        self.frozen_at_start = gc.get_freeze_count()
        # That collection walked everything before the port opened: no client waited.
        self.longest_pause_ms = 0.0

    def _freeze(self) -> None:
        gc.freeze()
        self.freezes += 1
        if not self.frozen_since:
            self.frozen_since = time.monotonic()

    def _on_collection(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._collection_started = time.perf_counter()
            return
        pause_ms = (time.perf_counter() - self._collection_started) * 1000
        self.collections += 1
        self.longest_pause_ms = max(self.longest_pause_ms, pause_ms)
        if info["generation"] == 2:
            self.full_collections += 1
            self.last_full_pause_ms = pause_ms
            self._freeze()

    def bound_the_young(self, activity: int) -> bool:
        """Collect the young generations if clients were served since the last call
        (``activity``: a count that grows with traffic), no collection ran meanwhile and
        no snapshot copy is alive; called every YOUNG_BOUND_SECONDS.  True when it ran one."""
        quiet = activity == self._activity_seen
        self._activity_seen = activity
        due = not quiet and self.collections == self._collections_seen and not RunCopy.alive
        if due:
            gc.collect(1)
            self.young_collections += 1
        self._collections_seen = self.collections
        return due

    def check(self, items_held: int) -> bool:
        """Unfreeze when the queues' items in memory (``items_held``, counted by the
        maintenance sweep that calls this) have fallen back, or everything has been
        frozen too long.  True when it unfroze."""
        self.items_held = items_held
        if not self.frozen_since:
            return False
        if items_held > LARGE_HEAP_ITEMS:
            self.grew = True
        drained = self.grew and items_held < UNFREEZE_BELOW_ITEMS
        if not drained and time.monotonic() - self.frozen_since < MAX_FROZEN_SECONDS:
            return False
        gc.unfreeze()
        self.unfreezes += 1
        self.frozen_since = 0.0
        self.grew = False
        return True

    def status(self) -> dict:
        return {
            "gc_frozen_at_start": self.frozen_at_start,
            "gc_items_held": self.items_held,
            "gc_frozen_for_seconds": round(time.monotonic() - self.frozen_since, 1) if self.frozen_since else 0,
            "gc_heap_grew": self.grew,
            "gc_freezes": self.freezes,
            "gc_unfreezes": self.unfreezes,
            "gc_full_collections": self.full_collections,
            "gc_collections": self.collections,
            "gc_young_collections": self.young_collections,
            "gc_last_full_pause_ms": round(self.last_full_pause_ms, 3),
            "gc_longest_pause_ms": round(self.longest_pause_ms, 3),
            "gc_large_heap_items": LARGE_HEAP_ITEMS,
            "gc_unfreeze_below_items": UNFREEZE_BELOW_ITEMS,
            "gc_max_frozen_seconds": MAX_FROZEN_SECONDS,
            "gc_thresholds": list(gc.get_threshold()),
        }


#: The process's one policy (there is one collector per process).
POLICY = GcPolicy()
