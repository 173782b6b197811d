"""MLPs of random architecture on synthetic data: a meta-training distribution, not a benchmark.

Each batch draws one *architecture*: classification or regression, a data source, the input and
output sizes, 1–3 hidden layers of 8–64 units (log-uniform) and an activation. Each instance of
the batch then draws its own data set, initialisation and minibatch stream. Data sources:

- ``sklearn``: ``make_classification`` / ``make_regression`` (features N(0, 1), targets
  standardised);
- ``teacher``: inputs N(0, 1) through a random tanh network (argmax for classes, standardised
  outputs for regression);
- ``digits``: the meta-train half of sklearn's digits (classification only; the ``test`` split
  uses the meta-test half, as ``digits-mlp`` does, and meta-training never reads ``test``).

No other real data set is used: they are held out to measure generalisation.

Why one architecture per batch: θ is one ``(B, dim)`` tensor, so the B instances of a batch must
share a shape. The architecture comes from the seed of the batch's **first** index, so
``sample(split, [i, ...])`` and ``sample(split, [i])`` agree on instance i, while a batch whose
first index differs may have another shape. To evaluate on one fixed architecture use
``digits-mlp`` with its options (``hidden``, ``activation``, ``loss``).

Example:
    >>> family = RandomMLP()
    >>> batch = family.sample("train", [0, 1])
    >>> batch.init_params().shape[0], len(batch.layout) >= 4  # weight and bias per layer
    (2, True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from l2o.errors import L2OError
from l2o.tasks.base import TaskBatch, TaskFamily, instance_generator, instance_seed
from l2o.tasks.digits_mlp import DigitsMLP, MinibatchStream, digits_halves
from l2o.tasks.mlp import ACTIVATIONS, REGRESSION, MLPShape, mlp_loss, mlp_loss_and_grad

PROBLEMS = ("classification", "regression")
SOURCES = ("sklearn", "teacher", "digits")
REGRESSION_SOURCES = ("sklearn", "teacher")  # digits has classes only
TEACHER_WIDTH = 16


@dataclass(frozen=True)
class Architecture:
    """What the instances of one batch share."""

    problem: str  # "classification" or "regression"
    source: str  # where the data comes from
    sizes: tuple[int, ...]  # input, hidden..., output
    activation: str

    @property
    def loss(self) -> str:
        return "cross_entropy" if self.problem == "classification" else REGRESSION


class RandomMLPBatch(TaskBatch):
    """B MLPs of one architecture, each on its own data ``X`` ``(B, n, in)``."""

    def __init__(
        self, arch: Architecture, X: Tensor, y: Tensor, theta0: Tensor, stream: MinibatchStream
    ) -> None:
        self.arch, self.X, self.y, self.theta0, self.stream = arch, X, y, theta0, stream
        self.shape = MLPShape(arch.sizes)
        self.size, self.dim = theta0.shape
        self._rows = torch.arange(self.size).unsqueeze(1)

    @property
    def layout(self) -> tuple[tuple[int, ...], ...]:
        return self.shape.layout

    def init_params(self) -> Tensor:
        return self.theta0.clone()

    def minibatch(self, step: int) -> tuple[Tensor, Tensor]:
        rows = self.stream.indices(step)
        return self.X[self._rows, rows], self.y[self._rows, rows]

    def loss(self, theta: Tensor, step: int) -> Tensor:
        x, y = self.minibatch(step)
        return mlp_loss(theta, self.shape, x, y, self.arch.activation, self.arch.loss)

    def loss_and_grad(self, theta: Tensor, step: int) -> tuple[Tensor, Tensor]:
        x, y = self.minibatch(step)
        return mlp_loss_and_grad(theta, self.shape, x, y, self.arch.activation, self.arch.loss)

    def eval_loss(self, theta: Tensor) -> Tensor:
        """The loss on all of each instance's data."""
        with torch.no_grad():
            return mlp_loss(theta, self.shape, self.X, self.y, self.arch.activation, self.arch.loss)


def _check_range(name: str, value: Sequence[int], low: int, high: int) -> tuple[int, int]:
    ok = (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and low <= value[0] <= value[1] <= high
    )
    if not ok:
        raise L2OError(
            f"random-mlp: {name} must be [min, max] with {low} <= min <= max <= {high}, "
            f"got {value!r}"
        )
    return int(value[0]), int(value[1])


