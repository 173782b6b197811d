"""A per-coordinate MLP on Adam-like features with a scale-free output (small_fc_lopt family).

Each coordinate's features (the ``adam`` set of :mod:`l2o.nets.features` by default: gradient,
momenta at four timescales, second moment, their ratios) go through a small MLP (``layers``
hidden ReLU layers of ``hidden_size`` units, the first one also reading the step's time
features) plus a linear skip path, to a direction d and a log-magnitude m:

    update = lr · d · exp(step_alpha · m)          (+ lr · (−m̂/√v̂) with ``nominal``)

``lr`` is the spec's ``output_scale``, and in :class:`l2o.LearnedOptimizer` each group's ``lr``,
so schedulers drive it. The skip path starts as −m_0.9/√v: an untrained net is Adam-like
(without bias correction) and meta-training learns the corrections. ``update_norm`` divides each
tensor's update by its RMS (Celo2), so ``lr`` is the RMS step of every tensor; ``param_scale``
multiplies it by max(10⁻³, RMS of the tensor's parameters) (Adafactor's relative step), so
``lr`` is a step relative to each tensor's scale and rescaling parameters rescales the steps.
``grad_scale`` multiplies it by the RMS of the tensor's bias-corrected momentum m̂_0.9: the
features stay scale-free but the step is in gradient units, like momentum SGD's, so it shrinks
as the gradients do and the loss keeps falling on smooth problems (a scale-free step stalls at a
noise floor set by ``lr``); ``lr`` is then a learning rate in the sense of SGD's, and the skip
path starts as −m_0.9/RMS(m_0.9), so an untrained net is momentum SGD (EMA form, no bias
correction of its direction beyond the scale's).

``progress_feature`` adds the input 0.1·log ρ (ρ: RMS(m̂_0.9) ÷ its running peak, per tensor),
so the net can tell a run that has fallen by orders of magnitude from one that has just started.
``agreement_feature`` adds cos(−g_t, u_{t−1}) per tensor and its EMA: whether the last step
undershot (+) or overshot (−), the hypergradient of the step size. ``adapt_step`` gives the net
memory of its step size: a per-tensor log step s it moves by ≤ 0.1 a step (a third output,
averaged over the tensor), and the update is × e^s, so it can settle on each instance's
curvature.

State per coordinate: the 5 feature accumulators (m at 4 timescales, v): 20 bytes, against
Adam's 8; one more float with ``progress_feature`` (ρ's running peak), two with
``agreement_feature`` (the last update, the EMA) and one with ``adapt_step`` (s).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from l2o.errors import L2OError
from l2o.nets.base import OptimizerNet, State, mask_zero_grads, tensor_norm
from l2o.nets.features import (
    TIME_SCALES,
    TINY,
    TensorNorm,
    adam_direction,
    compute_features,
    feature_count,
    state_size,
    time_features,
)
from l2o.nets.spec import NetSpec
from l2o.tasks.base import Layout

ADAM_FEATURE = 8  # index of m_0.9/√v in the adam feature set: the skip path's starting direction
MOMENTUM_FEATURE = 2  # m_0.9 / its tensor RMS: the starting direction with grad_scale
PARAM_SCALE_FLOOR = 1e-3  # Adafactor's ε₂: tensors at zero still move
MOMENTUM_BETA = 0.9  # the accumulator grad_scale measures (index 1 of the adam set)
MAX_LOG_SCALE = 5.0  # exp(α·m) is capped at e⁵ ≈ 148: one bad input cannot explode a step
PROGRESS_SCALE = 0.1  # log ρ enters as 0.1·log ρ: O(1) over the first decades of descent
PROGRESS_FLOOR = -5.0  # ... and no lower than −5 (ρ = e⁻⁵⁰; 0 for a tensor with no gradient yet)
AGREEMENT_BETA = 0.9  # the EMA of the agreement the net also reads
STEP_CHANGE = 0.1  # adapt_step: the log step size moves by at most this much per step


def mlp_outputs(weights: Mapping[str, Tensor], x: Tensor, time: Tensor) -> Tensor:
    """The MLP's raw outputs ``(n, C)`` from features ``x`` ``(n, F)`` and time features ``(T,)``:
    direction, log-magnitude and, with ``adapt_step``, the change of the log step size.

    Args:
        weights: ``in.weight`` ``(F, H)``, ``in.bias`` ``(H,)``, ``time.weight`` ``(T, H)``,
            ``hidden{i}.weight`` ``(H, H)`` and ``hidden{i}.bias`` for the other hidden layers,
            ``out.weight`` ``(H, C)``, ``skip.weight`` ``(F, C)``, ``out.bias`` ``(C,)``.
        x: per-coordinate features.
        time: time features of this step (:func:`l2o.nets.features.time_features`).
    """
    H = weights["in.bias"].shape[0]
    # one matmul for the first layer and the linear skip path: x @ [in.weight | skip.weight]
    bias = torch.cat((torch.addmv(weights["in.bias"], weights["time.weight"].t(), time),
                      weights["out.bias"]))  # fmt: skip
    first = torch.addmm(bias, x, torch.cat((weights["in.weight"], weights["skip.weight"]), 1))
    h, skip = first[:, :H].relu_(), first[:, H:]  # relu_ in place: autograd keeps its output
    layer = 0
    while f"hidden{layer}.weight" in weights:
        h = torch.addmm(weights[f"hidden{layer}.bias"], h, weights[f"hidden{layer}.weight"])
        h = h.relu_()
        layer += 1
    return torch.addmm(skip, h, weights["out.weight"])


def mlp_update(
    weights: Mapping[str, Tensor],
    x: Tensor,
    time: Tensor,
    lr: float,
    alpha: float,
) -> Tensor:
    """The learned step ``(n,)``: ``lr · d · exp(alpha · m)`` from :func:`mlp_outputs`."""
    return step_from_outputs(mlp_outputs(weights, x, time), lr, alpha)


def step_from_outputs(out: Tensor, lr: float | Tensor, alpha: float) -> Tensor:
    direction, magnitude = out[:, 0], out[:, 1]
    return direction * torch.exp((alpha * magnitude).clamp(max=MAX_LOG_SCALE)) * lr


class MLPOptimizer(OptimizerNet):
    """Per-coordinate MLP learned optimizer (``optimizer = "mlp"``).

    Example:
        >>> net = MLPOptimizer(NetSpec(optimizer="mlp"), seed=0)
        >>> update, state = net.step(torch.randn(2, 6), net.init_state(12))
        >>> tuple(update.shape), net.state_names()
        ((2, 6), ('features',))
    """

    kind = "mlp"

    def __init__(self, spec: NetSpec, seed: int | None = None) -> None:
        super().__init__()
        if spec.optimizer != self.kind:
            raise L2OError(f"MLPOptimizer needs optimizer = 'mlp', got {spec.optimizer!r}")
        self.spec = spec
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        F, H, T = feature_count(spec.preprocess), spec.hidden_size, len(TIME_SCALES)
        F += int(spec.progress_feature)  # log ρ, after the feature set's own
        F += 2 * int(spec.agreement_feature)  # cos(−g, last update) and its EMA, after that

        def uniform(*shape: int, fan_in: int) -> nn.Parameter:
            bound = 1.0 / fan_in**0.5
            return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound, generator=generator))

        self.in_weight = uniform(F, H, fan_in=F + T)
        self.in_bias = nn.Parameter(torch.zeros(H))
        self.time_weight = uniform(T, H, fan_in=F + T)
        for i in range(spec.layers - 1):
            setattr(self, f"hidden{i}_weight", uniform(H, H, fan_in=H))
            setattr(self, f"hidden{i}_bias", nn.Parameter(torch.zeros(H)))
        # The MLP's own output starts small, the skip path as Adam's direction (see the module).
        C = 2 + int(spec.adapt_step)  # direction, log-magnitude (, change of the log step)
        self.out_weight = nn.Parameter(uniform(H, C, fan_in=H).detach() * 0.01)
        self.out_bias = nn.Parameter(torch.zeros(C))
        skip = torch.zeros(F, C)
        if spec.preprocess == "adam" and spec.grad_scale:
            skip[MOMENTUM_FEATURE, 0] = -1.0  # × RMS(m̂): momentum SGD, m̂ per coordinate
        elif spec.preprocess == "adam" and not spec.nominal:
            skip[ADAM_FEATURE, 0] = -1.0
        self.skip_weight = nn.Parameter(skip)

    @property
    def needs_params(self) -> bool:
        return bool(self.spec.param_scale)

    def weights(self) -> dict[str, Tensor]:
        named = {
            "in.weight": self.in_weight,
            "in.bias": self.in_bias,
            "time.weight": self.time_weight,
            "out.weight": self.out_weight,
            "out.bias": self.out_bias,
            "skip.weight": self.skip_weight,
        }
        for i in range(self.spec.layers - 1):
            named[f"hidden{i}.weight"] = getattr(self, f"hidden{i}_weight")
            named[f"hidden{i}.bias"] = getattr(self, f"hidden{i}_bias")
        return named

    def state_names(self) -> tuple[str, ...]:
        names = ("features",) if state_size(self.spec.preprocess) else ()
        names = (*names, "grad_peak") if self.spec.progress_feature else names
        names = (*names, "last_update", "agreement") if self.spec.agreement_feature else names
        return (*names, "log_step") if self.spec.adapt_step else names

    def state_widths(self) -> tuple[int, ...]:
        size = state_size(self.spec.preprocess)
        widths = (size,) if size else ()
        widths = (*widths, 1) if self.spec.progress_feature else widths
        widths = (*widths, 1, 1) if self.spec.agreement_feature else widths
        return (*widths, 1) if self.spec.adapt_step else widths

    def step(
        self,
        grads: Tensor,
        state: State,
        layout: Layout | None = None,
        step: int = 0,
        lr: float | None = None,
        params: Tensor | None = None,
    ) -> tuple[Tensor, State]:
        spec = self.spec
        B, D = grads.shape
        size = state_size(spec.preprocess)
        acc = state[0].view(B, D, size) if size else None
        norm = tensor_norm(layout, D, grads.device)
        x, acc = compute_features(spec.preprocess, grads, acc, norm, step, spec.preprocess_p)
        # RMS of each tensor's m̂_0.9: the scale of grad_scale's steps, the numerator of ρ
        momentum_rms = None
        if spec.grad_scale or spec.progress_feature:
            momentum_rms = norm.rms(acc[..., 1:2] / (1.0 - MOMENTUM_BETA ** (step + 1)))
        log_step = state[-1].view(B, D, 1) if spec.adapt_step else None
        extra = len(state) - 2 * int(spec.agreement_feature) - int(spec.adapt_step)
        if spec.progress_feature:
            progress, peak = gradient_progress(momentum_rms, state[extra - 1].view(B, D, 1))
            x = torch.cat((x, progress), -1)
        if spec.agreement_feature:
            last, average = state[extra].view(B, D, 1), state[extra + 1].view(B, D, 1)
            cosine, average = step_agreement(grads.unsqueeze(-1), last, average, norm)
            x = torch.cat((x, cosine, average), -1)
        lr = self.output_scale if lr is None else lr
        w = self.weights()
        out = mlp_outputs(w, x.reshape(B * D, -1), time_features(step, x))
        update = step_from_outputs(out, lr, spec.step_alpha).view(B, D)
        if log_step is not None:
            change = out[:, 2].view(B, D, 1)
            log_step = adapted_log_step(
                log_step, change, norm, spec.min_log_step, spec.max_log_step
            )
            update = update * log_step.squeeze(-1).exp()
        if spec.nominal:
            update = update - lr * adam_direction(acc, step)
        if spec.update_norm:
            rms = norm.rms(update.unsqueeze(-1)).squeeze(-1)
            update = update / rms * lr
        if spec.param_scale:
            if params is None:
                raise ValueError("param_scale needs the parameters: step(..., params=θ)")
            scale = norm.rms(params.detach().unsqueeze(-1)).squeeze(-1)
            update = update * scale.clamp_min(PARAM_SCALE_FLOOR)
        if spec.grad_scale:
            update = update * momentum_rms.squeeze(-1)
        if spec.skip_zero_grad:
            update = mask_zero_grads(update, grads)
        new_state = (acc.reshape(B * D, size),) if size else ()
        if spec.progress_feature:
            new_state = (*new_state, peak.reshape(B * D, 1))
        if spec.agreement_feature:
            new_state = (*new_state, update.detach().reshape(B * D, 1), average.reshape(B * D, 1))
        if log_step is not None:
            new_state = (*new_state, log_step.reshape(B * D, 1))
        return update, new_state


def adapted_log_step(
    log_step: Tensor,
    change: Tensor,
    norm: TensorNorm,
    lower: float,
    upper: float | Tensor,
    rise_share: Tensor | None = None,
) -> Tensor:
    """The new per-tensor log step size ``(B, D, 1)``: the old one moved by
    ``STEP_CHANGE · tanh(mean of the tensor's change outputs)``, within [``lower``, ``upper``]
    (``upper`` a number, or a tensor broadcast to ``log_step``: a cap per tensor). A move up
    is multiplied by ``rise_share`` (broadcast to ``log_step``) where one is given.

    The net integrates its own step size, as a hypergradient method does (Baydin et al. 2018),
    so it can settle on each instance's curvature instead of a step fixed by its lr.
    """
    move = STEP_CHANGE * torch.tanh(norm.mean(change))
    if rise_share is not None:
        move = torch.where(move > 0, move * rise_share, move)
    moved = log_step + move
    return moved.clamp_min(lower).clamp_max(upper)  # clamp() takes no number with a tensor


def step_agreement(
    grad: Tensor, last_update: Tensor, average: Tensor, norm: TensorNorm
) -> tuple[Tensor, Tensor]:
    """cos(−g_t, u_{t−1}) per (instance, tensor) ``(B, D, 1)`` and its EMA (β = 0.9).

    +1: the last step went straight down the new gradient (it could have been longer); −1: it
    overshot. This is the hypergradient of the step size (Baydin et al. 2018), scale free, so a
    net without memory can still adapt its step to each instance's curvature. 0 before the
    first step. A constant for autograd, like the other normalisers.
    """
    cosine = step_cosine(grad, last_update, norm)
    average = torch.lerp(cosine, average.detach(), AGREEMENT_BETA)
    return cosine, average


def step_cosine(grad: Tensor, last_update: Tensor, norm: TensorNorm) -> Tensor:
    """cos(−g_t, u_{t−1}) per (instance, tensor), broadcast to ``grad`` ``(B, D, 1)``: 0 before
    the first step; a constant for autograd."""
    grad, last_update = grad.detach(), last_update.detach()
    dot = norm.mean(-grad * last_update)
    return (dot / (norm.rms(grad) * norm.rms(last_update))).expand_as(grad)


def gradient_progress(current: Tensor, peak: Tensor) -> tuple[Tensor, Tensor]:
    """The progress feature 0.1·log ρ ``(B, D, 1)`` (ρ = ``current`` / its running maximum,
    ``current`` the RMS of each tensor's m̂_0.9, broadcast to its coordinates) and the new maximum
    (kept per coordinate, each holding its tensor's).

    A constant for autograd, like the normalisers of the other features.
    """
    peak = torch.maximum(peak.detach(), current)
    ratio = current / (peak + TINY)
    return ratio.clamp_min(TINY).log_().mul_(PROGRESS_SCALE).clamp_min_(PROGRESS_FLOOR), peak
