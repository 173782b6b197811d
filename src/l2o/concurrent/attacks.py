"""Byzantine attacks as initializers: f of the K sources send a gradient made from the honest ones.

An attack is a function ``attack(honest, f, generator) -> byzantine``: from the honest sources'
gradients ``(B, D, H)`` of B instances to the f Byzantine ones ``(B, D, f)`` (or ``(B, D)``, sent
by all f). It runs at every step, on the gradients at the current θ. Definitions follow ByzFL:

- ``signflip``: −mean(honest);
- ``ipm`` (inner-product manipulation, Xie et al. 2020): −τ·mean(honest), τ = 2 (ByzFL's default);
- ``alie`` ("a little is enough", Baruch et al. 2019): mean + τ·std (coordinatewise, unbiased),
  τ = 1.5;
- ``gaussian``: N(0, σ²) per coordinate, σ = 1;
- ``inf``: +∞ in every coordinate (what a crashed or hostile client may send).

Which slots are Byzantine is drawn per instance (from its seed), never given to the combiner.
The honest sources are a base set of K + 1 clean variants (digits: K + 1 disjoint shards; the
quadratic: K + 1 noisy least-squares targets of the same σ); the last one is never a source, only
``fltrust``'s clean reference gradient.

A user's own attack, without editing l2o:

    >>> import l2o.concurrent.attacks as attacks
    >>> attacks.register_attack("zero", lambda honest, f, gen: torch.zeros_like(honest[..., 0]),
    ...                         "every Byzantine source sends 0")
    >>> cset = attacks.build_attack_set("zero", "quadratic", {}, {"k": 5, "f": 2})
    >>> losses, grads = cset.sample("train", [0, 1]).grads(cset.sample("train", [0, 1])
    ...     .init_params(), 0)
    >>> int((grads == 0).all(1).sum())  # 2 zero sources in each of the 2 instances
    4

and then ``l2o concurrent zero`` or ``l2o robust quadratic --attacks zero,signflip`` (in the same
process, e.g. through :func:`l2o.cli.main.main`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from l2o.concurrent.initializers import (
    ConcurrentBatch,
    ConcurrentSet,
    QuadraticNoiseSet,
    ShardSet,
    _no_unknown,
)
from l2o.errors import L2OError
from l2o.tasks import get_task, instance_generator
from l2o.tasks.digits_mlp import DigitsMLP
from l2o.tasks.quadratic import Quadratic

Attack = Callable[[Tensor, int, torch.Generator], Tensor]


def signflip(honest: Tensor, f: int, generator: torch.Generator) -> Tensor:
    return -honest.mean(2)


def ipm(honest: Tensor, f: int, generator: torch.Generator, tau: float = 2.0) -> Tensor:
    return -tau * honest.mean(2)


def alie(honest: Tensor, f: int, generator: torch.Generator, tau: float = 1.5) -> Tensor:
    spread = honest.std(2) if honest.shape[2] > 1 else torch.zeros_like(honest[..., 0])
    return honest.mean(2) + tau * spread


def gaussian(honest: Tensor, f: int, generator: torch.Generator, sigma: float = 1.0) -> Tensor:
    B, D, _ = honest.shape
    return sigma * torch.randn(B, D, f, generator=generator).to(honest)


def inf(honest: Tensor, f: int, generator: torch.Generator) -> Tensor:
    return torch.full_like(honest[..., 0], math.inf)


ATTACKS: dict[str, tuple[Attack, str]] = {
    "signflip": (signflip, "Byzantine sources send -mean(honest)"),
    "ipm": (ipm, "inner-product manipulation: -2 mean(honest)"),
    "alie": (alie, "a little is enough: mean + 1.5 std of the honest, per coordinate"),
    "gaussian": (gaussian, "Byzantine sources send N(0, 1) noise"),
    "inf": (inf, "Byzantine sources send +inf"),
}


def register_attack(name: str, attack: Attack, description: str = "a user's attack") -> None:
    """Add an attack (``(honest (B,D,H), f, generator) → (B,D,f) or (B,D)``) under ``name``.

    It is an initializer too (``l2o concurrent NAME``), like the built-in ones.
    """
    from l2o.concurrent.initializers import INITIALIZERS

    if not isinstance(name, str) or not name or "," in name:
        raise L2OError(f"an attack needs a non-empty name without commas, got {name!r}")
    if name in INITIALIZERS and name not in ATTACKS:
        raise L2OError(f"{name!r} is already an initializer; pick another attack name")
    if not callable(attack):
        raise L2OError(f"attack {name!r} must be a function (honest, f, generator) -> byzantine")
    ATTACKS[name] = (attack, description)


def attack_names() -> list[str]:
    return list(ATTACKS)


def check_attacks(names: Sequence[str]) -> list[str]:
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        raise L2OError(f"unknown attack(s) {', '.join(unknown)}; known: {', '.join(ATTACKS)}")
    return list(names)


def byzantine_mask(family: str, split: str, indices: Sequence[int], k: int, f: int) -> Tensor:
    """``(B, K)`` bool, True where the slot is Byzantine: f slots per instance, from its seed.

    The draw depends on the instance only (not on the attack), so every attack of a study hits
    the same slots of the same instance.
    """
    mask = torch.zeros(len(indices), k, dtype=torch.bool)
    for b, i in enumerate(indices):  # one draw per instance at sampling time, not per step
        slots = torch.randperm(k, generator=instance_generator(f"{family}/byzantine", split, i))
        mask[b, slots[:f]] = True
    return mask


class AttackBatch(ConcurrentBatch):
    """The base batch's first K sources with the Byzantine slots overwritten at every step."""

    def __init__(
        self, base: ConcurrentBatch, attack: Attack, byzantine: Tensor, generator: torch.Generator
    ) -> None:
        self.base, self.attack, self.byzantine, self.generator = base, attack, byzantine, generator
        self.size, self.dim = base.size, base.dim
        self.k = byzantine.shape[1]
        self.f = int(byzantine[0].sum()) if self.size else 0
        self.honest = ~byzantine  # (B, K): what only the oracle may see
        # slot order: honest slots first, then Byzantine ones (a per-instance permutation)
        self.order = torch.sort(byzantine.int(), dim=1, stable=True).indices
        self.reference: Tensor | None = None  # fltrust's clean gradient at the latest θ

    def init_params(self) -> Tensor:
        return self.base.init_params()

    def grads(self, theta: Tensor, step: int) -> tuple[Tensor, Tensor]:
        losses, grads = self.base.grads(theta, step)  # (B, K+1), (B, D, K+1)
        B, D, _ = grads.shape
        K, f, H = self.k, self.f, self.k - self.f
        self.reference = grads[..., K]
        losses, grads = losses[:, :K], grads[..., :K]
        if f == 0:
            return losses, grads
        honest_slots = self.order[:, :H]
        honest = grads.gather(2, honest_slots.unsqueeze(1).expand(B, D, H))
        byz = self.attack(honest, f, self.generator)
        if byz.dim() == 2:
            byz = byz.unsqueeze(2).expand(B, D, f)
        if byz.shape != (B, D, f):
            raise L2OError(
                f"an attack must return (B, D, f) = {(B, D, f)} or (B, D), got {tuple(byz.shape)}"
            )
        out = grads.scatter(2, self.order[:, H:].unsqueeze(1).expand(B, D, f), byz.to(grads))
        # Byzantine sources report a plausible loss: the honest mean
        fake = losses.gather(1, honest_slots).mean(1, keepdim=True).expand(B, f)
        return losses.scatter(1, self.order[:, H:], fake), out

    def clean_loss_and_grad(self, theta: Tensor, step: int) -> tuple[Tensor, Tensor]:
        return self.base.clean_loss_and_grad(theta, step)

    def eval_loss(self, theta: Tensor) -> Tensor:
        return self.base.eval_loss(theta)


