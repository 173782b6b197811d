"""A learned robust aggregator: per-instance, per-step weights from scale-free source statistics.

Each source k of an instance is described by statistics that do not change when every gradient
is scaled or the sources are reordered (:func:`source_statistics`): its cosine with the
coordinatewise median, the median of its cosines with the others, and its distance from the
median, its Krum-like crowding and its distance to its nearest other source (0 for copies), each
as a log-ratio to the median over the sources, and how far to one side of the median its
coordinates sit (the mean of its robust z-scores) and how well its deviation from the median
lines up with the coordinatewise spread (both ALIE's). Only robust statistics: the cosine
with the mean of the others flips sign under IPM at f = 4 of 10 (the mean then points away from
the honest sources), and a source's own norm tells one attack from another (signflip's is small,
Gaussian's large; every source is clipped to twice a median norm anyway): gates fitted with
those two cut signflip and kept IPM's four sources at f = 4 (10x the oracle, 2 of 3 seeds). A
small MLP shared by the sources scores each one; a sigmoid gate per source on its score relative
to the median source's, averaged over the run's steps so far (a source is Byzantine for the whole
run), normalised to sum 1 (non-finite sources get 0), mixes the gradients.
This is the L3RS idea (Kristiansen et al. 2024) of learned weights over normalised source
directions, per instance and per step, with gates instead of a softmax so that honest sources
keep equal weights (their noise averages out). It knows neither f nor which sources are
Byzantine. :func:`fit_gates` fits the gates to the honest sources of training runs (where the
study knows them), before meta-training.

:class:`LearnedAggregator` puts Adam behind the mix, the same Adam (and learning rate) that every
hand-designed rule of the robust study (:mod:`l2o.concurrent.robust`) gets, so the comparison is
about aggregation alone. It is a coordinatewise network like the others (``net(inputs, state)``),
so the core loop (:func:`l2o.meta_train`) meta-trains it; :meth:`LearnedAggregator.combine` is
the same mix computed once per instance, for test runs.

Example:
    >>> net = LearnedAggregator(k=5, lr=0.01, seed=0)
    >>> grads = torch.randn(2, 7, 5)
    >>> net.combine(grads).shape
    torch.Size([2, 7])
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from l2o.concurrent.aggregators import finite_sources
from l2o.nets.base import OptimizerNet
from l2o.nets.spec import NetSpec, register_net
from l2o.tasks.base import Layout

SOURCE_STATISTICS = (
    "cos_median",
    "median_cos_to_others",
    "log_distance_ratio",
    "log_crowding_ratio",
    "log_nearest_ratio",
    "shift_z",
    "spread_cos",
)
TINY = 1e-20
GATE_BIAS = 3.0  # the median source's gate logit at initialisation: sigmoid(3) = 0.95
# each source is clipped to this multiple of the λ-weighted median norm: at 1x the mix of the
# honest sources alone (λ uniform on them) cost 3-12 % of the oracle's loss on noisy least
# squares, where near the optimum the sources differ by their noise and clipping the larger
# ones moves the fixed point off their mean; at 2x that cost was 0 to 0.2 %
CLIP_RADIUS = 2.0


def source_statistics(grads: Tensor) -> tuple[Tensor, Tensor]:
    """``(B, K, S)`` statistics per source and the finite sources ``(B, K)`` (see module doc)."""
    K = grads.shape[2]
    ok = finite_sources(grads)
    x = torch.where(ok.unsqueeze(1), grads, torch.zeros_like(grads))
    okf = ok.to(x.dtype)
    # coordinatewise median of the finite sources (non-finite ones pushed to both ends evenly)
    nan_x = torch.where(ok.unsqueeze(1), grads, torch.full_like(grads, torch.nan))
    med = nan_x.nanmedian(2).values
    med = torch.nan_to_num(med)
    unit = x / x.norm(dim=1, keepdim=True).clamp_min(TINY)
    cos = unit.transpose(1, 2) @ unit  # (B, K, K)
    pair = okf.unsqueeze(2) * okf.unsqueeze(1) * (1 - torch.eye(K, dtype=x.dtype))
    cos_med = nn.functional.cosine_similarity(x, med.unsqueeze(2), dim=1, eps=TINY)
    cos_masked = torch.where(pair > 0, cos, torch.full_like(cos, torch.nan))
    median_cos = torch.nan_to_num(cos_masked.nanmedian(2).values)
    dist_med = (x - med.unsqueeze(2)).norm(dim=1)
    rows = x.transpose(1, 2)
    dist = torch.cdist(rows, rows, compute_mode="donot_use_mm_for_euclid_dist")
    dist = torch.where(pair > 0, dist.pow(2), torch.full_like(dist, torch.inf))
    near = max(1, K // 2)
    crowding = dist.sort(2).values[..., :near]
    crowding = torch.where(torch.isfinite(crowding), crowding, torch.nan).nanmean(2)
    # exact copies (several Byzantine sources sending one vector) are never honest-like
    nearest = dist.min(2).values
    # |mean over coordinates of the robust z-score|: ~0 for honest noise (its signs vary by
    # coordinate), ~τ for ALIE's mean + τ·std (the same side everywhere), whose distances and
    # cosines look honest; at f = 1 of 10 its 1/10 of the weight cost 1.2-1.3x the oracle
    mad = (nan_x - med.unsqueeze(2)).abs().nanmedian(2).values  # (B, D)
    z = (x - med.unsqueeze(2)) / (1.4826 * torch.nan_to_num(mad)).clamp_min(TINY).unsqueeze(2)
    shift = z.clamp(-10.0, 10.0).mean(1).abs() / 5.0
    # |cosine| of its deviation from the median with the coordinatewise spread (the MAD): ~1
    # for ALIE, whose deviation is τ·std, at every scale of the coordinates. The shift above
    # averages z-scores, which in 10 correlated coordinates (least squares) spread honest
    # sources as far as ALIE's: one ALIE source of ten kept about 4 % of the weight late in
    # the run there (1.16x the oracle at f = 1); with this statistic under 1 %
    spread = torch.nan_to_num(mad).unsqueeze(2).expand_as(x)
    spread_cos = nn.functional.cosine_similarity(x - med.unsqueeze(2), spread, dim=1, eps=TINY)

    def log_ratio(v: Tensor) -> Tensor:
        v = torch.where(ok, v, torch.full_like(v, torch.nan))
        ref = v.nanmedian(1, keepdim=True).values
        r = (v.clamp_min(TINY) / ref.clamp_min(TINY)).log()
        return torch.nan_to_num(r, nan=0.0).clamp(-10.0, 10.0) / 5.0

    stats = torch.stack(
        (
            cos_med,
            median_cos,
            log_ratio(dist_med),
            log_ratio(crowding),
            log_ratio(nearest),
            shift,
            spread_cos.abs(),
        ),
        -1,
    )
    return torch.nan_to_num(stats) * okf.unsqueeze(-1), ok


def weighted_median(values: Tensor, weights: Tensor) -> Tensor:
    """``(B,)``: per row, the smallest value whose cumulative weight reaches half the total
    (the lower median for equal weights; zero weights never count)."""
    sorted_values, order = values.sort(1)
    cumulative = weights.gather(1, order).cumsum(1)
    half = 0.5 * cumulative[:, -1:] * (1 - 1e-6)  # equal weights: no rounding past the lower
    index = (cumulative < half).sum(1, keepdim=True).clamp(max=values.shape[1] - 1)
    return sorted_values.gather(1, index).squeeze(1)


def adam_step(
    g: Tensor, state: tuple[Tensor, Tensor, Tensor], lr: float
) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
    """One step of Adam (torch's defaults: β = (0.9, 0.999), ε = 1e-8) as a pure function.

    Returns the update (θ ← θ + update) and the new state ``(m, v, t)``.
    """
    m, v, t = state
    b1, b2, eps = 0.9, 0.999, 1e-8
    t = t + 1
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat = m / (1 - b1**t)
    v_hat = v / (1 - b2**t)
    # clamped: coordinates whose gradient is exactly 0 (unused pixels) would give sqrt'(0) = inf
    return -lr * m_hat / (v_hat.clamp_min(1e-30).sqrt() + eps), (m, v, t)


class LearnedAggregator(OptimizerNet):
    """λ ∝ sigmoid(logit_scale · (MLP(statistics) − its median over the sources + bias)), then
    Adam at rate ``lr``.

    Spec keys: ``k``, ``hidden_size`` (the scoring MLP's, 16), ``output_scale`` (Adam's learning
    rate) and ``logit_scale`` (10). Its inputs are the K gradients ``(B, D, K)`` themselves: the
    statistics are computed per instance inside :meth:`step`.
    """

    kind = "concurrent-robust-aggregator"

    def __init__(
        self,
        k: int = 10,
        lr: float = 0.01,
        hidden: int = 16,
        logit_scale: float = 10.0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.spec = NetSpec(
            optimizer=self.kind,
            k=k,
            hidden_size=hidden,
            output_scale=lr,
            logit_scale=logit_scale,
        )
        self.k, self.lr, self.hidden = k, float(lr), int(hidden)
        self.logit_scale = float(logit_scale)
        generator = torch.Generator().manual_seed(seed or 0)
        S = len(SOURCE_STATISTICS)
        self.w1 = nn.Parameter(torch.randn(S, hidden, generator=generator) / math.sqrt(S))
        self.b1 = nn.Parameter(torch.zeros(hidden))
        self.w2 = nn.Parameter(torch.zeros(hidden))  # λ starts uniform: the mean
        self.linear = nn.Parameter(torch.zeros(S))  # a direct path: no tanh to saturate
        # the gate of a source scored like the median source: sigmoid(logit_scale · bias), 0.95
        self.bias = nn.Parameter(torch.tensor(GATE_BIAS / self.logit_scale))

    @classmethod
    def from_spec(cls, spec: NetSpec, seed: int | None = None) -> LearnedAggregator:
        return cls(spec.k, spec.output_scale, spec.hidden_size, spec.logit_scale, seed=seed)

    def gate_logits(self, stats: Tensor, ok: Tensor) -> Tensor:
        """Each source's gate logit ``(..., K)`` from statistics ``(..., K, S)``.

        Scores are taken relative to the median source's, an honest one since 2f < K: honest
        sources sit near ``bias`` where the gate is saturated (equal weights, averaging their
        noise, where a softmax would concentrate on a few); a source scored well below the
        majority is cut.
        """
        s = torch.tanh(stats @ self.w1 + self.b1) @ self.w2 + stats @ self.linear
        centre = s.masked_fill(~ok, torch.nan).nanmedian(-1, keepdim=True).values
        return (s - torch.nan_to_num(centre) + self.bias) * self.logit_scale

    def scores(self, stats: Tensor, ok: Tensor) -> Tensor:
        """λ ``(..., K)`` from statistics ``(..., K, S)``; 0 on non-finite sources."""
        gate = torch.sigmoid(self.gate_logits(stats, ok)) * ok
        return gate / gate.sum(-1, keepdim=True).clamp_min(1e-12)

    def mixing(self, inputs: Tensor | None = None) -> Tensor | None:
        """λ ``(B, K)`` per instance, from the gradients ``(B, D, K)``."""
        if inputs is None:
            return None
        return self.scores(*source_statistics(inputs))

    def remembered_logits(self, grads: Tensor, memory: Tensor, step: int) -> tuple[Tensor, Tensor]:
        """Gate logits ``(B, K)`` averaged over the run's steps so far (this one included, and
        the memory of the next step) and the finite sources.

        ``memory`` is the average over the ``step`` steps before this one. A source is Byzantine
        for a whole run, so each step's logit is one more piece of evidence about it: per step
        alone, one IPM source of ten (held out of training) kept about a twentieth of the weight
        late on least squares, where near the optimum it sits among the honest sources' noise,
        which cost 1.13x the oracle at f = 1. On validation instances (seeds 0 and 2, f = 1) an
        exponential average with decay 0.9 left 1.06-1.08x, 0.98 1.01-1.03x, the plain average
        1.01x, and the plain average was also the best or level on the training attacks alone.
        """
        stats, ok = source_statistics(grads)
        memory = memory + (self.gate_logits(stats, ok) - memory) / (step + 1)
        return memory, ok

    def mix(self, grads: Tensor, logits: Tensor, ok: Tensor) -> Tensor:
        """``(B, D, K)`` → ``(B, D)``: the sources clipped, weighted by their gates.

        Each source is first clipped to :data:`CLIP_RADIUS` times the λ-weighted median norm, so
        no single source can outweigh the others by its size whatever its λ (scale free, like
        ARC), while honest sources, whose norms rarely reach twice their median, pass whole. The
        median is weighted by λ so that only the sources the gates trust set the radius: with the
        plain median over all K, f of them with small norms (signflip near the optimum, where the
        honest mean is ~0) pulled it down and clipped most honest sources, which moves the fixed
        point away from their mean (least squares, f = 4: 1.19x the oracle's loss, 1.06 with λ).
        """
        gate = torch.sigmoid(logits) * ok
        lam = gate / gate.sum(-1, keepdim=True).clamp_min(1e-12)
        safe = torch.where(ok.unsqueeze(1), grads, torch.zeros_like(grads))
        norms = safe.norm(dim=1)  # (B, K)
        radius = CLIP_RADIUS * weighted_median(norms, lam).unsqueeze(1)
        clipped = safe * (radius / norms.clamp_min(1e-30)).clamp(max=1.0).unsqueeze(1)
        return (clipped * lam.unsqueeze(1)).sum(2)

    def combine(self, grads: Tensor, memory: dict[str, Tensor] | None = None) -> Tensor:
        """``(B, D, K)`` → ``(B, D)``: one step's mix, statistics computed once per instance.

        ``memory``: a dict kept for the whole run (a rule's ``Context.state``), where the gates'
        running average lives between steps (:meth:`remembered_logits`); without it, this step's
        gates alone.
        """
        memory = {} if memory is None else memory
        B, _, K = grads.shape
        step = int(memory.get("step", torch.zeros(())))
        average = memory.get("gate_logits", grads.new_zeros(B, K))
        logits, ok = self.remembered_logits(grads, average, step)
        memory["gate_logits"] = logits
        memory["step"] = torch.tensor(step + 1)
        return self.mix(grads, logits, ok)

    def pack(self, grads: Tensor, losses: Tensor, clean_slot: Tensor | None) -> Tensor:
        return grads

    def state_names(self) -> tuple[str, ...]:
        return ("m", "v", "gate_logits")

    def state_widths(self) -> tuple[int, ...]:
        return (1, 1, self.k)  # the gate logits' average so far, per instance (repeated over D)

    def step(
        self,
        grads: Tensor,
        state: tuple[Tensor, ...],
        layout: Layout | None = None,
        step: int = 0,
        lr: float | None = None,
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        B, D, K = grads.shape
        average = state[2].view(B, D, K)[:, 0]
        average, ok = self.remembered_logits(grads, average, step)
        g = self.mix(grads, average, ok).reshape(B * D, 1)
        t = torch.full((), float(step), device=g.device)
        update, (m, v, _) = adam_step(g, (state[0], state[1], t), self.lr if lr is None else lr)
        memory = average.unsqueeze(1).expand(B, D, K).reshape(B * D, K)
        return update.view(B, D), (m, v, memory)

    def forward(self, grads: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple]:
        """One instance: ``grads (D, K)``."""
        update, state = self.step(grads.unsqueeze(0), state)
        return update.squeeze(0), state


def fit_gates(
    net: LearnedAggregator,
    stats: Tensor,
    ok: Tensor,
    byzantine: Tensor,
    iterations: int = 2000,
    lr: float = 0.01,
) -> list[float]:
    """Fit the gates to the honest sources: gate 1 on honest ones, 0 on Byzantine ones.

    ``stats (N, K, S)`` and ``ok (N, K)`` from :func:`source_statistics` at N (instance, step)
    pairs, ``byzantine (N, K)`` bool. The loss is the binary cross-entropy of each gate, honest
    and Byzantine sources weighted equally whatever f (full batch, Adam). Every Byzantine source
    counts, even one that barely moves a single step's mix (one ALIE source of ten): its bias
    repeats at every step. Non-finite sources have λ = 0 anyway and are left out.

    Returns the loss at each iteration.

    Example:
        >>> net = LearnedAggregator(k=5, seed=0)
        >>> grads = torch.randn(64, 20, 1) + 0.5 * torch.randn(64, 20, 5)  # signal + noise
        >>> grads[:, :, 0] = -grads[:, :, 1:].mean(2)  # source 0 flips the others' mean
        >>> stats, ok = source_statistics(grads)
        >>> byz = torch.zeros(64, 5, dtype=torch.bool)
        >>> byz[:, 0] = True
        >>> losses = fit_gates(net, stats, ok, byz, iterations=200)
        >>> losses[-1] < 0.1 * losses[0], float(net.scores(stats, ok)[:, 0].max().detach()) < 0.01
        (True, True)
    """
    honest, byz = (~byzantine & ok).to(stats.dtype), (byzantine & ok).to(stats.dtype)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    for _ in range(iterations):
        z = net.gate_logits(stats, ok)
        # -log sigmoid(z) on honest sources, -log(1 - sigmoid(z)) on Byzantine ones
        loss = (nn.functional.softplus(-z) * honest).sum() / honest.sum().clamp_min(1) + (
            nn.functional.softplus(z) * byz
        ).sum() / byz.sum().clamp_min(1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


register_net(
    LearnedAggregator.kind,
    LearnedAggregator.from_spec,
    keys=("k", "hidden_size", "output_scale", "logit_scale"),
    defaults={"hidden_size": 16, "output_scale": 0.01},
)
