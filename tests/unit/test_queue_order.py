"""queue_order: the order a consumer of several queues looks at them in, per read."""

import random
from collections import Counter

import pytest

from erqpy.client.queue_order import QueueOrder

pytestmark = pytest.mark.unit


def test_strict_order_is_the_order_given():
    order = QueueOrder(["high", "default", "low"])

    assert [["high", "default", "low"]] * 3 == [order.next() for _ in range(3)]
    assert "default,high,low" == order.reader


def test_weighted_order_puts_each_queue_first_in_proportion_to_its_weight():
    order = QueueOrder(["high", "default", "low"], [6, 3, 1], random.Random(7))

    draws = [order.next() for _ in range(20_000)]

    assert all(sorted(d) == ["default", "high", "low"] for d in draws)
    firsts = Counter(d[0] for d in draws)
    for queue, share in (("high", 0.6), ("default", 0.3), ("low", 0.1)):
        assert abs(firsts[queue] / 20_000 - share) < 0.02


@pytest.mark.parametrize("queues, weights, error", [
    ([], None, "no queue"),
    (["a", "a"], None, "named twice"),
    (["a", "b"], [1], "1 weights for 2 queues"),
    (["a", "b"], [1, 0], "at least 1"),
    (["a", "b"], [1, 2.5], "whole numbers"),
])
def test_bad_queues_or_weights_are_refused(queues, weights, error):
    with pytest.raises(ValueError, match=error):
        QueueOrder(queues, weights)