class AttackSet(ConcurrentSet):
    """K sources of a base task, f of them Byzantine under ``attack`` (see the module docstring)."""

    def __init__(self, name: str, base: ConcurrentSet, k: int, f: int) -> None:
        if not 0 <= f < k:
            raise L2OError(f"{name}: f (Byzantine sources) must be in [0, {k - 1}], got {f}")
        self.initializer, self.base, self.f = name, base, f
        self.attack = ATTACKS[name][0]
        self.family = base.family
        self.labels = [f"source {i}" for i in range(k)]
        self.clean = None  # no single clean source: the oracle is the mean of the honest ones

    def options(self) -> dict[str, Any]:
        return {"k": self.k, "f": self.f, **self.base.options()}

    def sample(self, split: str, indices: Sequence[int]) -> AttackBatch:
        byzantine = byzantine_mask(self.family.name, split, indices, self.k, self.f)
        first = indices[0] if len(indices) else 0
        gen = instance_generator(f"{self.family.name}/{self.initializer}/noise", split, first)
        return AttackBatch(self.base.sample(split, indices), self.attack, byzantine, gen)


def honest_base(
    task: str, task_options: Mapping[str, Any], k: int, alpha: float | None, sigma: float
) -> ConcurrentSet:
    """K + 1 honest variants: digits shards (Dirichlet(α)-sized when α is given) or noisy least
    squares with noise σ."""
    family = get_task(task, task_options)
    if isinstance(family, Quadratic):
        if task_options.get("noise_std") is not None:
            raise L2OError("attacks on the quadratic set the noise with sigma; drop noise_std")
        return QuadraticNoiseSet(family, [sigma] * (k + 1))
    if isinstance(family, DigitsMLP):
        return ShardSet(family, k + 1, alpha)
    raise L2OError(f"attacks work on quadratic and digits-mlp, not on task {family.name!r}")


ATTACK_OPTIONS = ("k", "f", "alpha", "sigma")


def build_attack_set(
    name: str, task: str, task_options: Mapping[str, Any], options: Mapping[str, Any]
) -> AttackSet:
    """Attack ``name`` on ``task``: options ``k`` (6), ``f`` (2), ``alpha`` (digits shards'
    Dirichlet sizes; none: equal), ``sigma`` (the quadratic's noise, 1.0)."""
    check_attacks([name])
    _no_unknown(name, options, ATTACK_OPTIONS)
    k, f = options.get("k", 6), options.get("f", 2)
    for key, value in (("k", k), ("f", f)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise L2OError(f"{name}: {key} must be an integer >= 0, got {value!r}")
    if k < 2:
        raise L2OError(f"{name}: k (sources) must be >= 2, got {k}")
    alpha, sigma = options.get("alpha"), options.get("sigma", 1.0)
    for key, value in (("alpha", alpha), ("sigma", sigma)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
        ):
            raise L2OError(f"{name}: {key} must be a number >= 0, got {value!r}")
    base = honest_base(task, task_options, k, None if alpha is None else float(alpha), sigma)
    return AttackSet(name, base, k, f)
