"""Unrolls: run a learned optimizer on a batch of optimizees, window by window.

This is the gradient estimator of meta-training: :func:`truncation_window` runs k optimizee
steps and returns a scalar whose gradient with respect to the network's weights is the
meta-gradient of that window. θ, the optimizee gradients and the LSTM state are carried from one
window to the next, detached, so memory does not grow with the horizon.

With second derivatives dropped (the default, as in the paper), the gradient fed to the network
is a constant, and d f(θ_t)/dθ_t = ∇f(θ_t) is already known; the window's meta-gradient is then
the gradient of the surrogate Σ_t w_t·mean_b⟨stopgrad ∇f(θ_t), θ_t⟩, so the optimizee itself never
enters the autograd graph (no graph through the MLP, only through the LSTM and θ).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from l2o.nets.scalars import scalar
from l2o.tasks.base import Layout, TaskBatch

# observe(θ, step) → (loss (B,), ∇loss (B, D), network inputs (B, D, ...)).
# For a plain task the inputs are the gradient itself; the concurrent framework passes the K
# optimizees' gradients as inputs and the clean loss as the objective.
Observe = Callable[[Tensor, int], tuple[Tensor, Tensor, Tensor]]


def task_observer(batch: TaskBatch) -> Observe:
    def observe(theta: Tensor, step: int) -> tuple[Tensor, Tensor, Tensor]:
        loss, grad = batch.loss_and_grad(theta, step)
        return loss, grad, grad

    return observe


@dataclass
class UnrollState:
    """What a window hands to the next: θ, the network's inputs at θ, its state (feature
    accumulators, LSTM state), the step, and how θ splits into tensors."""

    theta: Tensor
    inputs: Tensor
    state: tuple[Tensor, ...]
    step: int
    layout: Layout | None = None

    def detach(self) -> UnrollState:
        return UnrollState(
            self.theta.detach(),
            self.inputs.detach(),
            tuple(s.detach() for s in self.state),
            self.step,
            self.layout,
        )


def start_unroll(
    net: nn.Module, theta0: Tensor, observe: Observe, layout: Layout | None = None
) -> UnrollState:
    _, _, inputs = observe(theta0, 0)
    return UnrollState(theta0, inputs, net.init_state(theta0.numel(), theta0.device), 0, layout)


def apply_net(
    net: nn.Module,
    inputs: Tensor,
    state: tuple[Tensor, ...],
    layout: Layout | None = None,
    step: int = 0,
    theta: Tensor | None = None,
    tape: object | None = None,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The network on every coordinate of every instance: inputs (B, D, ...) → update (B, D)."""
    if getattr(net, "needs_params", False):
        return net.step(inputs, state, layout, step, params=theta.detach())
    if tape is not None:
        return net.step(inputs, state, layout, step, tape=tape)
    return net.step(inputs, state, layout, step)


def step_weights(kind: str, horizon: int) -> Tensor:
    """w_t for t = 1..T: uniform (the paper's), increasing (t/T, normalised), or final only."""
    if kind == "uniform":
        return torch.ones(horizon)
    if kind == "increasing":
        w = torch.arange(1, horizon + 1, dtype=torch.float32)
        return w * (horizon / w.sum())
    w = torch.zeros(horizon)
    w[-1] = 1.0
    return w


LOG_FLOOR = 1e-12


def log_terms(losses: Tensor, floor: float = 0.0) -> Tensor:
    """log f, with f clamped at ``floor`` (0: at 1e-12): losses below it teach nothing."""
    return losses.clamp_min(floor or LOG_FLOOR).log()


def _log_gradient(grad: Tensor, loss: Tensor, floor: float) -> Tensor:
    """∇ log f = ∇f / f per instance, for the first-order meta-gradient of log f.

    ``floor > 0``: 0 below the floor, consistent with :func:`log_terms`. ``floor = 0`` is the
    original rule, kept so that networks trained with it retrain bit for bit: ∇f / 1e-12 below
    1e-12, which gives a converged instance a meta-gradient up to 10⁵ times that of one still
    descending (measured on the `general` mixture, before clipping).
    """
    shape = (-1, *([1] * (grad.dim() - 1)))
    if floor <= 0:
        return grad / loss.clamp_min(LOG_FLOOR).view(shape)
    scale = torch.where(loss >= floor, 1 / loss.clamp_min(floor), torch.zeros_like(loss))
    return grad * scale.view(shape)


