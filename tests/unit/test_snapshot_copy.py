"""Issue 12: a snapshot copies the default level's items a step at a time
(``snapshot.RunCopy``), while other greenlets take, open, give back, confirm, add and
flush on the same queue.  The journal it writes, with the records captured meanwhile,
must give back exactly the queue as it is when the rewrite is done: checked by reopening
the files and draining them, not by timing."""

import random

import gevent
import pytest

from erqpy.storage import snapshot
from tests.unit.test_readbehind import T0, drain, open_queue

WIDE = dict(max_memory_size=64 << 20, max_journal_size=1 << 30)
STEPS = 3  # the run is copied in this many steps and a bit more


def item(n: int) -> bytes:
    return b"%08d" % n


def fill(queue, count: int, first: int = 0) -> None:
    for n in range(first, first + count):
        assert queue.add(item(n), now=T0)


def live_order(queue) -> list[bytes]:
    """What a reopen must give back: the open reads first (oldest first), then the rest."""
    return [held.data for held in queue.open.values()] + [waiting.data for waiting in queue.items]


class Meddler:
    """Changes the queue between the copy's steps, and notes how far the copy had come
    each time.  ``between_steps`` makes it run before every step but the first, as
    the other greenlets do (deterministic, whatever the machine's load); ``greenlet``
    runs it as one more greenlet (bounded by count; killed once the copy is done)."""

    def __init__(self, queue, seed: int, flush_at: int = -1, burst: int = 1):
        self.queue = queue
        self.rng = random.Random(seed)
        self.flush_at = flush_at  # after this many changes during the copy, flush once
        self.burst = burst  # changes per turn: up to this many
        self.next_item = 10_000_000
        self.progress: list[int] = []  # len(RunCopy.items) each time it ran during a copy
        self.changes = 0
        self.overtook = 0  # turns after which the head had passed what was copied

    def between_steps(self, monkeypatch) -> None:
        copy_step = snapshot.RunCopy._copy_step

        def meddled(copying):
            if copying.items or copying._early:  # not the first step: the capture is on
                self.turn()
            return copy_step(copying)

        monkeypatch.setattr(snapshot.RunCopy, "_copy_step", meddled)

    def greenlet(self) -> None:
        for _ in range(200_000):
            self.turn()
            gevent.sleep(0)

    def turn(self) -> None:
        copying = self.queue._copying
        if copying is None or copying._copied >= copying._end:
            return
        self.progress.append(len(copying.items))
        for _ in range(self.rng.randint(1, self.burst)):
            self.change()
        self.overtook += bool(copying._early)

    def change(self) -> None:
        queue, rng = self.queue, self.rng
        self.changes += 1
        if self.changes == self.flush_at:
            queue.flush()
            return
        roll = rng.random()
        if roll < 0.3:
            queue.remove(now=T0)
        elif roll < 0.5:
            queue.remove(open_read=True, now=T0)
        elif roll < 0.65 and queue.open:
            queue.unremove(next(iter(queue.open)) if rng.random() < 0.5 else list(queue.open)[-1])
        elif roll < 0.75 and queue.open:
            queue.confirm(next(iter(queue.open)))
        else:
            queue.add(item(self.next_item), now=T0)
            self.next_item += 1


def compact_while_meddling(queue, meddler: Meddler, monkeypatch=None) -> None:
    """With ``monkeypatch``: the meddler runs between the steps; without, as a greenlet."""
    if monkeypatch is not None:
        meddler.between_steps(monkeypatch)
        queue.compact()
    else:
        worker = gevent.spawn(meddler.greenlet)
        gevent.sleep(0)  # the worker is running
        queue.compact()
        worker.kill()
    assert 1 == queue.journal.rewrites
    assert queue._copying is None


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_run_copied_in_steps_while_the_queue_changes_reopens_as_the_queue_is(tmp_path, monkeypatch, seed):
    """Given-back items at the head first, then a run of small items copied in steps;
    between the steps the head is taken, opened, given back and confirmed, and the tail
    grows.  The reopened queue equals the live one, open reads first."""
    queue = open_queue(tmp_path, **WIDE)
    fill(queue, STEPS * snapshot.COPY_PER_STEP + 1000)
    opened = [queue.remove(open_read=True, now=T0) for _ in range(5)]
    for held in reversed(opened[:3]):
        queue.unremove(held.id)  # three given back to the head: the front
    assert 3 == queue.front_count
    meddler = Meddler(queue, seed, burst=5)

    compact_while_meddling(queue, meddler, monkeypatch)

    assert len(set(meddler.progress)) == STEPS, meddler.progress  # before each step but the first
    expected = live_order(queue)
    queue.close()
    queue = open_queue(tmp_path, **WIDE)
    assert expected == drain(queue)


