"""When the cyclic garbage collector may walk the heap, so that it never holds the hub
for long (issue 12: no pause over 10 ms).

CPython's full collection walks every tracked object: with 2 M items in memory it takes
0.7-1.5 s on a 2-core machine, and the hub serves nothing meanwhile.  Items never form
reference cycles (refcounting frees each one once it is read), so walking them finds
nothing.  The policy:

* After every full collection its survivors are frozen (``gc.freeze``, which costs
  nothing): later collections skip them, and each walks only what was allocated since.
  What recovery loads is frozen the same way at start.
* Once the heap has grown past ``LARGE_HEAP_BLOCKS`` allocated blocks above the code's
  (measured at start) and then fallen back under ``UNFREEZE_BELOW_BLOCKS`` (the queues
  drained), everything is unfrozen, so that cyclic garbage that became unreachable
  while frozen (a deleted queue, a closed connection) is reclaimed by the next full
  collection, which is short again because the heap is small.
* An unfreeze is also forced ``MAX_FROZEN_SECONDS`` after the first freeze since the
  last one, so that such garbage waits an hour at most; when the heap is still large
  then, that collection walks all of it (the one long pause the policy allows, at most
  once an hour).

The heap's size is ``sys.getallocatedblocks()``, which costs microseconds;
``gc.get_freeze_count()`` walks the frozen list (75 ms for 2 M objects) and is not used
here.  The collector is one per process, so the policy is too: module state, in a
module that is never reloaded.
"""

import gc
import sys
import time

#: A heap that has grown past this many allocated blocks above the code's while frozen is
#: unfrozen once it falls back (an item costs 2 to 4 blocks: the item, its bytes, its ints).
LARGE_HEAP_BLOCKS = 250_000
#: Frozen objects are unfrozen once the heap is back under this many blocks above the
#: code's (below LARGE_HEAP_BLOCKS, so that a heap near the line does not flap; above
#: what a server allocates as it warms up, about 50,000 blocks: lazy imports, buffers).
UNFREEZE_BELOW_BLOCKS = 100_000
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


class GcPolicy:
    """The freeze and unfreeze decisions, and what ``erqctl status`` shows of them."""

    def __init__(self):
        self.baseline_blocks = 0  # the heap with the code loaded, before recovery
        self.frozen_since = 0.0  # monotonic time of the first freeze since the last unfreeze; 0: none
        self.grew = False  # the heap passed LARGE_HEAP_BLOCKS since the last unfreeze
        self.freezes = 0
        self.unfreezes = 0
        self.full_collections = 0
        self.longest_pause_ms = 0.0  # the longest collection of any generation while serving
        self.last_full_pause_ms = 0.0
        self._collection_started = 0.0
        self._recovered_blocks = 0
        self._installed = False
        self.frozen_at_start = 0  # objects frozen by the start (recovery's items, the code)

    def start(self) -> None:
        """Measure the code's heap and hook into the collector (before recovery loads)."""
        self.baseline_blocks = sys.getallocatedblocks()
        young, _middle, _full = gc.get_threshold()
        gc.set_threshold(young, MIDDLE_THRESHOLD, FULL_THRESHOLD)
        if not self._installed:
            gc.callbacks.append(self._on_collection)
            self._installed = True

    def recovered(self) -> None:
        """Recovery is done; what is allocated from here to ``started`` (handlers,
        plugins) counts as the code's."""
        self._recovered_blocks = sys.getallocatedblocks()

    def started(self) -> None:
        """Recovery's items (and the code) are frozen; a full collection goes first, so
        none of recovery's garbage is frozen with them."""
        gc.collect()
        if self._recovered_blocks:
            self.baseline_blocks += max(sys.getallocatedblocks() - self._recovered_blocks, 0)
        self._freeze()
        # Counted once, here, before the port opens (the count walks the frozen list).
        self.frozen_at_start = gc.get_freeze_count()
        # That collection walked everything before the port opened: no client waited.
        self.longest_pause_ms = 0.0

    def heap_above_start(self) -> int:
        return sys.getallocatedblocks() - self.baseline_blocks

    def _freeze(self) -> None:
        if self.heap_above_start() > LARGE_HEAP_BLOCKS:
            self.grew = True
        gc.freeze()
        self.freezes += 1
        if not self.frozen_since:
            self.frozen_since = time.monotonic()

    def _on_collection(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._collection_started = time.perf_counter()
            return
        pause_ms = (time.perf_counter() - self._collection_started) * 1000
        self.longest_pause_ms = max(self.longest_pause_ms, pause_ms)
        if info["generation"] == 2:
            self.full_collections += 1
            self.last_full_pause_ms = pause_ms
            self._freeze()

    def check(self) -> bool:
        """Unfreeze when the heap has fallen back, or has been frozen too long; called by
        the maintenance sweep.  True when it unfroze."""
        if not self.frozen_since:
            return False
        drained = self.grew and self.heap_above_start() < UNFREEZE_BELOW_BLOCKS
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
            "gc_heap_blocks_above_start": self.heap_above_start(),
            "gc_frozen_for_seconds": round(time.monotonic() - self.frozen_since, 1) if self.frozen_since else 0,
            "gc_heap_grew": self.grew,
            "gc_freezes": self.freezes,
            "gc_unfreezes": self.unfreezes,
            "gc_full_collections": self.full_collections,
            "gc_last_full_pause_ms": round(self.last_full_pause_ms, 3),
            "gc_longest_pause_ms": round(self.longest_pause_ms, 3),
            "gc_large_heap_blocks": LARGE_HEAP_BLOCKS,
            "gc_unfreeze_below_blocks": UNFREEZE_BELOW_BLOCKS,
            "gc_max_frozen_seconds": MAX_FROZEN_SECONDS,
            "gc_thresholds": list(gc.get_threshold()),
        }


#: The process's one policy (there is one collector per process).
POLICY = GcPolicy()
