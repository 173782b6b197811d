"""Initializers: build K optimizees that share θ but see different versions of one task's data.

An initializer turns a base task (``quadratic`` or ``digits-mlp``) and its own options into a
:class:`ConcurrentSet`: K *variants* in a canonical order, each with a label (``sigma=0.1``,
``angle=20``, ...), and which of them is the clean one. A set samples a
:class:`ConcurrentBatch` of B instances whose :meth:`~ConcurrentBatch.grads` gives all K
gradients of all B instances in one batched call.

The meta-objective is always the *clean* objective, never an optimizee's own loss:

- quadratic: the noise-free least squares ``‖W(θ − θ*)‖²``;
- digits-mlp: the cross-entropy (or the task's loss) on clean held-out images: each half of the
  images is cut once into an optimizee part (the first 2/3, which the variants are built from)
  and a held-out part (the last 1/3, never seen by any optimizee).

Example:
    >>> cset = build_set("noise", "quadratic", {}, {"levels": [0.01, 0.5]})
    >>> batch = cset.sample("train", [0, 1, 2])
    >>> losses, grads = batch.grads(batch.init_params(), step=0)
    >>> tuple(grads.shape)  # (B, D, K)
    (3, 10, 2)
"""

from __future__ import annotations

import functools
import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from l2o import checks
from l2o.errors import L2OError
from l2o.tasks import TaskBatch, TaskFamily, get_task, instance_generator
from l2o.tasks.digits_mlp import DigitsMLP, MinibatchStream
from l2o.tasks.mlp import mlp_loss, mlp_loss_and_grad, whole_data
from l2o.tasks.quadratic import Quadratic

OPTIMIZEE_FRACTION = 2 / 3  # of each half of the digits: the rest is clean held-out data


class ConcurrentBatch(ABC):
    """B instances × K optimizees sharing θ ``(B, D)``; gradients come back as ``(B, D, K)``."""

    size: int
    dim: int
    k: int

    @abstractmethod
    def init_params(self) -> Tensor:
        """θ₀ ``(B, D)``, shared by the K optimizees of an instance."""

    @abstractmethod
    def grads(self, theta: Tensor, step: int) -> tuple[Tensor, Tensor]:
        """Every optimizee's own loss ``(B, K)`` and gradient ``(B, D, K)`` at ``step``."""

    @abstractmethod
    def clean_loss_and_grad(self, theta: Tensor, step: int) -> tuple[Tensor, Tensor]:
        """The clean objective ``(B,)`` and its gradient ``(B, D)``: the meta-loss."""

    def eval_loss(self, theta: Tensor) -> Tensor:
        """The clean loss reported in results ``(B,)``."""
        return self.clean_loss_and_grad(theta, 0)[0]


class ConcurrentSet(ABC):
    """K variants of a base task; ``clean`` is the canonical index of the clean one (or None)."""

    initializer: str
    family: TaskFamily
    labels: list[str]
    clean: int | None

    @property
    def k(self) -> int:
        return len(self.labels)

    @property
    def dim(self) -> int:
        return self.family.dim

    @abstractmethod
    def sample(self, split: str, indices: Sequence[int]) -> ConcurrentBatch:
        """Instances ``indices`` of ``split``, variants in canonical order."""

    def options(self) -> dict[str, Any]:
        return {}


# --- validation helpers: every message names the option and says what is allowed ---


def _numbers(
    name: str, option: str, values: Any, low: float, high: float = math.inf
) -> list[float]:
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [values]
    if not isinstance(values, (list, tuple)) or not values:
        raise L2OError(f"{name}: {option} must be a non-empty list of numbers, got {values!r}")
    out = []
    for v in values:
        finite = isinstance(v, (int, float)) and math.isfinite(v)
        if isinstance(v, bool) or not finite or not low <= v <= high:
            bounds = f"in [{low:g}, {high:g}]" if math.isfinite(high) else f">= {low:g} (finite)"
            raise L2OError(f"{name}: every {option} must be a number {bounds}, got {v!r}")
        out.append(float(v))
    return out


def _no_unknown(name: str, options: Mapping[str, Any], known: Sequence[str]) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise L2OError(f"{name}: unknown option(s) {', '.join(unknown)}; known: {', '.join(known)}")