def test_other_greenlets_run_between_the_steps_of_the_copy(tmp_path):
    """No hook: the copy of four steps gives the hub away between them (a rewrite's
    step goes to the worker thread), so a greenlet of its own changes the queue
    meanwhile; the reopened queue equals the live one."""
    queue = open_queue(tmp_path, **WIDE)
    fill(queue, STEPS * snapshot.COPY_PER_STEP + 1000)
    meddler = Meddler(queue, seed=5)

    compact_while_meddling(queue, meddler)

    assert len(set(meddler.progress)) >= 2, meddler.progress  # after two steps at least
    expected = live_order(queue)
    queue.close()
    queue = open_queue(tmp_path, **WIDE)
    assert expected == drain(queue)


@pytest.mark.parametrize("seed", range(10, 22))
def test_a_head_taken_past_what_was_copied_is_kept_for_the_snapshot(tmp_path, monkeypatch, seed):
    """Steps of 40 items and bursts of up to 300 changes a turn: the head often passes
    the copy (the items taken or opened before they were copied are kept when popped),
    and given-back items pushed on the head are taken again.  The reopened queue
    equals the live one."""
    monkeypatch.setattr(snapshot, "COPY_PER_STEP", 40)
    queue = open_queue(tmp_path, **WIDE)
    fill(queue, 3000)
    for _ in range(4):
        queue.remove(open_read=True, now=T0)
    queue.unremove(next(iter(queue.open)))
    meddler = Meddler(queue, seed, burst=300)

    compact_while_meddling(queue, meddler, monkeypatch)

    assert meddler.overtook >= 1 and len(set(meddler.progress)) >= 3, (meddler.overtook, meddler.progress)
    expected = live_order(queue)
    queue.close()
    queue = open_queue(tmp_path, **WIDE)
    assert expected == drain(queue)


def test_a_flush_between_the_copys_steps_leaves_only_what_came_after(tmp_path, monkeypatch):
    """A flush in the middle of the copy: the items taken or opened before it were kept
    for the snapshot (their REMOVE and OPEN records follow it), the rest is gone, and
    what was added after the flush is all that waits after a reopen."""
    queue = open_queue(tmp_path, **WIDE)
    fill(queue, STEPS * snapshot.COPY_PER_STEP)
    meddler = Meddler(queue, seed=7, flush_at=2, burst=3)

    compact_while_meddling(queue, meddler, monkeypatch)

    assert meddler.changes >= 2
    assert queue.stats.total_flushes == 1
    expected = live_order(queue)
    assert all(data >= item(10_000_000) for data in expected[len(queue.open):])
    queue.close()
    queue = open_queue(tmp_path, **WIDE)
    assert expected == drain(queue)


def test_the_head_is_found_in_a_later_step_of_a_window_loaded_from_segments(tmp_path, monkeypatch):
    """Memory holds journal items for more than one step, then items loaded from
    segments: the snapshot's HEAD (the first of those) is found in a later step, the
    items before it are copied, those after are left in their segments, and nothing is
    lost or doubled while the head is taken meanwhile."""
    budget = 1 << 20  # 131,072 items of 8 bytes
    config = dict(max_memory_size=budget, max_journal_size=1 << 30)
    queue = open_queue(tmp_path, **config)
    fill(queue, 200_000)
    assert queue.disk_count > 0
    taken = [queue.remove(now=T0).data for _ in range(75_000)]  # refills from segments
    first = next(index for index, waiting in enumerate(queue.items) if waiting.in_segment)
    assert first > snapshot.COPY_PER_STEP
    found = []

    class Watching(Meddler):
        def change(self):
            self.changes += 1
            found.append(self.queue._copying)
            self.queue.remove(now=T0)  # plain takes only: the model below is a FIFO

    meddler = Watching(queue, seed=0, burst=50)
    compact_while_meddling(queue, meddler, monkeypatch)

    assert meddler.changes >= 2
    assert found[-1].first_in_segment is not None and found[-1].first_in_segment > snapshot.COPY_PER_STEP
    taken_meanwhile = meddler.changes
    queue.close()
    queue = open_queue(tmp_path, **config)
    rest = drain(queue)
    assert [item(n) for n in range(200_000)] == taken + [item(n) for n in range(75_000, 75_000 + taken_meanwhile)] + rest
