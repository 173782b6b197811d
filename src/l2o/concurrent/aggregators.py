"""The field's Byzantine-robust aggregation rules, batched over instances: (B, D, K) → (B, D).

Every rule takes the K sources' gradients of B instances at once, ``grads (B, D, K)``, and a
:class:`Context`: ``f`` (how many sources the rule assumes Byzantine, as in the literature), the
honest sources (for the ``oracle`` only), a clean reference gradient (for ``fltrust`` only) and a
per-run state (``cclip``'s centre). Definitions follow ByzFL (EPFL) where it has the rule:

- ``mean``; ``median`` (coordinatewise, the two middle values averaged for even K);
- ``trimmed-mean``: coordinatewise, the f largest and f smallest values dropped (Yin et al. 2018);
- ``krum``: the source whose K − f − 1 nearest others are closest in squared distance;
  ``multi-krum``: the mean of the K − f best such sources (Blanchard et al. 2017);
- ``geomed``: geometric median by smoothed Weiszfeld iterations from 0 (RFA, Pillutla et al.),
  sources with a non-finite entry left out as in ByzFL;
- ``cclip``: centered clipping (Karimireddy et al. 2021) around the previous step's aggregate,
  radius ``tau`` (default: the median distance of the sources from the centre, scale free);
- ``nnm``: nearest-neighbour mixing (Allouah et al. 2023), a pre-aggregator: each source is
  replaced by the mean of its K − f nearest sources, then any rule: ``nnm+krum``, ...;
- ``fltrust``: each source rescaled to the clean reference's norm and weighted by its positive
  cosine with the reference (Cao et al. 2021). It sees a clean gradient the others do not;
- ``oracle``: the mean of the honest sources (what no real server can compute).

Non-finite sources (the ``inf`` attack) get distance ∞ from every other source in the
distance-based rules, weight 0 in ``geomed``, ``cclip`` and ``fltrust``; ``mean`` and, past their
breakdown point, the coordinatewise rules pass them on (then the run diverges, as it should).

Example:
    >>> grads = torch.randn(2, 5, 7)  # 2 instances, 5 coordinates, 7 sources
    >>> aggregate("multi-krum", grads, Context(f=2)).shape
    torch.Size([2, 5])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from l2o.errors import L2OError


@dataclass
class Context:
    """What a rule may know besides the gradients (see the module docstring)."""

    f: int = 0  # sources the rule assumes Byzantine
    honest: Tensor | None = None  # (B, K) bool: the oracle's
    reference: Tensor | None = None  # (B, D): fltrust's clean reference gradient
    state: dict[str, Tensor] = field(default_factory=dict)  # per run: cclip's centre


Rule = Callable[[Tensor, Context], Tensor]


def finite_sources(grads: Tensor) -> Tensor:
    """``(B, K)``: the sources whose every coordinate is finite."""
    return torch.isfinite(grads).all(1)


def _safe(grads: Tensor) -> Tensor:
    """Non-finite sources zeroed (their weight is 0 wherever this is used)."""
    return torch.where(finite_sources(grads).unsqueeze(1), grads, torch.zeros_like(grads))


def pairwise_distances(grads: Tensor) -> Tensor:
    """``(B, K, K)`` Euclidean distances; ∞ to and from any non-finite source (and its self)."""
    x = _safe(grads).transpose(1, 2)
    dist = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    ok = finite_sources(grads)
    both = ok.unsqueeze(2) & ok.unsqueeze(1)
    return torch.where(both, dist, torch.full_like(dist, torch.inf))


def mean(grads: Tensor, ctx: Context) -> Tensor:
    return grads.mean(2)


def median(grads: Tensor, ctx: Context) -> Tensor:
    K = grads.shape[2]
    s = grads.sort(2).values
    return 0.5 * (s[..., (K - 1) // 2] + s[..., K // 2])


def _check_f(name: str, f: int, k: int) -> None:
    if not 0 <= 2 * f < k:
        raise L2OError(f"{name} needs 0 <= 2f < K, got f={f} and K={k}")


def trimmed_mean(grads: Tensor, ctx: Context) -> Tensor:
    K = grads.shape[2]
    _check_f("trimmed-mean", ctx.f, K)
    return grads.sort(2).values[..., ctx.f : K - ctx.f].mean(2)


def krum_scores(grads: Tensor, f: int) -> Tensor:
    """``(B, K)``: the mean squared distance to each source's K − f − 1 nearest others."""
    K = grads.shape[2]
    dist = pairwise_distances(grads).pow(2).sort(2).values  # column 0: the source itself
    return dist[..., 1 : K - f].mean(2)


def krum(grads: Tensor, ctx: Context) -> Tensor:
    B, D, K = grads.shape
    _check_f("krum", ctx.f, K)
    best = krum_scores(grads, ctx.f).argmin(1)
    return grads.gather(2, best.view(B, 1, 1).expand(B, D, 1)).squeeze(2)


def multi_krum(grads: Tensor, ctx: Context) -> Tensor:
    B, D, K = grads.shape
    _check_f("multi-krum", ctx.f, K)
    m = K - ctx.f
    chosen = krum_scores(grads, ctx.f).topk(m, 1, largest=False).indices  # (B, m)
    return grads.gather(2, chosen.unsqueeze(1).expand(B, D, m)).mean(2)


