"""Concurrent learned optimizers: K gradients per coordinate in, one update out.

Every combiner is the paper's coordinatewise LSTM (:class:`~l2o.nets.LSTMOptimizer`, the
shared recurrent core :func:`~l2o.nets.lstm_update`) with its own input features: only
:meth:`input_size` and :meth:`features` differ. A combiner also says how the concurrent problem
packs its inputs (:meth:`ConcurrentNet.pack`), from the K gradients ``(B, D, K)``, the K
optimizees' own losses ``(B, K)`` and the clean slot ``(B,)`` or, under a Byzantine attack, the
honest slots ``(B, K)`` bool (only the ``oracle`` uses it).

- ``softmax``: λ = softmax(logits), one convex combination Σ λ_k g_k, then preprocessing.
- ``concat``: the K preprocessed gradients side by side.
- ``meanstd``: the preprocessed mean and spread across K (spread 0 at K = 1).
- ``attention``: λ per instance and step, from each optimizee's gradient and loss statistics,
  so it can find the clean optimizee wherever its slot is.
- references ``mean``, ``median``, ``trimmed-mean`` (a fixed rule) and ``oracle`` (the clean
  slot's gradient alone): the single-gradient LSTM on one combined gradient.

Example:
    >>> net = build_combiner("softmax", k=3, seed=0)
    >>> grads = torch.randn(2, 5, 3)  # (B, D, K)
    >>> update, state = net(net.pack(grads, torch.ones(2, 3), None).flatten(0, 1),
    ...                     net.init_state(10))
    >>> tuple(update.shape), float(net.mixing().sum().detach())
    ((10,), 1.0)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from l2o.errors import L2OError
from l2o.nets.lstm import LSTMOptimizer
from l2o.nets.preprocess import feature_count, preprocess
from l2o.nets.spec import register_net


class ConcurrentNet(LSTMOptimizer):
    """The LSTM optimizer fed K gradients per coordinate; subclasses choose the features."""

    kind = "concurrent"

    def __init__(
        self,
        k: int = 1,
        hidden_size: int = 20,
        layers: int = 2,
        output_scale: float = 0.1,
        preprocess: str = "log_sign",
        preprocess_p: float = 10.0,
        seed: int | None = None,
    ) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise L2OError(f"{self.kind}: k (the number of optimizees) must be >= 1, got {k!r}")
        self.k = k  # input_size() needs it while the base class builds the LSTM
        super().__init__(hidden_size, layers, output_scale, preprocess, preprocess_p, seed, k=k)

    def pack(self, grads: Tensor, losses: Tensor, clean_slot: Tensor | None) -> Tensor:
        """The network inputs ``(B, D, ...)`` from gradients ``(B, D, K)`` in slot order."""
        return grads

    def mixing(self, inputs: Tensor | None = None) -> Tensor | None:
        """λ: the convex weights over the K slots (``(K,)``, or ``(n, K)`` per row), if any."""
        return None

    def _pre(self, g: Tensor) -> Tensor:
        return preprocess(g, self.preprocess, self.preprocess_p)

    def arch_config(self) -> dict[str, Any]:
        return {**super().arch_config(), "k": self.k}


class SoftmaxNet(ConcurrentNet):
    """λ = softmax(logit_scale · w): one learned convex combination of the K gradients.

    ``logit_scale`` only reparametrises w: Adam moves every weight by about ``meta_lr`` per
    step, so the scale sets how fast λ may move compared with the LSTM weights.
    """

    kind = "concurrent-softmax"

    def __init__(self, logit_scale: float = 10.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not logit_scale > 0:
            raise L2OError(f"logit_scale must be > 0, got {logit_scale!r}")
        self.logit_scale = float(logit_scale)
        self.logits = nn.Parameter(torch.zeros(self.k))  # λ starts uniform: the mean

    def mixing(self, inputs: Tensor | None = None) -> Tensor:
        return torch.softmax(self.logit_scale * self.logits, 0)

    def features(self, grad: Tensor) -> Tensor:
        # the combination is inside the graph, before preprocessing, so λ learns through it
        return self._pre(grad @ self.mixing())

    def arch_config(self) -> dict[str, Any]:
        return {**super().arch_config(), "logit_scale": self.logit_scale}


class ConcatNet(ConcurrentNet):
    """The K preprocessed gradients side by side: 2K inputs per coordinate."""

    kind = "concurrent-concat"

    def input_size(self) -> int:
        return self.k * feature_count(self.preprocess)

    def features(self, grad: Tensor) -> Tensor:
        return self._pre(grad).flatten(1)


class MeanStdNet(ConcurrentNet):
    """The preprocessed mean and spread (population std, 0 at K = 1) across the K gradients."""

    kind = "concurrent-meanstd"

    def input_size(self) -> int:
        return 2 * feature_count(self.preprocess)

    def features(self, grad: Tensor) -> Tensor:
        mean = grad.mean(1)
        spread = grad.std(1, unbiased=False)
        return torch.cat((self._pre(mean), self._pre(spread)), 1)


STATISTICS = ("loss", "grad_norm", "deviation", "cosine")


def slot_statistics(grads: Tensor, losses: Tensor) -> Tensor:
    """Per instance and slot ``(B, K, 4)``: what attention looks at, comparable across slots.

    Log loss, log gradient norm and log distance from the coordinatewise median gradient, each
    minus its mean over the K slots (so they are scale free), and the cosine with the mean
    gradient. Every statistic is invariant to the order of the slots.
    """
    tiny = 1e-12
    log_loss = losses.clamp_min(tiny).log()
    log_norm = grads.norm(dim=1).clamp_min(tiny).log()
    median = grads.median(dim=2, keepdim=True).values
    log_dev = (grads - median).norm(dim=1).add(tiny).log()
    mean = grads.mean(2, keepdim=True)
    cosine = nn.functional.cosine_similarity(grads, mean, dim=1, eps=tiny)

    def centred(x: Tensor) -> Tensor:
        return (x - x.mean(1, keepdim=True)).clamp(-10.0, 10.0)

    return torch.stack((centred(log_loss), centred(log_norm), centred(log_dev), cosine), -1)


class AttentionNet(ConcurrentNet):
    """λ per instance and step: softmax over slots of a small MLP of each slot's statistics.

    The score network is shared by the slots, so λ follows the clean optimizee wherever it is
    (permutation equivariant). Its output layer starts at zero: λ starts as the mean.
    """

    kind = "concurrent-attention"

    def __init__(self, attention_hidden: int = 16, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(attention_hidden, bool) or attention_hidden < 1:
            raise L2OError(f"attention_hidden must be >= 1, got {attention_hidden!r}")
        self.attention_hidden = int(attention_hidden)
        generator = torch.Generator().manual_seed(kwargs.get("seed") or 0)
        S, H = len(STATISTICS), self.attention_hidden
        self.score_w1 = nn.Parameter(torch.randn(S, H, generator=generator) / S**0.5)
        self.score_b1 = nn.Parameter(torch.zeros(H))
        self.score_w2 = nn.Parameter(torch.zeros(H))
        self.last_mixing: Tensor | None = None

    def pack(self, grads: Tensor, losses: Tensor, clean_slot: Tensor | None) -> Tensor:
        B, D, K = grads.shape
        stats = slot_statistics(grads, losses)  # (B, K, S), the same for every coordinate
        return torch.cat((grads.unsqueeze(-1), stats.unsqueeze(1).expand(B, D, K, -1)), -1)

    def mixing(self, inputs: Tensor | None = None) -> Tensor | None:
        if inputs is None:
            return None
        stats = inputs[..., 1:]
        scores = torch.tanh(stats @ self.score_w1 + self.score_b1) @ self.score_w2
        return torch.softmax(scores, -1)

    def features(self, grad: Tensor) -> Tensor:
        lam = self.mixing(grad)
        self.last_mixing = lam.detach()  # (n, K): the λ of the latest step, for the λ record
        return self._pre((lam * grad[..., 0]).sum(-1))

    def arch_config(self) -> dict[str, Any]:
        return {**super().arch_config(), "attention_hidden": self.attention_hidden}


class ReferenceNet(ConcurrentNet):
    """A hand-made rule turns the K gradients into one, fed to the single-gradient LSTM."""

    kind = "concurrent-reference"
    RULES = ("mean", "median", "trimmed-mean", "oracle")

    def __init__(self, rule: str = "mean", trim: float = 0.2, **kwargs: Any) -> None:
        if rule not in self.RULES:
            raise L2OError(f"reference rule must be one of {', '.join(self.RULES)}, got {rule!r}")
        if not 0 <= trim < 0.5:
            raise L2OError(f"trim must be in [0, 0.5), got {trim!r}")
        self.rule, self.trim = rule, float(trim)
        super().__init__(**kwargs)

    def pack(self, grads: Tensor, losses: Tensor, clean_slot: Tensor | None) -> Tensor:
        if self.rule != "oracle":
            return grads
        if clean_slot is None:
            raise L2OError("oracle needs a clean optimizee; this initializer has none")
        B, D, _ = grads.shape
        if clean_slot.dtype == torch.bool:  # under attack: the mean of the honest sources
            w = clean_slot.unsqueeze(1).to(grads.dtype)
            safe = torch.where(clean_slot.unsqueeze(1), grads, torch.zeros_like(grads))
            return ((safe * w).sum(2) / w.sum(2)).unsqueeze(2)
        return grads.gather(2, clean_slot.view(B, 1, 1).expand(B, D, 1))

    def combine(self, grad: Tensor) -> Tensor:
        """``(n, K)`` → ``(n,)`` by the rule (the oracle's inputs are already the clean slot)."""
        if self.rule in ("mean", "oracle"):
            return grad.mean(1)
        if self.rule == "median":
            return grad.median(1).values
        K = grad.shape[1]
        cut = max(1, int(self.trim * K)) if K >= 3 else 0  # K < 3: nothing to trim
        return grad.sort(1).values[:, cut : K - cut].mean(1)

    def features(self, grad: Tensor) -> Tensor:
        return self._pre(self.combine(grad))

    def arch_config(self) -> dict[str, Any]:
        return {**super().arch_config(), "rule": self.rule, "trim": self.trim}


NETS: dict[str, type[ConcurrentNet]] = {
    net.kind: net for net in (SoftmaxNet, ConcatNet, MeanStdNet, AttentionNet, ReferenceNet)
}
_SPEC_KEYS = ("hidden_size", "layers", "output_scale", "preprocess", "preprocess_p", "k")
_EXTRA_KEYS = {
    SoftmaxNet: ("logit_scale",),
    AttentionNet: ("attention_hidden",),
    ReferenceNet: ("rule", "trim"),
}


def _builder(cls: type[ConcurrentNet]):
    keys = _SPEC_KEYS + _EXTRA_KEYS.get(cls, ())

    def build(spec, seed: int | None = None) -> ConcurrentNet:
        return cls(**{key: getattr(spec, key) for key in keys}, seed=seed)

    return build


for _kind, _cls in NETS.items():
    register_net(_kind, _builder(_cls), keys=_SPEC_KEYS + _EXTRA_KEYS.get(_cls, ()))

COMBINERS = {
    "softmax": "learned convex weights λ over the K gradients (interpretable)",
    "concat": "the K preprocessed gradients side by side",
    "meanstd": "mean and spread across the K gradients",
    "attention": "λ per instance and step from each optimizee's gradient statistics",
    "mean": "reference: the mean gradient into the LSTM",
    "median": "reference: the coordinatewise median gradient into the LSTM",
    "trimmed-mean": "reference: the coordinatewise 20 % trimmed mean into the LSTM",
    "oracle": "reference: the clean optimizee's gradient alone into the LSTM",
}
LEARNED_COMBINERS = ("softmax", "concat", "meanstd", "attention")


def build_combiner(name: str, k: int, seed: int | None = None, **arch: Any) -> ConcurrentNet:
    """A fresh concurrent net for K optimizees; ``arch`` are the LSTM's (and λ's) options."""
    if name not in COMBINERS:
        raise L2OError(f"unknown combiner {name!r}; known: {', '.join(COMBINERS)}")
    if name in ReferenceNet.RULES:
        arch.pop("logit_scale", None)
        return ReferenceNet(rule=name, k=k, seed=seed, **arch)
    cls = {"softmax": SoftmaxNet, "concat": ConcatNet, "meanstd": MeanStdNet}.get(name)
    if name != "softmax":
        arch.pop("logit_scale", None)
    return (cls or AttentionNet)(k=k, seed=seed, **arch)
