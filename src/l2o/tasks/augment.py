"""Augmentation: another family with its parameters and its loss rescaled at random.

The optimizer sees φ with θ = s ⊙ φ and the loss c·f(θ), where the scales s (one per tensor of
the layout, by default) and c are log-uniform in a configured range, drawn per instance. The
gradient it receives is therefore ∇_φ = c · s ⊙ ∇f(s ⊙ φ): the same problem at another scale.
An optimizer trained on this cannot rely on a fixed step size (Lv et al. 2017; Celo
reparametrises at global, tensor and parameter level). :meth:`AugmentedBatch.eval_loss` reports
the *unscaled* task loss f(s ⊙ φ), so validation curves stay comparable with the plain task.

Only the ``train`` split is augmented by default: validation (best-checkpoint selection) and test
see the task as it is. The loss scale c multiplies the meta-loss ``loss`` too; ``meta_loss =
"log"`` makes the meta-objective invariant to it.

In TOML::

    task = "augmented"
    task_options = { task = "random-mlp", param_scale = [1e-3, 1e3], loss_scale = [1e-3, 1e3] }

Example:
    >>> fam = Augmented("quadratic", param_scale=[10.0, 10.0], loss_scale=[2.0, 2.0])
    >>> batch, plain = fam.sample("train", [0]), fam.inner.sample("train", [0])
    >>> bool(torch.allclose(batch.init_params() * 10, plain.init_params()))
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from l2o.errors import L2OError
from l2o.tasks.base import SPLITS, Layout, TaskBatch, TaskFamily, instance_seed, layout_sizes

LEVELS = ("global", "tensor", "coordinate")


class AugmentedBatch(TaskBatch):
    """A batch seen through θ = s ⊙ φ and the loss c·f(θ); ``theta`` here is φ."""

    def __init__(self, inner: TaskBatch, scale: Tensor, loss_scale: Tensor) -> None:
        self.inner, self.scale, self.loss_scale = inner, scale, loss_scale  # (B, dim), (B,)
        self.size, self.dim = inner.size, inner.dim

    @property
    def layout(self) -> Layout:
        return self.inner.layout

    def init_params(self) -> Tensor:
        return self.inner.init_params() / self.scale

    def loss(self, theta: Tensor, step: int) -> Tensor:
        return self.loss_scale * self.inner.loss(self.scale * theta, step)

    def loss_and_grad(self, theta: Tensor, step: int) -> tuple[Tensor, Tensor]:
        loss, grad = self.inner.loss_and_grad(self.scale * theta, step)
        return self.loss_scale * loss, self.loss_scale.unsqueeze(1) * self.scale * grad

    def eval_loss(self, theta: Tensor) -> Tensor:
        """The task's own loss f(s ⊙ φ), without the loss scale."""
        return self.inner.eval_loss(self.scale * theta)


def _check_range(name: str, value: Sequence[float]) -> tuple[float, float]:
    ok = (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        and 0 < value[0] <= value[1]
    )
    if not ok:
        raise L2OError(f"augmented: {name} must be [low, high] with 0 < low <= high, got {value!r}")
    return float(value[0]), float(value[1])


class Augmented(TaskFamily):
    """Another task with parameters and loss rescaled by log-uniform factors (default 1e±3)."""

    name = "augmented"

    def __init__(
        self,
        task: str = "quadratic",
        options: Mapping[str, Any] | None = None,
        param_scale: Sequence[float] = (1e-3, 1e3),
        loss_scale: Sequence[float] = (1e-3, 1e3),
        level: str = "tensor",
        splits: Sequence[str] = ("train",),
    ) -> None:
        from l2o.tasks import get_task  # the registry imports this module

        if task == self.name:
            raise L2OError("augmented: the inner task cannot itself be augmented")
        self.inner = get_task(str(task), options or {})
        self.param_scale = _check_range("param_scale", list(param_scale))
        self.loss_scale = _check_range("loss_scale", list(loss_scale))
        if level not in LEVELS:
            raise L2OError(f"augmented: level must be one of {', '.join(LEVELS)}, got {level!r}")
        if isinstance(splits, str) or any(s not in SPLITS for s in splits):
            raise L2OError(f"augmented: splits must be a list among {', '.join(SPLITS)}")
        self.level, self.splits = level, tuple(splits)
        self.dim = self.inner.dim
        self.group_size = getattr(self.inner, "group_size", None)

    def options(self) -> dict:
        return {
            "task": self.inner.name,
            "options": self.inner.options(),
            "param_scale": list(self.param_scale),
            "loss_scale": list(self.loss_scale),
            "level": self.level,
            "splits": list(self.splits),
        }

    def sample(self, split: str, indices: Sequence[int]) -> TaskBatch:
        batch = self.inner.sample(split, indices)
        if split not in self.splits:
            return batch
        sizes = layout_sizes(batch.layout)
        scales, losses = [], []
        for i in indices:
            rng = np.random.default_rng([instance_seed(self.inner.name, split, i), 3])
            count = {"global": 1, "tensor": len(sizes), "coordinate": batch.dim}[self.level]
            s = torch.as_tensor(_log_uniform(rng, self.param_scale, count), dtype=torch.float32)
            if self.level == "tensor":
                s = s.repeat_interleave(torch.tensor(sizes))
            scales.append(s.expand(batch.dim))
            losses.append(float(_log_uniform(rng, self.loss_scale, 1)[0]))
        return AugmentedBatch(batch, torch.stack(scales), torch.tensor(losses))


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float], n: int) -> np.ndarray:
    return np.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1]), n))