def _needs(name: str, family: TaskFamily, kinds: tuple[type, ...], task_names: str) -> None:
    if not isinstance(family, kinds):
        raise L2OError(f"initializer {name} works on {task_names}, not on task {family.name!r}")


# --- the noisy least-squares set (quadratic) ---


class QuadraticNoiseBatch(ConcurrentBatch):
    """y_k = Wθ* + σ_k ε_k; optimizee k minimises ‖Wθ − y_k‖², the clean objective ‖W(θ − θ*)‖²."""

    def __init__(self, W: Tensor, clean_y: Tensor, noisy_y: Tensor, theta0: Tensor) -> None:
        self.W, self.clean_y, self.noisy_y, self.theta0 = W, clean_y, noisy_y, theta0
        self.size, self.dim = theta0.shape
        self.k = noisy_y.shape[1]

    def init_params(self) -> Tensor:
        return self.theta0.clone()

    def grads(self, theta: Tensor, step: int) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            r = torch.bmm(self.W, theta.unsqueeze(-1)).squeeze(-1).unsqueeze(1) - self.noisy_y
            # one bmm for all K residuals: (B, K, d) @ (B, d, d)
            return r.pow(2).sum(-1), 2.0 * torch.bmm(r, self.W).transpose(1, 2)

    def clean_loss_and_grad(self, theta: Tensor, step: int) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            r = torch.bmm(self.W, theta.unsqueeze(-1)).squeeze(-1) - self.clean_y
            return r.pow(2).sum(-1), 2.0 * torch.bmm(r.unsqueeze(1), self.W).squeeze(1)


class QuadraticNoiseSet(ConcurrentSet):
    initializer = "noise"

    def __init__(self, family: Quadratic, levels: list[float]) -> None:
        self.family, self.levels = family, levels
        self.labels = [f"sigma={s:g}" for s in levels]
        self.clean = min(range(len(levels)), key=levels.__getitem__)

    def options(self) -> dict[str, Any]:
        return {"levels": self.levels}

    def sample(self, split: str, indices: Sequence[int]) -> QuadraticNoiseBatch:
        parts = [self.family.draw(split, i) for i in indices]
        W = torch.stack([p[0] for p in parts])
        theta_star = torch.stack([p[1] for p in parts])
        theta0 = torch.stack([p[3] for p in parts])
        # ε per optimizee from its own stream, so the K noises are independent of each other
        eps = torch.stack(
            [
                torch.randn(self.k, self.family.dim, generator=_variant_generator(self, split, i))
                for i in indices
            ]
        )
        clean_y = torch.bmm(W, theta_star.unsqueeze(-1)).squeeze(-1)
        sigma = torch.tensor(self.levels).view(1, -1, 1)
        return QuadraticNoiseBatch(W, clean_y, clean_y.unsqueeze(1) + sigma * eps, theta0)


def _variant_generator(cset: ConcurrentSet, split: str, index: int) -> torch.Generator:
    """The stream of an instance's variant randomness, apart from the base task's own."""
    return instance_generator(f"{cset.family.name}/{cset.initializer}", split, index)


# --- the digits sets: K data variants, one batched MLP call for all B × K optimizees ---