def truncation_window(
    net: nn.Module,
    start: UnrollState,
    observe: Observe,
    steps: int,
    weights: Tensor,
    batch: TaskBatch | None = None,
    second_order: bool = False,
    log_loss: bool = False,
    log_floor: float = 0.0,
) -> tuple[Tensor, Tensor, UnrollState]:
    """Run ``steps`` optimizee steps from ``start``.

    With ``log_loss`` the meta-loss sums log f(θ_t) instead of f(θ_t): every factor of
    improvement counts the same early and late in the run and on easy and hard instances
    (losses must be positive; they are clamped at ``log_floor``, see :func:`log_terms`).

    Returns:
        ``(objective, losses, end)``: a scalar to backpropagate (its gradient is the window's
        meta-gradient), the losses ``(steps, B)`` of θ_{t+1} after each step (no graph), and
        the state at the end of the window (still attached to the graph: detach before the
        next window; where the network differentiates the window as one node, see
        :meth:`~l2o.nets.base.OptimizerNet.window_tape`, only the objective has a graph).
    """
    theta, inputs, state, step = start.theta, start.inputs, start.state, start.step
    objective = theta.new_zeros(())
    losses = []
    tape = None
    constants = not theta.requires_grad and not any(s.requires_grad for s in state)
    if not second_order and constants and hasattr(net, "window_tape"):
        tape = net.window_tape(theta)
    if second_order:
        if batch is None:
            raise ValueError("second_order needs the task batch's differentiable loss")
        theta = theta.detach().requires_grad_(True)
        inputs = _grad_with_graph(batch, theta, step)
    for _ in range(steps):
        update, state = apply_net(net, inputs, state, start.layout, step, theta, tape)
        theta = theta + update
        step += 1
        w = weights[step - 1]
        if second_order:
            loss = batch.loss(theta, step)
            inputs = _grad_with_graph(batch, theta, step)
            term = log_terms(loss, log_floor) if log_loss else loss
            objective = objective + w * term.mean()
            loss = loss.detach()
        else:
            loss, grad, inputs = observe(theta.detach(), step)
            if log_loss:  # ∇ log f = ∇f / f
                grad = _log_gradient(grad, loss, log_floor)
            divisor = scalar(theta.shape[0], theta)
            objective = objective + w * (grad * theta).sum() / divisor
            if tape is not None:
                tape.term(grad, w, divisor)
        losses.append(loss)
    if tape is not None:
        objective = tape.attach(objective)
    return objective, torch.stack(losses), UnrollState(theta, inputs, state, step, start.layout)


def _grad_with_graph(batch: TaskBatch, theta: Tensor, step: int) -> Tensor:
    (grad,) = torch.autograd.grad(batch.loss(theta, step).sum(), theta, create_graph=True)
    return grad


@torch.no_grad()
def run_learned(
    net: nn.Module,
    theta0: Tensor,
    observe: Observe,
    steps: int,
    record: Callable[[Tensor], Tensor] | None = None,
    layout: Layout | None = None,
) -> tuple[Tensor, Tensor]:
    """Run the network for ``steps`` steps without meta-gradients.

    Returns ``record(θ_t)`` for t = 0..steps stacked as ``(steps + 1, B)`` (``record`` defaults
    to the observed loss) and the final θ. Non-finite θ are left as they are: the losses show it.
    """
    state = start_unroll(net, theta0, observe, layout)
    theta, inputs, lstm_state = state.theta, state.inputs, state.state
    curve = [record(theta) if record else observe(theta, 0)[0]]
    for step in range(1, steps + 1):
        update, lstm_state = apply_net(net, inputs, lstm_state, layout, step - 1, theta)
        theta = theta + update
        loss, _, inputs = observe(theta, step)
        curve.append(record(theta) if record else loss)
    return torch.stack(curve), theta
