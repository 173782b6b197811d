"""Persistent evolution strategies (PES, Vicol et al. 2021): meta-gradients without backprop.

Truncated backpropagation is biased: each window's gradient ignores how the weights shaped the
state it started from, which favours greedy, short-horizon optimizers. PES perturbs the
network's weights with antithetic Gaussian noise ±ε_k in every window k, carries each particle's
state (θ, network state) across windows, and *accumulates* the perturbations, ξ_k = Σ_{i≤k} ε_i.
For the window loss L_k,

    ĝ_k = (L_k(+) − L_k(−)) · ξ_k / (2σ²)

is an unbiased estimate of ∇_w E_ε[L_k(w + ε_1, …, w + ε_k)], the gradient of the
Gaussian-smoothed meta-loss of the *whole* unroll so far, whatever its length; memory stays that
of one forward window. Cost: two forward unrolls per instance, no backward pass.

Layout of one meta-iteration: the ``batch_size`` instances are split into ``pes_pairs`` groups;
group j runs twice (the same instances, so data and initialisation are common random numbers),
with weights w + ε_j and w − ε_j; the estimate is the instance-weighted mean over groups. The
network runs through :func:`torch.func.functional_call` with perturbed weights, so any module
built by :func:`l2o.nets.build_net` works unchanged, and the unroll is
:func:`l2o.meta.unroll.truncation_window` itself, run without a graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from l2o.config import TrainConfig
from l2o.meta.unroll import Observe, UnrollState, log_terms, start_unroll, truncation_window
from l2o.tasks.base import Layout

PES_SEED_SALT = 0x5E5  # perturbations of meta-iteration i come from (seed, i, salt)


class _Window(nn.Module):
    """``truncation_window`` as a module, so ``functional_call`` can swap the net's weights."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(
        self, start: UnrollState, observe: Observe, steps: int, weights: Tensor
    ) -> tuple[Tensor, UnrollState]:
        _, losses, end = truncation_window(self.net, start, observe, steps, weights)
        return losses, end


@dataclass
class _Particle:
    """One group of instances under one sign of its perturbation."""

    state: UnrollState
    observe: Observe


def _window_loss(losses: Tensor, weights: Tensor, log_loss: bool, log_floor: float) -> Tensor:
    """Σ_t w_t mean_b f(θ_t) (or log f) of one window, as the BPTT objective: shape ()."""
    values = log_terms(losses, log_floor) if log_loss else losses
    return (weights * values.mean(1)).sum()


