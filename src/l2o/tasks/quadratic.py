"""The paper's quadratic: f(θ) = ‖Wθ − y‖², with W, y, θ₀ drawn from N(0, 1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from l2o import checks
from l2o.tasks.base import TaskBatch, TaskFamily, instance_generator


class QuadraticBatch(TaskBatch):
    """B quadratics; the gradient 2Wᵀ(Wθ − y) is computed in closed form."""

    def __init__(self, W: Tensor, y: Tensor, theta0: Tensor) -> None:
        self.W, self.y, self.theta0 = W, y, theta0
        self.size, self.dim = theta0.shape

    def init_params(self) -> Tensor:
        return self.theta0.clone()

    def residual(self, theta: Tensor) -> Tensor:
        return torch.bmm(self.W, theta.unsqueeze(-1)).squeeze(-1) - self.y

    def loss(self, theta: Tensor, step: int) -> Tensor:
        return self.residual(theta).pow(2).sum(-1)

    def loss_and_grad(self, theta: Tensor, step: int) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            r = self.residual(theta)
            grad = torch.bmm(r.unsqueeze(1), self.W).squeeze(1)
            grad = grad + grad  # 2Wᵀr, exactly (no Python scalar: see l2o.nets.scalars)
            return r.pow(2).sum(-1), grad


class Quadratic(TaskFamily):
    """‖Wθ − y‖² with W ∈ R^{d×d}, y, θ₀ ~ N(0, 1) (the paper's; noise_std: y = Wθ* + ε)."""

    name = "quadratic"

    def __init__(self, dim: int = 10, noise_std: float | None = None) -> None:
        self.dim = checks.integer("quadratic: dim", dim, 1, 100_000)
        self.noise_std = (
            None if noise_std is None else checks.number("quadratic: noise_std", noise_std, 0)
        )

    def options(self) -> dict:
        return {"dim": self.dim, "noise_std": self.noise_std}

    def draw(self, split: str, index: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One instance's (W, θ*, ε, θ₀) with ε ~ N(0, 1) unscaled; y is built by the caller."""
        g = instance_generator(self.name, split, index)
        d = self.dim
        W = torch.randn(d, d, generator=g)
        target = torch.randn(d, generator=g)  # y itself, or θ* in the noisy form
        eps = torch.randn(d, generator=g)
        theta0 = torch.randn(d, generator=g)
        return W, target, eps, theta0

    def sample(self, split: str, indices: Sequence[int]) -> QuadraticBatch:
        checks.memory(
            f"{len(indices)} quadratic instances of dim {self.dim}",
            8.0 * len(indices) * self.dim**2,
        )
        parts = [self.draw(split, i) for i in indices]
        W = torch.stack([p[0] for p in parts])
        target = torch.stack([p[1] for p in parts])
        theta0 = torch.stack([p[3] for p in parts])
        if self.noise_std is None:
            y = target
        else:
            eps = torch.stack([p[2] for p in parts])
            y = torch.bmm(W, target.unsqueeze(-1)).squeeze(-1) + self.noise_std * eps
        return QuadraticBatch(W, y, theta0)
