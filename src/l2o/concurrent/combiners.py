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
- ``attention``: λ per instance, from each optimizee's gradient and loss statistics scored at
  every step and summed over the run so far, so it can find the clean optimizee wherever its
  slot is.
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
from l2o.nets.base import State
from l2o.nets.features import state_size
from l2o.nets.lstm import LSTMOptimizer, lstm_update
from l2o.nets.lstm_cell import WindowTape
from l2o.nets.preprocess import feature_count, preprocess
from l2o.nets.spec import register_net
from l2o.tasks.base import Layout


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


STATISTICS = ("loss", "grad_norm", "deviation", "cosine", "nearest", "mean_distance")


def slot_statistics(grads: Tensor, losses: Tensor) -> Tensor:
    """Per instance and slot ``(B, K, 6)``: what attention looks at, comparable across slots.

    Log loss, log gradient norm, log distance from the coordinatewise median gradient, log
    distance to the nearest other slot's gradient and the mean of the log distances to the other
    slots' gradients, each minus its mean over the K slots (so they are scale free), and the
    cosine with the mean gradient. Every statistic is invariant to the order of the slots.

    The two distances to the other slots carry what the Bayes posterior over the clean slot
    reads on noisy least squares (``benchmarks/noise_lambda_ceiling.py``): how each target
    scatters around the others. There the K gradients differ by constants, 2Wᵀ(y_j − y_k),
    so the distances are the same at every step; the clean slot and the least noisy other one
    are each other's nearest, and the clean one sits a little closer to the rest.
    """
    tiny = 1e-12
    K = grads.shape[2]
    log_loss = losses.clamp_min(tiny).log()
    log_norm = grads.norm(dim=1).clamp_min(tiny).log()
    median = grads.median(dim=2, keepdim=True).values
    log_dev = (grads - median).norm(dim=1).add(tiny).log()
    mean = grads.mean(2, keepdim=True)
    cosine = nn.functional.cosine_similarity(grads, mean, dim=1, eps=tiny)
    rows = grads.transpose(1, 2)
    log_dist = torch.cdist(rows, rows, compute_mode="donot_use_mm_for_euclid_dist").add(tiny).log()
    if K > 1:
        others = ~torch.eye(K, dtype=torch.bool, device=grads.device)
        nearest = log_dist.masked_fill(~others, torch.inf).min(2).values
        mean_dist = (log_dist * others).sum(2) / (K - 1)
    else:  # no other slot: nothing to compare with (centred below to 0 anyway)
        nearest = mean_dist = log_dist[..., 0]

    def centred(x: Tensor) -> Tensor:
        return (x - x.mean(1, keepdim=True)).clamp(-10.0, 10.0)

    return torch.stack(
        (
            centred(log_loss),
            centred(log_norm),
            centred(log_dev),
            cosine,
            centred(nearest),
            centred(mean_dist),
        ),
        -1,
    )


class AttentionNet(ConcurrentNet):
    """λ per instance: softmax over slots of the summed scores a small MLP gives each slot's
    statistics at every step of the run so far.

    The score network is shared by the slots, so λ follows the clean optimizee wherever it is
    (permutation equivariant). Its output layer starts at zero: λ starts as the mean. Which slot
    is clean does not change during a run, so each step's scores are one more piece of evidence
    about it, and evidence adds up like log-likelihoods: λ is the softmax of the scores' sum over
    the steps so far (the state ``score_memory``, one row of K per coordinate, the same for every
    coordinate of an instance). A step that tells nothing apart scores the slots alike and
    leaves λ where it was. On noisy least squares with the slot shuffled per instance (seeds 0
    and 1, validation, before the two distance statistics), the running mean instead (as the
    learned robust aggregator averages its gates) lowered λ on the clean slot from 0.66-0.69
    (this step's scores alone) to 0.58-0.60: early steps, far from any optimum, weigh as much
    as late ones in a mean.
    """

    kind = "concurrent-attention"

    def __init__(self, attention_hidden: int = 16, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(attention_hidden, bool) or attention_hidden < 1:
            raise L2OError(f"attention_hidden must be >= 1, got {attention_hidden!r}")
        if state_size(self.preprocess):
            raise L2OError(
                f"attention reads stateless features; preprocess={self.preprocess!r} keeps "
                "accumulators: use log_sign or none"
            )
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

    def scores(self, stats: Tensor) -> Tensor:
        """Each slot's score ``(..., K)`` (a softmax logit) from its statistics ``(..., K, S)``."""
        return torch.tanh(stats @ self.score_w1 + self.score_b1) @ self.score_w2

    def mixing(self, inputs: Tensor | None = None) -> Tensor | None:
        """λ from one step's inputs alone (no memory of the run): ``(..., K)``."""
        if inputs is None:
            return None
        return torch.softmax(self.scores(inputs[..., 1:]), -1)

    def state_names(self) -> tuple[str, ...]:
        return (*super().state_names(), "score_memory")

    def state_widths(self) -> tuple[int, ...]:
        return (*super().state_widths(), self.k)

    def step(
        self,
        grads: Tensor,
        state: State,
        layout: Layout | None = None,
        step: int = 0,
        lr: float | None = None,
        tape: WindowTape | None = None,
    ) -> tuple[Tensor, State]:
        B, D, K = grads.shape[:3]
        *lstm_state, memory = state
        evidence = memory.view(B, D, K)[:, 0] + self.scores(grads[:, 0, :, 1:])
        lam = torch.softmax(evidence, -1)  # (B, K)
        self.last_mixing = lam.detach()  # the λ of the latest step, for the λ record
        x = self._pre((grads[..., 0] * lam.unsqueeze(1)).sum(-1).reshape(B * D))
        scale = self.output_scale if lr is None else lr
        update, lstm_state = lstm_update(self.weights(), x, tuple(lstm_state), scale, None, tape)
        memory = evidence.unsqueeze(1).expand(B, D, K).reshape(B * D, K)
        return update.view(B, D), (*lstm_state, memory)

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
    "attention": "λ per instance from each optimizee's gradient statistics, summed over steps",
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
