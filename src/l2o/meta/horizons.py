"""How long each meta-training unroll is: fixed, log-uniform, capped by a curriculum.

The paper unrolls every meta-iteration for exactly ``horizon`` steps, and its optimizer learns
to do well at that step and no later (short-horizon bias, Wu et al. 2018). Two remedies, each a
config key, both leaving truncated windows (hence memory) as they are:

- ``horizon_sampling = "log_uniform"``: each meta-iteration's horizon T is drawn log-uniformly
  between ``truncation`` and the current cap, so short and long unrolls are seen alike;
- ``curriculum = "plateau"`` (:class:`~l2o.meta.curriculum.Curriculum`): the cap starts at
  ``horizon`` and grows to ``max_horizon`` when validation stops improving (Chen et al. 2020).

The draw for meta-iteration i depends on (seed, i) only, so a resumed run unrolls the same
horizons as an uninterrupted one.

Example:
    >>> from l2o.config import TrainConfig
    >>> schedule = HorizonSchedule(TrainConfig())
    >>> schedule.horizon(0), schedule.val_horizon
    (100, 100)
"""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor

from l2o.config import TrainConfig
from l2o.meta.curriculum import Curriculum
from l2o.meta.unroll import step_weights


class HorizonSchedule:
    """The horizon of every meta-iteration and the step weights of its meta-loss."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.max_horizon = config.max_horizon or config.horizon
        self.curriculum = (
            Curriculum(
                config.horizon,
                self.max_horizon,
                config.curriculum_patience,
                config.curriculum_factor,
            )
            if config.curriculum == "plateau"
            else None
        )
        self.val_horizon = config.val_horizon or config.horizon
        self._weights: dict[int, Tensor] = {}

    @property
    def cap(self) -> int:
        """The longest horizon a meta-iteration may draw now."""
        if self.curriculum is not None:
            return self.curriculum.horizon
        return (
            self.max_horizon
            if self.config.horizon_sampling == "log_uniform"
            else (self.config.horizon)
        )

    def horizon(self, iteration: int) -> int:
        """The horizon T of meta-iteration ``iteration``."""
        cap = self.cap
        if self.config.horizon_sampling == "fixed":
            return cap
        low = min(self.config.truncation, cap)
        rng = np.random.default_rng([self.config.seed, iteration, 0x484F])
        return min(cap, round(math.exp(rng.uniform(math.log(low), math.log(cap + 0.5)))))

    def weights(self, horizon: int) -> Tensor:
        """w_t for t = 1..horizon (``loss_weights``), cached per horizon."""
        if horizon not in self._weights:
            self._weights[horizon] = step_weights(self.config.loss_weights, horizon)
        return self._weights[horizon]

    def observe(self, val_loss: float) -> None:
        """Feed a validation result (NaN: no validation this iteration) to the curriculum."""
        if self.curriculum is not None and not math.isnan(val_loss):
            self.curriculum.observe(val_loss)

    def replay(self, rows: list[dict[str, float]]) -> None:
        """Rebuild the curriculum from the metrics of a resumed run (its decisions are a
        function of the validation losses alone)."""
        for row in rows:
            self.observe(float(row["val_loss"]))
