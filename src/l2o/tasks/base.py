"""What a task is: a family of optimizee instances, drawn by (split, index), evaluated in batches.

A :class:`TaskFamily` draws instances from three disjoint seed streams (``train``,
``validation``, ``test``); :meth:`TaskFamily.sample` returns a :class:`TaskBatch` that holds B
instances side by side. Parameters of the batch are one tensor ``theta`` of shape ``(B, dim)``:
every call below works on the whole batch at once, with no Python loop over instances.
"""

from __future__ import annotations

import math
import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from l2o.errors import L2OError

SPLITS = ("train", "validation", "test")

# How a flat θ of one instance splits into tensors: their shapes, in order (sizes sum to dim).
# Learned optimizers normalise features per tensor; the drop-in optimizer uses the real tensors.
Layout = tuple[tuple[int, ...], ...]


def layout_sizes(layout: Layout) -> list[int]:
    """The number of coordinates of each tensor of a layout."""
    return [math.prod(shape) for shape in layout]


def instance_seed(task: str, split: str, index: int) -> int:
    """The seed of instance ``index`` of ``split``: disjoint streams per split, stable forever."""
    if split not in SPLITS:
        raise L2OError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if index < 0:
        raise L2OError(f"instance index must be >= 0, got {index}")
    entropy = [zlib.crc32(task.encode()), SPLITS.index(split), int(index)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)


def instance_generator(task: str, split: str, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(instance_seed(task, split, index))


class TaskBatch(ABC):
    """B instances of one task, evaluated together. ``theta`` is always ``(B, dim)``."""

    size: int
    dim: int

    @property
    def layout(self) -> Layout:
        """The tensors θ splits into (default: one tensor of ``dim`` coordinates)."""
        return ((self.dim,),)

    @abstractmethod
    def init_params(self) -> Tensor:
        """θ₀ for every instance, shape ``(B, dim)``."""

    @abstractmethod
    def loss(self, theta: Tensor, step: int) -> Tensor:
        """The optimizee loss at ``step`` (its minibatch), shape ``(B,)``, differentiable in θ."""

    def loss_and_grad(self, theta: Tensor, step: int) -> tuple[Tensor, Tensor]:
        """Loss ``(B,)`` and gradient ``(B, dim)`` at ``step``, outside any autograd graph.

        The default uses autograd; tasks override it with a closed form or manual backprop.
        """
        with torch.enable_grad():
            theta = theta.detach().requires_grad_(True)
            loss = self.loss(theta, step)
            (grad,) = torch.autograd.grad(loss.sum(), theta)
        return loss.detach(), grad

    def eval_loss(self, theta: Tensor) -> Tensor:
        """The loss reported in curves and results, shape ``(B,)`` (defaults to step 0's)."""
        with torch.no_grad():
            return self.loss(theta, 0)


class TaskFamily(ABC):
    """A distribution over optimizee instances of one kind."""

    name: str
    dim: int
    # Meta-training settings this task needs instead of TrainConfig's (the paper's quadratic)
    # defaults; `load_config` (hence `l2o train`) applies them under the file and --set values.
    train_defaults: ClassVar[Mapping[str, Any]] = {}

    @abstractmethod
    def sample(self, split: str, indices: Sequence[int]) -> TaskBatch:
        """The instances ``indices`` of ``split``, batched."""

    def describe(self) -> str:
        """One line for `l2o list`."""
        return (self.__doc__ or self.name).strip().splitlines()[0]

    def options(self) -> dict:
        """The options that define this family (saved with results)."""
        return {}
