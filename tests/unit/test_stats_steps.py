"""Issue 12: ``stats`` and ``erqctl stats`` over thousands of queues are gathered and
encoded in steps, other greenlets running between them.  Checked by the order of events
between greenlets and by the bytes produced, not by timing."""

import json

import gevent

from erqpy import fairness
from erqpy.server import control
from tests.unit.test_collection import make_collection


def run_beside(work, other_steps=10_000):
    """``work()`` while another greenlet counts its turns; (result, turns seen by then)."""
    turns = [0]

    def other():
        for _ in range(other_steps):
            turns[0] += 1
            gevent.sleep(0.0001)

    worker = gevent.spawn(other)
    gevent.sleep(0)
    started = turns[0]
    result = work()
    worker.kill()
    return result, turns[0] - started


def test_a_total_over_many_queues_lets_other_greenlets_in(tmp_path, monkeypatch):
    monkeypatch.setattr(fairness, "SUM_PER_TURN", 5)
    collection = make_collection(tmp_path)
    for n in range(40):
        collection.get_or_create(b"q%d" % n).add(b"x" * n)
    (items, size), turns = run_beside(lambda: (collection.total_items, collection.total_bytes))
    assert (40, sum(range(40))) == (items, size)
    assert turns >= 8  # 40 queues, 5 per turn, twice (it was one go: 0)


def test_a_queue_created_during_a_total_does_not_break_it(tmp_path, monkeypatch):
    """The walk is over a list of the queues: a creation between two turns does not
    change the dict under it (that would raise RuntimeError)."""
    monkeypatch.setattr(fairness, "SUM_PER_TURN", 2)
    collection = make_collection(tmp_path)
    for n in range(10):
        collection.get_or_create(b"q%d" % n).add(b"x")
    created = []

    def create_some():
        for n in range(5):
            collection.get_or_create(b"late%d" % n)
            created.append(n)
            gevent.sleep(0.0001)

    creator = gevent.spawn(create_some)
    gevent.sleep(0)
    assert 10 == collection.total_items
    creator.join(timeout=30)
    assert created


def test_erqctl_stats_reply_is_encoded_in_parts_between_turns(monkeypatch):
    monkeypatch.setattr(control, "ENCODE_ENTRIES_PER_YIELD", 10)
    reply = {"server": {"pid": 1}, "queues": {f"q{n}": {"items": n, "name": "é\"x"} for n in range(95)}, "ok": True}
    parts, turns = run_beside(lambda: control._encode(reply))
    assert b"".join(parts) == json.dumps(reply, separators=(",", ":")).encode() + b"\n"
    assert len(parts) >= 10  # never one string of it all
    assert turns >= 9


def test_small_and_empty_replies_encode_as_json_dumps():
    for reply in ({"ok": True}, {"queues": {}, "ok": True}, {"queues": {f"q{n}": n for n in range(101)}},
                  {"queues": {f"q{n}": n for n in range(200)}, "close": True}):
        expected = {k: v for k, v in reply.items() if k != "close"}
        assert b"".join(control._encode(reply)) == json.dumps(expected, separators=(",", ":")).encode() + b"\n"
