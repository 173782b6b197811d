"""A batched MLP as a function of a flat parameter vector, with manual backprop.

B MLPs of the same shape, each with its own parameters (one row of ``theta``) and its own
minibatch, run as a few ``bmm`` calls. Losses: cross-entropy or squared error to one-hot labels
(classification, integer labels ``(B, m)``) and squared error to real targets (``"regression"``,
targets ``(B, m, out)``). The gradient is computed by hand (checked against
autograd in the tests) so meta-training builds no autograd graph through the optimizee.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

ACTIVATIONS = ("sigmoid", "relu", "tanh", "gelu")
LOSSES = ("cross_entropy", "mse")  # classification losses (integer labels)
REGRESSION = "regression"  # mean squared error to real-valued targets


class MLPShape:
    """Layer sizes and where each weight and bias sits in the flat vector (W as in × out)."""

    def __init__(self, sizes: Sequence[int]) -> None:
        self.sizes = list(sizes)
        self.slices: list[tuple[slice, slice]] = []
        offset = 0
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            w = slice(offset, offset + fan_in * fan_out)
            offset += fan_in * fan_out
            b = slice(offset, offset + fan_out)
            offset += fan_out
            self.slices.append((w, b))
        self.dim = offset

    @property
    def layout(self) -> tuple[tuple[int, ...], ...]:
        """Weight ``(in, out)`` and bias ``(out,)`` of each layer, in θ's order."""
        return tuple(
            shape
            for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:])
            for shape in ((fan_in, fan_out), (fan_out,))
        )

    def unflatten(self, theta: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Views ``(B, in, out)`` and ``(B, 1, out)`` of each layer's weight and bias."""
        B = theta.shape[0]
        layers = []
        for (w, b), fan_in, fan_out in zip(self.slices, self.sizes[:-1], self.sizes[1:]):
            layers.append((theta[:, w].view(B, fan_in, fan_out), theta[:, b].view(B, 1, fan_out)))
        return layers

    def init(self, generator: torch.Generator) -> Tensor:
        """PyTorch's default ``nn.Linear`` initialisation: U(±1/√fan_in) for weights and biases."""
        theta = torch.empty(self.dim)
        for (w, b), fan_in in zip(self.slices, self.sizes[:-1]):
            bound = 1.0 / math.sqrt(fan_in)
            theta[w].uniform_(-bound, bound, generator=generator)
            theta[b].uniform_(-bound, bound, generator=generator)
        return theta


def whole_data(X: Tensor, labels: Tensor, batch: int) -> tuple[Tensor, Tensor]:
    """``X`` ``(m, in)`` and ``labels`` ``(m,)`` as views for B MLPs that all see every row."""
    return X.expand(batch, *X.shape), labels.expand(batch, *labels.shape)


def _activate(z: Tensor, activation: str) -> Tensor:
    if activation == "sigmoid":
        return torch.sigmoid(z)
    if activation == "relu":
        return torch.relu(z)
    if activation == "gelu":
        return F.gelu(z)  # the exact (erf) form
    return torch.tanh(z)


_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _activation_grad(z: Tensor, a: Tensor, activation: str) -> Tensor:
    """d act / dz at pre-activation z with output a (the cheaper of the two where possible)."""
    if activation == "sigmoid":
        return a * (1.0 - a)
    if activation == "relu":
        return (a > 0).to(a.dtype)
    if activation == "gelu":  # d/dz zΦ(z) = Φ(z) + zφ(z)
        cdf = 0.5 * (1.0 + torch.erf(z * (1.0 / math.sqrt(2.0))))
        return cdf + z * torch.exp(-0.5 * z * z) * _INV_SQRT_2PI
    return 1.0 - a * a


def _loss(logits: Tensor, labels: Tensor, loss: str) -> Tensor:
    """Mean loss per MLP: logits ``(B, m, C)``, labels ``(B, m)`` (or targets) → ``(B,)``."""
    if loss == "cross_entropy":
        return F.cross_entropy(logits.transpose(1, 2), labels, reduction="none").mean(-1)
    if loss == REGRESSION:
        return (logits - labels).pow(2).mean((-2, -1))
    onehot = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
    return (logits - onehot).pow(2).mean((-2, -1))


def mlp_loss(
    theta: Tensor, shape: MLPShape, x: Tensor, labels: Tensor, activation: str, loss: str
) -> Tensor:
    """Differentiable loss ``(B,)`` of B MLPs on their own inputs ``x`` ``(B, m, in)``."""
    h = x
    layers = shape.unflatten(theta)
    for i, (W, b) in enumerate(layers):
        h = torch.baddbmm(b, h, W)
        if i < len(layers) - 1:
            h = _activate(h, activation)
    return _loss(h, labels, loss)


def mlp_loss_and_grad(
    theta: Tensor, shape: MLPShape, x: Tensor, labels: Tensor, activation: str, loss: str
) -> tuple[Tensor, Tensor]:
    """Loss ``(B,)`` and gradient ``(B, dim)`` by manual backprop (no autograd graph)."""
    with torch.no_grad():
        layers = shape.unflatten(theta)
        acts, pre = [x], [x]  # outputs and pre-activations of each layer
        for i, (W, b) in enumerate(layers):
            z = torch.baddbmm(b, acts[-1], W)
            pre.append(z)
            acts.append(_activate(z, activation) if i < len(layers) - 1 else z)
        logits = acts[-1]
        m, C = logits.shape[1], logits.shape[2]
        if loss == "cross_entropy":
            logp = torch.log_softmax(logits, -1)
            value = -logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1).mean(-1)
            dz = logp.exp()
            dz.scatter_add_(-1, labels.unsqueeze(-1), torch.full_like(dz[..., :1], -1.0))
            dz /= m
        else:
            target = labels if loss == REGRESSION else F.one_hot(labels, C).to(logits.dtype)
            diff = logits - target
            value = diff.pow(2).mean((-2, -1))
            dz = diff * (2.0 / (m * C))
        grad = torch.empty_like(theta)
        for i in range(len(layers) - 1, -1, -1):
            W, _ = layers[i]
            w_slice, b_slice = shape.slices[i]
            grad[:, w_slice] = torch.bmm(acts[i].transpose(1, 2), dz).flatten(1)
            grad[:, b_slice] = dz.sum(1)
            if i > 0:
                dz = torch.bmm(dz, W.transpose(1, 2)) * _activation_grad(
                    pre[i], acts[i], activation
                )
        return value, grad
