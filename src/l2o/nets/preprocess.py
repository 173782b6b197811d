"""Gradient preprocessing of the paper (Andrychowicz et al., 2016, appendix A)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from l2o.nets import native
from l2o.nets.scalars import scalar


def log_sign(grad: Tensor, p: float = 10.0) -> Tensor:
    """Map each gradient entry to two features, shape ``grad.shape + (2,)``.

    ``(log|g| / p, sign g)`` where ``|g| >= e^{-p}``, else ``(-1, e^{p} g)``: a scale-free input
    for the LSTM that still tells tiny gradients apart.

    Example:
        >>> log_sign(torch.tensor([1.0, 0.0])).tolist()
        [[0.0, 1.0], [-1.0, 0.0]]
    """
    if not grad.requires_grad and native.usable(grad):  # one C loop instead of ten kernels
        return native.log_sign(grad, p)
    threshold = math.exp(-p)
    magnitude = grad.abs()
    large = magnitude >= scalar(threshold, grad)
    log_part = torch.where(
        large, magnitude.clamp_min(threshold).log() / scalar(p, grad), scalar(-1.0, grad)
    )
    sign_part = torch.where(large, grad.sign(), grad * scalar(math.exp(p), grad))
    return torch.stack((log_part, sign_part), dim=-1)


def raw(grad: Tensor) -> Tensor:
    """No preprocessing: the gradient itself as one feature, shape ``grad.shape + (1,)``."""
    return grad.unsqueeze(-1)


def preprocess(grad: Tensor, kind: str, p: float = 10.0) -> Tensor:
    """``log_sign`` (2 features per gradient) or ``none`` (1 feature)."""
    return log_sign(grad, p) if kind == "log_sign" else raw(grad)


PREPROCESS_KINDS = ("log_sign", "none")


def feature_count(kind: str) -> int:
    return 2 if kind == "log_sign" else 1
