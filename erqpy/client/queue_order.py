"""The order a consumer of several queues looks at them in, drawn again for each read.

Strict (no weights): always the order given, so ``high,default,low`` serves ``default``
only while ``high`` is empty.  Weighted, as Sidekiq: ``--weights 6,3,1`` draws a random
order per read in which each queue comes first with probability weight / total (and the
rest follow the same way), so while every queue has jobs they are served about 6:3:1, and
an empty queue hands its turn to the next in the drawn order rather than idling.
"""

import random


class QueueOrder:
    """``next()``: the queues in the order of one read; ``reader``: a name for the set."""

    def __init__(self, queues, weights=None, rng=None):
        self.queues = list(queues)
        if not self.queues:
            raise ValueError("no queue to consume")
        if len(set(self.queues)) != len(self.queues):
            raise ValueError("a queue is named twice")
        if weights is not None:
            weights = list(weights)
            if len(weights) != len(self.queues):
                raise ValueError(f"{len(weights)} weights for {len(self.queues)} queues; give one per queue")
            if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in weights):
                raise ValueError("weights must be whole numbers of at least 1")
        self.weights = weights
        self.reader = ",".join(sorted(self.queues))
        self._rng = rng or random.Random()

    def describe(self) -> str:
        if self.weights is None:
            return "strict order" if len(self.queues) > 1 else "one queue"
        return "weighted " + ",".join(map(str, self.weights))

    def next(self) -> list:
        if self.weights is None:
            return self.queues
        queues, weights = list(self.queues), list(self.weights)
        order = []
        while queues:  # weighted draws without replacement
            pick = self._rng.choices(range(len(queues)), weights)[0]
            order.append(queues.pop(pick))
            weights.pop(pick)
        return order
