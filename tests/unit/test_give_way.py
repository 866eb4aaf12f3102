"""``fairness.give_way``: lets the other greenlets in from a greenlet, and from the event
loop's own callback (where a connection may be served, server/loop_serving) returns at
once instead of failing: the loop cannot wait on itself."""

import gevent
import pytest

from erqpy.fairness import give_way

pytestmark = pytest.mark.unit


def test_from_a_greenlet_the_others_run_first():
    order = []

    def walker():
        order.append("walker starts")
        other = gevent.spawn(order.append, "other")
        give_way()
        order.append("walker goes on")
        other.join(timeout=5)

    gevent.spawn(walker).join(timeout=5)
    assert ["walker starts", "other", "walker goes on"] == order


def test_from_the_event_loops_callback_it_returns_without_waiting():
    outcome = []

    def on_the_loop():
        assert gevent.getcurrent() is gevent.get_hub()
        try:
            give_way()
        except BaseException as exc:  # noqa: BLE001 - what the loop would have reported
            outcome.append(exc)
        else:
            outcome.append("returned")

    gevent.get_hub().loop.run_callback(on_the_loop)
    gevent.sleep(0.01)
    assert ["returned"] == outcome