def _check_choices(name: str, value: Sequence[str], allowed: Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not value or any(v not in allowed for v in value):
        raise L2OError(
            f"random-mlp: {name} must be a non-empty list among {', '.join(allowed)}, got {value!r}"
        )
    return tuple(value)


def _log_uniform_int(rng: np.random.Generator, low: int, high: int) -> int:
    return round(math.exp(rng.uniform(math.log(low), math.log(high + 0.5 - 1e-9))))


class RandomMLP(TaskFamily):
    """Random MLPs (depth 1–3, width 8–64, 4 activations) on synthetic data and digits' half."""

    name = "random-mlp"
    # Up to ~10k coordinates per instance, like the digits MLP's order: its meta-training sizes.
    train_defaults: ClassVar[Mapping[str, Any]] = DigitsMLP.train_defaults
    # Validation and evaluation run instances in groups of this size, so a validation set
    # covers several architectures (one architecture per group: see the module docstring).
    group_size = 8

    def __init__(
        self,
        depth: Sequence[int] = (1, 3),
        width: Sequence[int] = (8, 64),
        activations: Sequence[str] = ACTIVATIONS,
        problems: Sequence[str] = PROBLEMS,
        sources: Sequence[str] = SOURCES,
        inputs: Sequence[int] = (2, 32),
        samples: int = 512,
        batch_size: int = 64,
    ) -> None:
        self.depth = _check_range("depth", list(depth), 1, 8)
        self.width = _check_range("width", list(width), 1, 4096)
        self.inputs = _check_range("inputs", list(inputs), 2, 4096)
        self.activations = _check_choices("activations", activations, ACTIVATIONS)
        self.problems = _check_choices("problems", problems, PROBLEMS)
        self.sources = _check_choices("sources", sources, SOURCES)
        if "classification" not in self.problems and not set(self.sources) & set(
            REGRESSION_SOURCES
        ):
            raise L2OError("random-mlp: regression needs a source among sklearn, teacher")
        for key, value in (("samples", samples), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise L2OError(f"random-mlp: {key} must be an integer >= 1, got {value!r}")
        self.samples, self.batch_size = samples, batch_size
        self.dim = 0  # varies by batch: read ``batch.dim``

    def options(self) -> dict:
        return {
            "depth": list(self.depth),
            "width": list(self.width),
            "activations": list(self.activations),
            "problems": list(self.problems),
            "sources": list(self.sources),
            "inputs": list(self.inputs),
            "samples": self.samples,
            "batch_size": self.batch_size,
        }

    def architecture(self, split: str, index: int) -> Architecture:
        """The architecture of a batch whose first index is ``index``."""
        rng = np.random.default_rng([instance_seed(self.name, split, index), 1])
        problem = str(rng.choice(self.problems))
        allowed = self.sources if problem == "classification" else REGRESSION_SOURCES
        sources = [s for s in self.sources if s in allowed]
        if not sources:  # regression was drawn but only digits is allowed
            problem, sources = "classification", list(self.sources)
        source = str(rng.choice(sources))
        if source == "digits":
            n_in, n_out = 64, 10
        else:
            n_out = (
                int(rng.integers(2, 11)) if problem == "classification" else int(rng.integers(1, 5))
            )
            n_in = _log_uniform_int(rng, *self.inputs)
        depth = int(rng.integers(self.depth[0], self.depth[1] + 1))
        hidden = [_log_uniform_int(rng, *self.width) for _ in range(depth)]
        activation = str(rng.choice(self.activations))
        return Architecture(problem, source, (n_in, *hidden, n_out), activation)

    def data(self, arch: Architecture, split: str, index: int) -> tuple[Tensor, Tensor]:
        """One instance's (X, y): labels ``(n,)`` for classes, targets ``(n, out)`` otherwise."""
        if arch.source == "digits":
            meta_train, meta_test = digits_halves()
            return meta_test if split == "test" else meta_train
        seed = instance_seed(self.name, split, index) % (2**32)
        n_in, n_out = arch.sizes[0], arch.sizes[-1]
        if arch.source == "sklearn":
            X, y = _sklearn_data(arch.problem, self.samples, n_in, n_out, seed)
        else:
            X, y = _teacher_data(arch.problem, self.samples, n_in, n_out, seed)
        X = torch.as_tensor(X, dtype=torch.float32)
        if arch.problem == "classification":
            return X, torch.as_tensor(y, dtype=torch.long)
        y = torch.as_tensor(y, dtype=torch.float32).reshape(len(X), n_out)
        return X, (y - y.mean(0)) / y.std(0).clamp_min(1e-6)

    def sample(self, split: str, indices: Sequence[int]) -> RandomMLPBatch:
        indices = list(indices)
        if not indices:
            raise L2OError("random-mlp: sample needs at least one index")
        arch = self.architecture(split, indices[0])
        shape = MLPShape(arch.sizes)
        parts = [self.data(arch, split, i) for i in indices]
        X = torch.stack([p[0] for p in parts])
        y = torch.stack([p[1] for p in parts])
        gens = [instance_generator(self.name, split, i) for i in indices]
        theta0 = torch.stack([shape.init(g) for g in gens])
        stream = MinibatchStream(gens, X.shape[1], self.batch_size)
        return RandomMLPBatch(arch, X, y, theta0, stream)


def _sklearn_data(
    problem: str, n: int, n_in: int, n_out: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification, make_regression

    if problem == "regression":
        return make_regression(
            n_samples=n,
            n_features=n_in,
            n_informative=max(1, n_in // 2),
            n_targets=n_out,
            noise=1.0,
            random_state=seed,
        )
    # make_classification needs n_classes <= 2**n_informative (one cluster per class).
    informative = min(n_in, max(math.ceil(math.log2(n_out)) + 1, n_in // 2))
    return make_classification(
        n_samples=n,
        n_features=n_in,
        n_informative=informative,
        n_redundant=0,
        n_classes=min(n_out, 2**informative),  # tiny inputs: fewer classes than outputs
        n_clusters_per_class=1,
        random_state=seed,
    )


def _teacher_data(
    problem: str, n: int, n_in: int, n_out: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs N(0, 1) through a random 1-hidden-layer tanh network (unit-variance weights)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_in))
    W1 = rng.standard_normal((n_in, TEACHER_WIDTH)) / math.sqrt(n_in)
    W2 = rng.standard_normal((TEACHER_WIDTH, n_out)) / math.sqrt(TEACHER_WIDTH)
    out = np.tanh(X @ W1) @ W2
    if problem == "classification":
        return X, out.argmax(1)
    return X, out
