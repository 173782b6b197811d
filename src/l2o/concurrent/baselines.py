"""The hand-designed baselines on a concurrent set, through ``l2o compare``'s own machinery.

A baseline (Adam, momentum, ...) sees one gradient per step, a concurrent set gives K. The
natural reference is the baseline on the *mean* of the K gradients, scored like every concurrent
optimizer on the clean held-out loss. :class:`MeanGradientFamily` presents a
:class:`~l2o.concurrent.initializers.ConcurrentSet` as an ordinary task family with exactly that
gradient and that loss, so the baselines are tuned with Optuna on validation
(:func:`l2o.compare.tuning.tune`: stored, seeded, resumable) and run on test
(:func:`l2o.evaluate.evaluate`) by :func:`l2o.compare.comparison.compare` itself, not by a copy.

Example:
    >>> from l2o.concurrent.initializers import build_set
    >>> outcome = compare_baselines(build_set("noise", "quadratic"), ["adam"], steps=10,
    ...                             instances=4, trials=2, tune_instances=4,
    ...                             storage="sqlite:///:memory:")
    >>> sorted(outcome.evaluation.curves), sorted(outcome.tuning["adam"].hyperparameters)
    (['adam'], ['lr'])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

from l2o.compare.comparison import Outcome, compare
from l2o.compare.tuning import TrialCallback
from l2o.concurrent.initializers import ConcurrentBatch, ConcurrentSet
from l2o.tasks import TaskBatch, TaskFamily

GRADIENT = "mean of the K sources"
SCORED_ON = "clean held-out loss"


class MeanGradientBatch(TaskBatch):
    """A concurrent batch seen by a single-gradient optimizer: the mean of the K gradients."""

    def __init__(self, batch: ConcurrentBatch) -> None:
        self.batch = batch
        self.size, self.dim = batch.size, batch.dim

    def init_params(self) -> Tensor:
        return self.batch.init_params()

    def loss(self, theta: Tensor, step: int) -> Tensor:
        # the K optimizees' own losses, averaged; not differentiable through every initializer,
        # which is why loss_and_grad is overridden and the baselines only ever call that
        return self.batch.grads(theta, step)[0].mean(-1)

    def loss_and_grad(self, theta: Tensor, step: int) -> tuple[Tensor, Tensor]:
        losses, grads = self.batch.grads(theta, step)
        return losses.mean(-1), grads.mean(-1)

    def eval_loss(self, theta: Tensor) -> Tensor:
        return self.batch.eval_loss(theta)  # the clean held-out loss, as for the combiners


class MeanGradientFamily(TaskFamily):
    """A concurrent set as a task family (see the module docstring).

    Its name and options identify the set, so an Optuna study tuned on it is never reused for the
    plain base task or for another set; ``label`` replaces the initializer in the name.
    """

    def __init__(self, cset: ConcurrentSet, label: str | None = None) -> None:
        self.cset = cset
        self.name = f"{cset.family.name}+{label or cset.initializer}"
        self.dim = cset.dim

    def sample(self, split: str, indices: Sequence[int]) -> MeanGradientBatch:
        return MeanGradientBatch(self.cset.sample(split, indices))

    def options(self) -> dict[str, Any]:
        return {
            "task_options": self.cset.family.options(),
            "initializer": self.cset.initializer,
            "initializer_options": self.cset.options(),
            "k": self.cset.k,
            "gradient": "mean",
        }


def compare_baselines(
    cset: ConcurrentSet,
    baselines: Sequence[str],
    steps: int,
    instances: int,
    trials: int,
    tune_instances: int,
    storage: str,
    seed: int = 0,
    objective: str = "mean",
    on_trial: TrialCallback | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> Outcome:
    """Tune each baseline on the mean gradient (validation), then run it on test instances.

    The arguments are :func:`l2o.compare.comparison.compare`'s; the curves are clean held-out
    losses on instances ``0..instances-1`` of the test split, the instances the combiners run on.
    """
    outcome = compare(
        MeanGradientFamily(cset),
        None,
        baselines,
        steps=steps,
        instances=instances,
        trials=trials,
        tune_instances=tune_instances,
        storage=storage,
        seed=seed,
        on_trial=on_trial,
        on_stage=on_stage,
        objective=objective,
    )
    outcome.settings |= {"gradient": GRADIENT, "scored_on": SCORED_ON}
    return outcome