class PESUnroll:
    """The antithetic particles of one unroll and their accumulated perturbations.

    Args:
        net: the learned optimizer (its weights are read, never written).
        groups: one ``(θ₀, observe, layout)`` per pair; each is run with +ε and −ε.
        sizes: instances in each group (the estimate weighs groups by them).
        sigma: the perturbations' standard deviation.
        generator: the source of the perturbations.
    """

    def __init__(
        self,
        net: nn.Module,
        groups: list[tuple[Tensor, Observe, Layout | None]],
        sizes: list[int],
        sigma: float,
        generator: torch.Generator,
    ) -> None:
        self.names = [n for n, p in net.named_parameters() if p.requires_grad]
        params = dict(net.named_parameters())
        self.shapes = [params[n].shape for n in self.names]
        self.center = torch.cat([params[n].detach().flatten() for n in self.names])
        self.window_module = _Window(net)
        self.sigma, self.generator = sigma, generator
        self.share = torch.tensor(sizes, dtype=torch.float32) / sum(sizes)
        self.particles = [
            [_Particle(start_unroll(net, theta0, obs, layout), obs) for _ in (0, 1)]
            for theta0, obs, layout in groups
        ]
        self.xi = torch.zeros(len(groups), self.center.numel())

    @property
    def step(self) -> int:
        return self.particles[0][0].state.step

    def _named(self, flat: Tensor) -> dict[str, Tensor]:
        parts = torch.split(flat, [math.prod(s) for s in self.shapes])
        return {f"net.{n}": p.view(s) for n, p, s in zip(self.names, parts, self.shapes)}

    @torch.no_grad()
    def window(
        self, steps: int, weights: Tensor, log_loss: bool = False, log_floor: float = 0.0
    ) -> tuple[Tensor, Tensor]:
        """Advance every particle ``steps`` steps.

        Returns:
            ``(estimates, losses)``: one gradient estimate per pair ``(pairs, n_weights)`` (its
            instance-weighted mean is the meta-gradient) and the mean observed loss of each
            step ``(steps,)`` over all particles.
        """
        eps = self.sigma * torch.randn(self.xi.shape, generator=self.generator)
        self.xi += eps
        window_weights = weights[self.step : self.step + steps]
        diffs, step_losses = [], []
        for j, pair in enumerate(self.particles):
            values = []
            for sign, particle in zip((1.0, -1.0), pair):
                params = self._named(self.center + sign * eps[j])
                losses, end = functional_call(
                    self.window_module, params, (particle.state, particle.observe, steps, weights)
                )
                particle.state = end.detach()
                values.append(_window_loss(losses, window_weights, log_loss, log_floor))
                step_losses.append(losses.mean(1))
            diffs.append(values[0] - values[1])
        diff = torch.stack(diffs)
        estimates = (diff / (2 * self.sigma**2)).unsqueeze(1) * self.xi
        return estimates, torch.stack(step_losses).mean(0)

    def combine(self, estimates: Tensor) -> dict[str, Tensor]:
        """The meta-gradient (instance-weighted mean over pairs), by parameter name."""
        flat = (self.share.unsqueeze(1) * estimates).sum(0)
        return {k.removeprefix("net."): v for k, v in self._named(flat).items()}


def pes_unroll_and_step(
    net: nn.Module,
    meta_opt: torch.optim.Optimizer,
    problem,
    indices: list[int],
    config: TrainConfig,
    weights: Tensor,
    horizon: int,
    iteration: int,
) -> tuple[float, float, bool]:
    """One meta-iteration with PES: an unroll of ``horizon`` steps, one Adam step per window.

    The drop-in replacement of the truncated-BPTT step of :func:`l2o.meta.train.meta_train`
    (same arguments and returns: mean loss per step, last meta-gradient norm, all finite).
    """
    pairs = max(1, min(config.pes_pairs, len(indices)))
    chunks = [c.tolist() for c in torch.tensor_split(torch.tensor(indices), pairs)]
    groups = []
    for chunk in chunks:
        theta0, observe, batch = problem.sample("train", chunk)
        groups.append((theta0, observe, batch.layout if batch is not None else None))
    entropy = np.random.SeedSequence([config.seed, iteration, PES_SEED_SALT])
    generator = torch.Generator().manual_seed(int(entropy.generate_state(1, np.uint64)[0] >> 1))
    unroll = PESUnroll(net, groups, [len(c) for c in chunks], config.pes_sigma, generator)
    params = dict(net.named_parameters())
    total, count, grad_norm = 0.0, 0, 0.0
    while unroll.step < horizon:
        steps = min(config.truncation, horizon - unroll.step)
        estimates, losses = unroll.window(
            steps, weights, config.meta_loss == "log", config.meta_loss_floor
        )
        if not (torch.isfinite(estimates).all() and torch.isfinite(losses).all()):
            meta_opt.zero_grad(set_to_none=True)
            return (total / count if count else math.nan), math.nan, False
        meta_opt.zero_grad(set_to_none=True)
        for name, grad in unroll.combine(estimates).items():
            params[name].grad = grad.clone()
        grads = [params[n] for n in unroll.names]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(grads, config.grad_clip or math.inf))
        meta_opt.step()
        unroll.center = torch.cat([params[n].detach().flatten() for n in unroll.names])
        total += float(losses.sum())
        count += steps
    return (total / count if count else math.nan), grad_norm, True
