"""A horizon curriculum: unroll longer when validation stops improving (Chen et al. 2020).

Training starts with short unrolls, which are cheap and give low-variance meta-gradients, and
moves to longer ones once the short ones have taught what they can: after ``patience``
validations without a new best, the horizon grows by ``factor`` (up to ``max_horizon``).
Validation should measure the horizon that matters (``val_horizon``) so that "best" means the
same thing at every stage.

Example:
    >>> c = Curriculum(100, 1000, patience=1, factor=2.0)
    >>> for v in (5.0, 4.0, 4.5, 3.0, 3.5):  # two stalls: 100 → 200 → 400
    ...     c.observe(v)
    >>> c.horizon, c.stage
    (400, 2)
"""

from __future__ import annotations

import logging
import math

log = logging.getLogger(__name__)


class Curriculum:
    """The current horizon cap, lengthened on validation plateaus."""

    def __init__(self, horizon: int, max_horizon: int, patience: int, factor: float) -> None:
        self.horizon, self.max_horizon = horizon, max_horizon
        self.patience, self.factor = patience, factor
        self.best = math.inf
        self.stalled = 0  # validations since the last new best
        self.stage = 0

    def observe(self, val_loss: float) -> None:
        if val_loss < self.best:
            self.best, self.stalled = val_loss, 0
            return
        self.stalled += 1
        if self.stalled >= self.patience and self.horizon < self.max_horizon:
            self.horizon = min(self.max_horizon, math.ceil(self.horizon * self.factor))
            self.stalled, self.stage = 0, self.stage + 1
            log.info("curriculum: validation stalled, unrolling %d steps", self.horizon)