def geomed(grads: Tensor, ctx: Context, nu: float = 1e-6, iterations: int = 10) -> Tensor:
    """Smoothed Weiszfeld from 0: z ← Σ w_k g_k / Σ w_k, w_k = 1 / max(‖g_k − z‖, ν)."""
    ok = finite_sources(grads).unsqueeze(1).to(grads.dtype)  # (B, 1, K)
    x = _safe(grads)
    z = torch.zeros_like(x[..., 0])
    for _ in range(iterations):
        w = ok / (x - z.unsqueeze(2)).norm(dim=1, keepdim=True).clamp_min(nu)
        z = (x * w).sum(2) / w.sum(2).clamp_min(1e-30)
    return z


def cclip(grads: Tensor, ctx: Context, tau: float | None = None, iterations: int = 1) -> Tensor:
    """v ← v + mean_k clip_τ(g_k − v), from the previous aggregate (0 at the first step)."""
    ok = finite_sources(grads).unsqueeze(1)
    x = _safe(grads)
    v = ctx.state.get("cclip")
    if v is None or v.shape != x.shape[:2]:
        v = torch.zeros_like(x[..., 0])
    for _ in range(iterations):
        diff = x - v.unsqueeze(2)
        norm = diff.norm(dim=1, keepdim=True)
        if tau is None:  # scale free: the median distance of the finite sources
            radius = norm.masked_fill(~ok, torch.nan).nanmedian(2, keepdim=True).values
        else:
            radius = torch.full_like(norm[..., :1], float(tau))
        factor = torch.minimum(torch.ones_like(norm), radius / norm.clamp_min(1e-30))
        v = v + (diff * factor * ok).sum(2) / grads.shape[2]
    ctx.state["cclip"] = v.detach()
    return v


def nnm(grads: Tensor, f: int) -> Tensor:
    """``(B, D, K)``: each source replaced by the mean of its K − f nearest (itself included)."""
    B, _, K = grads.shape
    if not 0 <= f < K:
        raise L2OError(f"nnm needs 0 <= f < K, got f={f} and K={K}")
    dist = pairwise_distances(grads)
    eye = torch.eye(K, dtype=torch.bool, device=grads.device)
    dist = dist.masked_fill(eye & torch.isinf(dist), -1.0)  # a non-finite source: itself first
    near = dist.topk(K - f, 2, largest=False).indices  # (B, K, K - f)
    weights = torch.zeros(B, K, K, dtype=grads.dtype, device=grads.device)
    weights.scatter_(2, near, 1.0 / (K - f))
    mixed = torch.einsum("bdj,bkj->bdk", _safe(grads), weights)
    # a mix with a non-finite neighbour is non-finite (the rule after nnm deals with it)
    bad = (weights * (~finite_sources(grads)).unsqueeze(1)).sum(2) > 0  # (B, K)
    return mixed.masked_fill(bad.unsqueeze(1), torch.inf)


def fltrust(grads: Tensor, ctx: Context) -> Tensor:
    if ctx.reference is None:
        raise L2OError("fltrust needs a clean reference gradient; this problem has none")
    ok = finite_sources(grads).unsqueeze(1)
    x = _safe(grads)
    ref = ctx.reference.unsqueeze(2)
    norms = x.norm(dim=1, keepdim=True)
    trust = torch.relu(torch.nn.functional.cosine_similarity(x, ref, dim=1, eps=1e-30))
    trust = trust.unsqueeze(1) * ok
    scaled = x * (ref.norm(dim=1, keepdim=True) / norms.clamp_min(1e-30))
    return (scaled * trust).sum(2) / trust.sum(2).clamp_min(1e-30)


def oracle(grads: Tensor, ctx: Context) -> Tensor:
    if ctx.honest is None:
        raise L2OError("oracle needs to know the honest sources; this problem has no attack")
    w = ctx.honest.unsqueeze(1).to(grads.dtype)
    return (_safe(grads) * w).sum(2) / w.sum(2)


RULES: dict[str, tuple[Rule, str]] = {
    "mean": (mean, "the mean of the K sources"),
    "median": (median, "coordinatewise median"),
    "trimmed-mean": (trimmed_mean, "coordinatewise mean without the f largest and f smallest"),
    "krum": (krum, "the source closest to its K - f - 1 nearest others (Krum)"),
    "multi-krum": (multi_krum, "the mean of the K - f best sources by Krum's score"),
    "geomed": (geomed, "geometric median (smoothed Weiszfeld, RFA)"),
    "cclip": (cclip, "centered clipping around the previous aggregate"),
    "fltrust": (fltrust, "cosine trust against a clean reference gradient (has clean data)"),
    "oracle": (oracle, "the mean of the honest sources (not computable by a real server)"),
}
PRE_AGGREGATORS = ("nnm",)


def rule_names() -> list[str]:
    return list(RULES)


def check_name(name: str) -> None:
    """Raise an :class:`L2OError` unless ``name`` is a rule or ``nnm+RULE``."""
    parts = name.split("+")
    if parts[-1] not in RULES or any(p not in PRE_AGGREGATORS for p in parts[:-1]):
        raise L2OError(
            f"unknown aggregator {name!r}; known: {', '.join(RULES)}, "
            f"and nnm+RULE (nearest-neighbour mixing before any rule)"
        )


def aggregate(name: str, grads: Tensor, ctx: Context) -> Tensor:
    """``grads (B, D, K)`` → ``(B, D)`` by rule ``name`` (``nnm+RULE`` mixes first)."""
    check_name(name)
    *pre, rule = name.split("+")
    for _ in pre:
        grads = nnm(grads, ctx.f)
    return RULES[rule][0](grads, ctx)
