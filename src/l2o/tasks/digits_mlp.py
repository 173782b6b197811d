"""An MLP on sklearn's digits (8×8 images, 10 classes), the paper's MNIST task at laptop size."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from l2o import checks
from l2o.errors import L2OError
from l2o.tasks.base import TaskBatch, TaskFamily, instance_generator, instance_seed
from l2o.tasks.mlp import (
    ACTIVATIONS,
    LOSSES,
    MLPShape,
    mlp_loss,
    mlp_loss_and_grad,
    whole_data,
)

SPLIT_SEED = 0  # the one fixed shuffle that halves the images into meta-train and meta-test


@functools.lru_cache(maxsize=1)
def digits_halves() -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """((X, y) meta-train half, (X, y) meta-test half), pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    X = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.tensor(np.random.default_rng(SPLIT_SEED).permutation(len(y)))
    half = len(y) // 2
    first, second = order[:half], order[half:]
    return (X[first], y[first]), (X[second], y[second])


class MinibatchStream:
    """The minibatch index sequence of one instance: a function of its seed and the step only."""

    CHUNK = 100  # steps drawn at once

    def __init__(self, generators: Sequence[torch.Generator], n: int, batch_size: int) -> None:
        self.generators, self.n, self.batch_size = list(generators), n, batch_size
        self.drawn: list[Tensor] = []  # chunks of (B, CHUNK, batch_size)

    def indices(self, step: int) -> Tensor:
        """Row indices ``(B, batch_size)`` of the data at ``step``."""
        while step >= len(self.drawn) * self.CHUNK:
            self.drawn.append(
                torch.stack(
                    [
                        torch.randint(self.n, (self.CHUNK, self.batch_size), generator=g)
                        for g in self.generators
                    ]
                )
            )
        return self.drawn[step // self.CHUNK][:, step % self.CHUNK]


class MLPBatch(TaskBatch):
    """B MLPs, each with its own initialisation and minibatch stream, on shared data (X, y)."""

    def __init__(
        self,
        shape: MLPShape,
        X: Tensor,
        y: Tensor,
        theta0: Tensor,
        stream: MinibatchStream,
        activation: str,
        loss: str,
    ) -> None:
        self.shape, self.X, self.y, self.theta0 = shape, X, y, theta0
        self.stream, self.activation, self.loss_name = stream, activation, loss
        self.size, self.dim = theta0.shape

    @property
    def layout(self) -> tuple[tuple[int, ...], ...]:
        return self.shape.layout

    def init_params(self) -> Tensor:
        return self.theta0.clone()

    def minibatch(self, step: int) -> tuple[Tensor, Tensor]:
        rows = self.stream.indices(step)
        return self.X[rows], self.y[rows]

    def loss(self, theta: Tensor, step: int) -> Tensor:
        x, labels = self.minibatch(step)
        return mlp_loss(theta, self.shape, x, labels, self.activation, self.loss_name)

    def loss_and_grad(self, theta: Tensor, step: int) -> tuple[Tensor, Tensor]:
        x, labels = self.minibatch(step)
        return mlp_loss_and_grad(theta, self.shape, x, labels, self.activation, self.loss_name)

    def eval_loss(self, theta: Tensor) -> Tensor:
        """The loss on all of this instance's images (a smooth curve, not one minibatch's)."""
        with torch.no_grad():
            x, labels = whole_data(self.X, self.y, theta.shape[0])
            return mlp_loss(theta, self.shape, x, labels, self.activation, self.loss_name)


class DigitsMLP(TaskFamily):
    """MLP 64 → 20 → 10 (sigmoid, cross-entropy) on digits, fresh minibatches of 128 per step."""

    name = "digits-mlp"
    # 1,510 coordinates per instance (the quadratic: 10): 128 instances per meta-iteration cost
    # ~150 s and 9 GB each here, 8 cost as much per step as the quadratic's 128.
    train_defaults: ClassVar[Mapping[str, Any]] = {
        "batch_size": 8,
        "iterations": 150,
        "val_every": 10,
        "val_instances": 64,
        "checkpoint_every": 10,
    }

    def __init__(
        self,
        hidden: Sequence[int] = (20,),
        activation: str = "sigmoid",
        batch_size: int = 128,
        loss: str = "cross_entropy",
    ) -> None:
        if isinstance(hidden, int):
            hidden = [hidden]
        if not isinstance(hidden, (list, tuple)) or not all(
            isinstance(h, int) and not isinstance(h, bool) and 1 <= h <= 100_000 for h in hidden
        ):
            raise L2OError(
                f"digits-mlp: hidden must be a list of sizes in [1, 100000], got {hidden!r}"
            )
        if activation not in ACTIVATIONS:
            raise L2OError(
                f"digits-mlp: activation must be one of {', '.join(ACTIVATIONS)}, "
                f"got {activation!r}"
            )
        if loss not in LOSSES:
            raise L2OError(f"digits-mlp: loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        checks.integer("digits-mlp: batch_size", batch_size, 1, checks.MAX_SIZE)
        self.hidden, self.activation = list(hidden), activation
        self.batch_size, self.loss = batch_size, loss
        self.shape = MLPShape([64, *self.hidden, 10])
        self.dim = self.shape.dim

    def options(self) -> dict:
        return {
            "hidden": self.hidden,
            "activation": self.activation,
            "batch_size": self.batch_size,
            "loss": self.loss,
        }

    def data(self, split: str) -> tuple[Tensor, Tensor]:
        """Meta-training (train, validation) sees one half of the images, test the other."""
        meta_train, meta_test = digits_halves()
        return meta_test if split == "test" else meta_train

    def sample(self, split: str, indices: Sequence[int]) -> MLPBatch:
        instance_seed(self.name, split, 0)  # validates the split name
        X, y = self.data(split)
        gens = [instance_generator(self.name, split, i) for i in indices]
        theta0 = torch.stack([self.shape.init(g) for g in gens])
        stream = MinibatchStream(gens, len(y), self.batch_size)
        return MLPBatch(self.shape, X, y, theta0, stream, self.activation, self.loss)