@functools.lru_cache(maxsize=4)
def digits_parts(family: DigitsMLP, split: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(X, y) the optimizees' part and (X, y) the clean held-out part of ``split``'s half."""
    X, y = family.data(split)
    n = round(len(y) * OPTIMIZEE_FRACTION)
    return X[:n], y[:n], X[n:], y[n:]


class DigitsVariantBatch(ConcurrentBatch):
    """B × K MLPs: optimizee (b, k) sees images ``X[xsel[b, k]]`` with labels ``Y[b, k]``.

    Every step draws one minibatch of row indices per instance (shared by its K optimizees, so
    they differ only in their data), or per (instance, shard) when ``pool`` restricts each
    optimizee to its own rows.
    """

    def __init__(
        self,
        family: DigitsMLP,
        X: Tensor,
        xsel: Tensor,
        Y: Tensor,
        held_out: tuple[Tensor, Tensor],
        theta0: Tensor,
        stream: MinibatchStream,
        pool: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        self.family, self.X, self.xsel, self.Y = family, X, xsel, Y
        self.held_x, self.held_y = held_out
        self.theta0, self.stream, self.pool = theta0, stream, pool
        self.size, self.dim = theta0.shape
        self.k = xsel.shape[1]
        self.n = Y.shape[2]

    def init_params(self) -> Tensor:
        return self.theta0.clone()

    def rows(self, step: int) -> Tensor:
        """Row indices ``(B, K, m)`` of every optimizee's minibatch at ``step``."""
        rows = self.stream.indices(step)  # (B, m) in [0, n)
        B, m = rows.shape
        if self.pool is None:
            return rows.unsqueeze(1).expand(B, self.k, m)
        members, sizes = self.pool  # (B, K, n_max), (B, K)
        # rescale the shared uniform draw into each shard: a uniform row of that shard
        local = rows.unsqueeze(1) * sizes.unsqueeze(-1) // self.n
        return members.gather(2, local)

    def grads(self, theta: Tensor, step: int) -> tuple[Tensor, Tensor]:
        rows = self.rows(step)
        B, K, m = rows.shape
        x = self.X[self.xsel.unsqueeze(-1), rows]  # (B, K, m, in)
        labels = self.Y.gather(2, rows)
        f = self.family
        loss, grad = mlp_loss_and_grad(
            theta.repeat_interleave(K, 0),
            f.shape,
            x.reshape(B * K, m, -1),
            labels.reshape(B * K, m),
            f.activation,
            f.loss,
        )
        return loss.view(B, K), grad.view(B, K, -1).transpose(1, 2)

    def clean_loss_and_grad(self, theta: Tensor, step: int) -> tuple[Tensor, Tensor]:
        x, labels = whole_data(self.held_x, self.held_y, theta.shape[0])
        f = self.family
        return mlp_loss_and_grad(theta, f.shape, x, labels, f.activation, f.loss)

    def eval_loss(self, theta: Tensor) -> Tensor:
        with torch.no_grad():
            x, labels = whole_data(self.held_x, self.held_y, theta.shape[0])
            f = self.family
            return mlp_loss(theta, f.shape, x, labels, f.activation, f.loss)


VariantData = tuple[Tensor, Tensor, Tensor, tuple[Tensor, Tensor] | None]  # X, xsel, Y, pool


class DigitsVariantSet(ConcurrentSet):
    """A digits set defined by :meth:`variants`: the K versions of the optimizee data."""

    def __init__(self, family: DigitsMLP) -> None:
        self.family = family

    @abstractmethod
    def variants(self, X: Tensor, y: Tensor, gens: list[torch.Generator]) -> VariantData:
        """Images ``(V, n, in)``, which image set each optimizee uses ``(B, K)``, labels
        ``(B, K, n)``, and optionally each optimizee's rows (members, sizes)."""

    def sample(self, split: str, indices: Sequence[int]) -> DigitsVariantBatch:
        X, y, held_x, held_y = digits_parts(self.family, split)
        # the base task's own streams (θ₀ and minibatches, exactly as digits-mlp draws them) ...
        gens = [instance_generator(self.family.name, split, i) for i in indices]
        theta0 = torch.stack([self.family.shape.init(g) for g in gens])
        stream = MinibatchStream(gens, len(y), self.family.batch_size)
        # ... and the variants' own, so the base instance is the same whatever the initializer
        vgens = [_variant_generator(self, split, i) for i in indices]
        Xv, xsel, Y, pool = self.variants(X, y, vgens)
        return DigitsVariantBatch(self.family, Xv, xsel, Y, (held_x, held_y), theta0, stream, pool)


class PoisonSet(DigitsVariantSet):
    """Optimizee k: a fraction ρ_k of its labels replaced by random *wrong* labels."""

    initializer = "poison"

    def __init__(self, family: DigitsMLP, rates: list[float]) -> None:
        super().__init__(family)
        self.rates = rates
        self.labels = [f"rho={r:g}" for r in rates]
        self.clean = min(range(len(rates)), key=rates.__getitem__)

    def options(self) -> dict[str, Any]:
        return {"rates": self.rates}

    def variants(self, X: Tensor, y: Tensor, gens: list[torch.Generator]) -> VariantData:
        n, K, B = len(y), self.k, len(gens)
        counts = torch.tensor([round(r * n) for r in self.rates]).view(K, 1)
        Y = []
        for g in gens:  # per-instance seeds; everything inside is batched over K
            ranks = torch.rand(K, n, generator=g).argsort(1).argsort(1)
            flip = ranks < counts  # exactly round(ρ n) rows per optimizee
            shift = torch.randint(1, 10, (K, n), generator=g)  # never the true label
            Y.append(torch.where(flip, (y + shift) % 10, y))
        return X.unsqueeze(0), torch.zeros(B, K, dtype=torch.long), torch.stack(Y), None


def rotate_images(X: Tensor, degrees: float, side: int = 8) -> Tensor:
    """Rotate flattened ``side × side`` images by ``degrees`` (counter-clockwise, bilinear).

    Example:
        >>> X = torch.rand(3, 64)
        >>> torch.allclose(rotate_images(X, 0.0), X)
        True
    """
    a = math.radians(degrees)
    # affine_grid maps output to input coordinates: rotating the image by +a samples at -a
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])
    images = X.view(-1, 1, side, side)
    grid = F.affine_grid(theta.expand(len(images), 2, 3), list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(X.shape)


class RotationSet(DigitsVariantSet):
    """Optimizee k: the images rotated by angle_k degrees (labels unchanged)."""

    initializer = "rotation"

    def __init__(self, family: DigitsMLP, angles: list[float]) -> None:
        super().__init__(family)
        self.angles = angles
        self.labels = [f"angle={a:g}" for a in angles]
        self.clean = min(range(len(angles)), key=lambda i: abs(angles[i]))
        self._cache: dict[int, Tensor] = {}

    def options(self) -> dict[str, Any]:
        return {"angles": self.angles}

    def variants(self, X: Tensor, y: Tensor, gens: list[torch.Generator]) -> VariantData:
        key = id(X)  # the optimizee half of one split: rotate it once, not every sample
        if key not in self._cache:
            self._cache[key] = torch.stack([rotate_images(X, a) for a in self.angles])
        B, K = len(gens), self.k
        xsel = torch.arange(K).expand(B, K)
        return self._cache[key], xsel, y.expand(B, K, len(y)), None


class PixelNoiseSet(DigitsVariantSet):
    """Optimizee k: Gaussian noise of standard deviation σ_k added to every pixel (per instance)."""

    initializer = "noise"

    def __init__(self, family: DigitsMLP, levels: list[float]) -> None:
        super().__init__(family)
        self.levels = levels
        self.labels = [f"sigma={s:g}" for s in levels]
        self.clean = min(range(len(levels)), key=levels.__getitem__)

    def options(self) -> dict[str, Any]:
        return {"levels": self.levels}

    def variants(self, X: Tensor, y: Tensor, gens: list[torch.Generator]) -> VariantData:
        B, K = len(gens), self.k
        sigma = torch.tensor(self.levels).view(K, 1, 1)
        Xv = torch.cat([X + sigma * torch.randn(K, *X.shape, generator=g) for g in gens])
        return Xv, torch.arange(B * K).view(B, K), y.expand(B, K, len(y)), None


class ShardSet(DigitsVariantSet):
    """Optimizee k: its own disjoint part of the data, equal or Dirichlet(α)-sized."""

    initializer = "shards"

    def __init__(self, family: DigitsMLP, parts: int, alpha: float | None) -> None:
        super().__init__(family)
        self.parts, self.alpha = parts, alpha
        self.labels = [f"shard {i}" for i in range(parts)]
        self.clean = None  # every shard is clean data: there is no one right slot

    def options(self) -> dict[str, Any]:
        return {"parts": self.parts, "alpha": self.alpha}

    def sizes(self, n: int, g: torch.Generator) -> Tensor:
        K = self.parts
        if self.alpha is None:
            return torch.full((K,), n // K) + (torch.arange(K) < n % K)
        # Dirichlet via normalised Gamma draws (torch's Dirichlet takes no generator)
        weights = _gamma(self.alpha, K, g)
        sizes = 1 + torch.floor(weights / weights.sum() * (n - K)).long()
        sizes[torch.argmax(sizes)] += n - int(sizes.sum())  # every row in exactly one shard
        return sizes

    def variants(self, X: Tensor, y: Tensor, gens: list[torch.Generator]) -> VariantData:
        n, K, B = len(y), self.parts, len(gens)
        if n < K:
            raise L2OError(f"shards: parts must be <= {n} (the images available), got {K}")
        members = torch.zeros(B, K, n, dtype=torch.long)
        sizes = torch.zeros(B, K, dtype=torch.long)
        for b, g in enumerate(gens):
            order = torch.randperm(n, generator=g)
            s = self.sizes(n, g)
            for k, part in enumerate(torch.split(order, s.tolist())):
                members[b, k, : len(part)] = part
            sizes[b] = s
        xsel = torch.zeros(B, K, dtype=torch.long)
        return X.unsqueeze(0), xsel, y.expand(B, K, n), (members, sizes)


def _gamma(alpha: float, k: int, g: torch.Generator) -> Tensor:
    """k Gamma(α, 1) draws from ``g`` (Marsaglia–Tsang, boosted for α < 1)."""
    boost = alpha < 1
    a = alpha + 1 if boost else alpha
    d = a - 1 / 3
    c = 1 / math.sqrt(9 * d)
    out = torch.empty(k)
    filled = torch.zeros(k, dtype=torch.bool)
    while not filled.all():  # acceptance ~ 95 %: a couple of rounds at most
        x = torch.randn(k, generator=g)
        v = (1 + c * x) ** 3
        u = torch.rand(k, generator=g)
        ok = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * torch.log(v.clamp_min(1e-12)))
        take = ok & ~filled
        out[take] = (d * v)[take]
        filled |= ok
    if boost:
        out = out * torch.rand(k, generator=g) ** (1 / alpha)
    return out


# --- the grid set: any task, K option combinations (K different functions) ---


class GridBatch(ConcurrentBatch):
    """K batches of possibly different functions; gradients come one batched call per point."""

    def __init__(self, batches: list[TaskBatch], clean: TaskBatch) -> None:
        self.batches, self.clean_batch = batches, clean
        self.size, self.dim = clean.size, clean.dim
        self.k = len(batches)

    def init_params(self) -> Tensor:
        return self.clean_batch.init_params()

    def grads(self, theta: Tensor, step: int) -> tuple[Tensor, Tensor]:
        # the K points are different functions (activations, losses): one call each, over B
        pairs = [b.loss_and_grad(theta, step) for b in self.batches]
        return torch.stack([p[0] for p in pairs], 1), torch.stack([p[1] for p in pairs], -1)

    def clean_loss_and_grad(self, theta: Tensor, step: int) -> tuple[Tensor, Tensor]:
        return self.clean_batch.loss_and_grad(theta, step)

    def eval_loss(self, theta: Tensor) -> Tensor:
        return self.clean_batch.eval_loss(theta)


class GridSet(ConcurrentSet):
    """Optimizee k: the base task with the k-th combination of the listed option values."""

    initializer = "grid"

    def __init__(self, task: str, base: Mapping[str, Any], grid: Mapping[str, list]) -> None:
        self.family = get_task(task, base)
        self.base, self.grid = dict(base), {k: list(v) for k, v in grid.items()}
        self.points = [dict(zip(self.grid, combo)) for combo in itertools.product(*grid.values())]
        self.families = [get_task(task, {**self.base, **p}) for p in self.points]
        for p, f in zip(self.points, self.families):
            if f.dim != self.family.dim:
                raise L2OError(
                    f"grid: point {p} changes the parameter count ({f.dim} vs {self.family.dim});"
                    " the optimizees share θ, so grid only options that keep its shape"
                )
        self.labels = [",".join(f"{k}={v}" for k, v in p.items()) for p in self.points]
        same = [i for i, f in enumerate(self.families) if f.options() == self.family.options()]
        self.clean = same[0] if same else None

    def options(self) -> dict[str, Any]:
        return {"options": self.grid}

    def sample(self, split: str, indices: Sequence[int]) -> GridBatch:
        return GridBatch(
            [f.sample(split, indices) for f in self.families], self.family.sample(split, indices)
        )


# --- the registry ---


def _noise(task: str, task_options: Mapping[str, Any], options: Mapping[str, Any]):
    _no_unknown("noise", options, ["levels"])
    if "noise_std" in task_options and task_options["noise_std"] is not None:
        raise L2OError("noise: the initializer sets the noise levels; drop the noise_std option")
    family = get_task(task, task_options)
    levels = _numbers("noise", "levels", options.get("levels", [0.01, 0.1, 0.2, 0.3, 0.4]), 0.0)
    if isinstance(family, Quadratic):
        return QuadraticNoiseSet(family, levels)
    _needs("noise", family, (DigitsMLP,), "quadratic and digits-mlp")
    return PixelNoiseSet(family, levels)


def _poison(task: str, task_options: Mapping[str, Any], options: Mapping[str, Any]):
    _no_unknown("poison", options, ["rates"])
    family = get_task(task, task_options)
    _needs("poison", family, (DigitsMLP,), "digits-mlp")
    rates = _numbers("poison", "rates", options.get("rates", [0, 0.2, 0.4, 0.6]), 0, 1)
    return PoisonSet(family, rates)


def _rotation(task: str, task_options: Mapping[str, Any], options: Mapping[str, Any]):
    _no_unknown("rotation", options, ["angles"])
    family = get_task(task, task_options)
    _needs("rotation", family, (DigitsMLP,), "digits-mlp")
    angles = _numbers("rotation", "angles", options.get("angles", [0, 20, 45]), -360, 360)
    return RotationSet(family, angles)


def _shards(task: str, task_options: Mapping[str, Any], options: Mapping[str, Any]):
    _no_unknown("shards", options, ["parts", "alpha"])
    family = get_task(task, task_options)
    _needs("shards", family, (DigitsMLP,), "digits-mlp")
    parts = options.get("parts", 4)
    checks.integer("shards: parts (K)", parts, 1, 1000)
    alpha = options.get("alpha")
    if alpha is not None:
        alpha = checks.number("shards: alpha (Dirichlet concentration)", alpha, 0, low_open=True)
    return ShardSet(family, parts, alpha)


def _grid(task: str, task_options: Mapping[str, Any], options: Mapping[str, Any]):
    _no_unknown("grid", options, ["options"])
    grid = options.get("options", {"activation": ["sigmoid", "tanh", "relu"]})
    if not isinstance(grid, Mapping) or not grid:
        raise L2OError(f"grid: options must be a table of option lists, got {grid!r}")
    for key, values in grid.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise L2OError(f"grid: options.{key} must be a non-empty list, got {values!r}")
    return GridSet(task, task_options, grid)


Builder = Callable[[str, Mapping[str, Any], Mapping[str, Any]], ConcurrentSet]

INITIALIZERS: dict[str, tuple[Builder, str, str]] = {
    # name: (builder, default task, description)
    "noise": (_noise, "quadratic", "increasing noise levels (least-squares targets or pixels)"),
    "poison": (_poison, "digits-mlp", "a fraction of labels replaced by wrong random ones"),
    "shards": (_shards, "digits-mlp", "disjoint (or Dirichlet-sized) parts of the data"),
    "rotation": (_rotation, "digits-mlp", "digits rotated by given angles (degrees)"),
    "grid": (_grid, "digits-mlp", "the Cartesian product of lists of task options"),
}


def build_set(
    name: str,
    task: str | None = None,
    task_options: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
) -> ConcurrentSet:
    """The K optimizees of initializer ``name`` on ``task`` (default: the initializer's own)."""
    from l2o.concurrent.attacks import ATTACKS, build_attack_set

    if name in ATTACKS and name not in INITIALIZERS:  # f of K sources Byzantine (attacks.py)
        return build_attack_set(name, task or "digits-mlp", task_options or {}, options or {})
    if name not in INITIALIZERS:
        raise L2OError(f"unknown initializer {name!r}; known: {', '.join(describe_all())}")
    builder, default_task, _ = INITIALIZERS[name]
    return builder(task or default_task, dict(task_options or {}), dict(options or {}))


def default_task(name: str) -> str:
    from l2o.concurrent.attacks import ATTACKS

    if name in ATTACKS and name not in INITIALIZERS:
        return "digits-mlp"
    if name not in INITIALIZERS:
        raise L2OError(f"unknown initializer {name!r}; known: {', '.join(describe_all())}")
    return INITIALIZERS[name][1]


def describe_all() -> dict[str, str]:
    """Initializer name → one-line description (for ``l2o list``), attacks included."""
    from l2o.concurrent.attacks import ATTACKS

    out = {name: desc for name, (_, _, desc) in INITIALIZERS.items()}
    for name, (_, desc) in ATTACKS.items():
        out.setdefault(name, f"attack (f of K sources Byzantine): {desc}")
    return out
