"""Per-coordinate input features of learned optimizers, shared by every net kind.

A feature set (the spec key ``preprocess``) turns gradients ``(B, D)`` into inputs ``(B, D, F)``;
the stateful sets keep per-coordinate accumulators ``(B, D, S)`` carried from step to step (and
across truncation windows, in checkpoints and in the drop-in optimizer's ``state_dict``).

- ``log_sign`` (the paper's, F = 2, S = 0) and ``none`` (the raw gradient, F = 1, S = 0).
- ``adam`` (F = 11, S = 5): the gradient g, momenta m_β at β ∈ {0.5, 0.9, 0.99, 0.999} and √v
  (v the second-moment EMA at 0.999), each divided by its RMS over the coordinates of its
  *tensor* (the layout), so they are scale free per tensor (bias corrections are constant
  factors per tensor and cancel there); then g/√v and m_β/√v, scale free already and left as
  they are: they shrink when gradients shrink against their own history, the signal that a run
  is converging, which a per-tensor normalisation would erase. Time enters the nets separately
  (:func:`time_features`).
- ``rnnprop`` (F = 2, S = 2): m̂/√v̂ and g/√v̂ with β1 = β2 = 0.95, bias-corrected (Lv et al. 2017).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from l2o.nets.preprocess import log_sign
from l2o.tasks.base import Layout, layout_sizes

ADAM_BETAS = (0.5, 0.9, 0.99, 0.999)
ADAM_BETA2 = 0.999
RNNPROP_BETA = 0.95
TIME_SCALES = (1.0, 10.0, 100.0, 1000.0, 10000.0)
TINY = 1e-30  # keeps 0/0 at 0 without changing any representable scale of gradients

_COUNTS = {"log_sign": (2, 0), "none": (1, 0), "adam": (11, 5), "rnnprop": (2, 2)}
FEATURE_COUNT_ADAM = 11


def feature_count(name: str) -> int:
    """F: features per coordinate."""
    return _COUNTS[name][0]


def state_size(name: str) -> int:
    """S: accumulators per coordinate (0: stateless)."""
    return _COUNTS[name][1]


def time_features(step: int, like: Tensor) -> Tensor:
    """tanh(t / τ) for τ from 1 to 10⁴: where in a run we are, shape ``(5,)``."""
    t = float(step)
    values = [math.tanh(t / tau) for tau in TIME_SCALES]
    return torch.tensor(values, dtype=like.dtype, device=like.device)


class TensorNorm:
    """Per-(instance, tensor) RMS normalisation over a layout of D coordinates.

    The sums run over each tensor's slice of θ (a short loop over tensors: one fused reduction
    each, far cheaper here than a scattered ``index_add_``).
    """

    def __init__(self, layout: Layout | None, dim: int, device: torch.device) -> None:
        self.sizes = layout_sizes(layout) if layout else [dim]
        if sum(self.sizes) != dim:
            raise ValueError(f"layout covers {sum(self.sizes)} coordinates, θ has {dim}")
        self.lengths = torch.tensor(self.sizes, device=device)

    def rms(self, x: Tensor) -> Tensor:
        """RMS of ``x`` ``(B, D, F)`` per instance, tensor and feature, broadcastable to ``x``."""
        x = x.detach()  # a constant for autograd, as in _safe_rsqrt
        if len(self.sizes) == 1:
            return x.square().mean(1, keepdim=True).add_(TINY).sqrt_()
        parts = [part.square().mean(1, keepdim=True) for part in x.split(self.sizes, 1)]
        rms = torch.cat(parts, 1).add_(TINY).sqrt_()
        return rms.repeat_interleave(self.lengths, dim=1, output_size=x.shape[1])

    def normalise(self, x: Tensor) -> Tensor:
        return x / self.rms(x)

    def mean(self, x: Tensor) -> Tensor:
        """Mean of ``x`` ``(B, D, F)`` per instance, tensor and feature, broadcastable to ``x``
        (differentiable, unlike :meth:`rms`)."""
        if len(self.sizes) == 1:
            return x.mean(1, keepdim=True)
        parts = torch.cat([part.mean(1, keepdim=True) for part in x.split(self.sizes, 1)], 1)
        return parts.repeat_interleave(self.lengths, dim=1, output_size=x.shape[1])


def compute_features(
    name: str, grad: Tensor, acc: Tensor | None, norm: TensorNorm, step: int, p: float = 10.0
) -> tuple[Tensor, Tensor | None]:
    """Inputs ``(B, D, F)`` and the new accumulators from gradients ``(B, D)`` at ``step``
    (the number of steps taken before this one).

    Differentiable when ``grad`` is (second-order meta-training); accumulators are new tensors,
    never modified in place.
    """
    if name == "log_sign":
        return log_sign(grad, p), acc
    if name == "none":
        return grad.unsqueeze(-1), acc
    g = grad.unsqueeze(-1)
    if name == "rnnprop":
        b = RNNPROP_BETA
        m = acc[..., :1] * b + g * (1 - b)
        v = acc[..., 1:] * b + g.square() * (1 - b)
        correction = 1.0 - b ** (step + 1)
        scale = _safe_rsqrt(v / correction)  # 1/√v̂
        features = torch.cat((m / correction, g), -1) * scale
        return features, torch.cat((m, v), -1)
    betas = _betas(grad)
    # one fused EMA over [m_0.5, m_0.9, m_0.99, m_0.999, v]: acc·β + target·(1 − β)
    target = torch.cat((g.expand(*g.shape[:-1], 4), g.square()), -1)
    new_acc = torch.lerp(target, acc, betas) if acc is not None else target * (1 - betas)
    m, v = new_acc[..., :4], new_acc[..., 4:]
    inv_sqrt_v = _safe_rsqrt(v)
    if grad.requires_grad:  # second-order meta-training: out of place, for autograd
        relative = norm.normalise(torch.cat((g, m, v.detach() * inv_sqrt_v), -1))
        return torch.cat((relative, torch.cat((g, m), -1) * inv_sqrt_v), -1), new_acc
    # One buffer filled in place (no chain of concatenations): [g, m×4, √v], then the ratios
    # [g, m×4]/√v; the first six are divided by their per-tensor RMS.
    x = grad.new_empty(*grad.shape, FEATURE_COUNT_ADAM)
    x[..., :1] = g
    x[..., 1:5] = m
    torch.mul(v, inv_sqrt_v, out=x[..., 5:6])
    torch.mul(x[..., :5], inv_sqrt_v, out=x[..., 6:])
    relative = x[..., :6]
    relative.div_(norm.rms(relative))
    return x, new_acc


def _safe_rsqrt(v: Tensor) -> Tensor:
    """1/√v (0 where v = 0: a coordinate that never had a gradient), a constant for autograd.

    Normalisers are not differentiated (second-order meta-training): their derivative grows
    like 1/g² and overflows float32 for tiny gradients, and the numerators carry the signal.
    """
    return (v.detach() + TINY).rsqrt()


_BETA_CACHE: dict[tuple[torch.dtype, torch.device], Tensor] = {}


def _betas(like: Tensor) -> Tensor:
    key = (like.dtype, like.device)
    if key not in _BETA_CACHE:
        _BETA_CACHE[key] = torch.tensor((*ADAM_BETAS, ADAM_BETA2), dtype=like.dtype).to(like.device)
    return _BETA_CACHE[key]


def adam_direction(acc: Tensor, step: int, eps: float = 1e-8) -> Tensor:
    """Adam's bias-corrected m̂/(√v̂ + ε) (β1 = 0.9, β2 = 0.999) from ``adam`` accumulators."""
    t = step + 1
    m_hat = acc[..., 1] / (1 - 0.9**t)
    v_hat = acc[..., 4] / (1 - ADAM_BETA2**t)
    return m_hat / (v_hat.sqrt() + eps)
