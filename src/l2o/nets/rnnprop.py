"""RNNprop (Lv, Jiang, Li, ICML 2017): the paper's LSTM on Adam-like relative inputs.

Inputs m̂/√v̂ and g/√v̂ (bias-corrected EMAs, β1 = β2 = 0.95: the ``rnnprop`` feature set), a
dense layer with ELU, the stacked coordinatewise LSTM, and a bounded output
``output_scale · tanh(linear(h))``: no step is ever larger than ``output_scale``.

State per coordinate: 2 accumulators (m, v) and ``h, c`` per layer (82 floats for 2×20).
``adapt_step = true`` adds a second head: the change of a per-tensor log step s the update is
multiplied by (one more float), so the bounded step can shrink by orders of magnitude as a run
converges instead of stalling at a floor set by ``output_scale``.
``hypergradient_step = true`` (with ``adapt_step``) adds cos(−g_t, u_{t−1}) per tensor, the
hypergradient of s (Baydin et al. 2018), to that head's input with a learned weight that starts
at ``HYPERGRADIENT_WEIGHT``: s falls whenever the last step overshot, so the step size keeps
shrinking as a run converges without the LSTM having to learn that schedule (one more float of
state: the last update). ``hypergradient_signal = "momentum"`` reads cos(−m_t, u_{t−1}) instead
(m_t: the feature set's EMA of g, which minibatch noise moves less), ``"both"`` adds both cosines,
each with its own learned weight.
``max_log_step_boost = b`` lets the cap on s rise to ``max_log_step + b·(1 + log10 ρ / 4)``
(the boosted share clipped to [0, 1]), ρ = RMS(m̂_t) ÷ its running peak per tensor: longer steps
while the gradient is within a few decades of its largest, the plain cap once it has fallen
further, so a converged run does not take the long steps that make its loss spike (one more
float of state: the peak).
``step_rise_decades = d`` multiplies each rise of s by 1 + log10 ρ / d, clipped to [0, 1] (the
peak kept as for the boost): once a run has converged its gradient is tiny, every full step still
goes downhill, and without it s keeps rising until a step is long enough to throw the loss back up.
``damping_eps = ε`` multiplies each update by √v̂ / (√v̂ + ε), Adam's ε: once a loss is near
float32's floor its gradients are tiny but m̂/√v̂ is not, so without it the steps stay full size.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from l2o.nets.base import State, mask_zero_grads, tensor_norm
from l2o.nets.features import RNNPROP_BETA, feature_count
from l2o.nets.lstm import LSTMOptimizer
from l2o.nets.lstm_cell import lstm_layer
from l2o.nets.mlp import adapted_log_step, step_cosine
from l2o.tasks.base import Layout

# hypergradient_step: the starting weight of cos(−g_t, u_{t−1}) in the change of s. With it a
# run that overshoots at every step (cos = −1) lowers s by 0.1·tanh(2) ≈ 0.096 a step.
HYPERGRADIENT_WEIGHT = 2.0
# max_log_step_boost: the boost to the cap fades linearly in log10 ρ, gone once the gradient's
# EMA has fallen this many decades below its peak (the quadratic at 100 steps: ~2.4 decades)
BOOST_DECADES = 4.0
# The learned weight of each cosine, by what the rule reads: "both" splits the starting weight.
_HYPERGRADIENT_WEIGHTS = {
    "gradient": {"gradient": HYPERGRADIENT_WEIGHT},
    "momentum": {"momentum": HYPERGRADIENT_WEIGHT},
    "both": {"gradient": HYPERGRADIENT_WEIGHT / 2, "momentum": HYPERGRADIENT_WEIGHT / 2},
}
# the weight's attribute (its name in saved weights: the gradient's keeps the one it had before)
_HYPERGRADIENT_ATTRIBUTES = {
    "gradient": "hypergradient_weight",
    "momentum": "hypergradient_momentum_weight",
}


class RNNpropOptimizer(LSTMOptimizer):
    """``optimizer = "rnnprop"``: dense + ELU, the 2×20 LSTM, a tanh-bounded output.

    Example:
        >>> net = RNNpropOptimizer(preprocess="rnnprop", seed=0)
        >>> update, _ = net.step(torch.randn(1, 4), net.init_state(4))
        >>> bool(update.abs().max() <= net.output_scale)
        True
    """

    kind = "rnnprop"

    def __init__(self, *args, seed: int | None = None, **kwargs) -> None:
        super().__init__(*args, seed=seed, **kwargs)
        generator = torch.Generator().manual_seed(seed + 1) if seed is not None else None
        F, H = feature_count(self.preprocess), self.hidden_size
        bound = 1.0 / F**0.5
        self.dense_weight = nn.Parameter(
            torch.empty(F, H).uniform_(-bound, bound, generator=generator)
        )
        self.dense_bias = nn.Parameter(torch.zeros(H))
        if self.spec.adapt_step:  # the change of the log step size: starts near 0
            self.step_weight = nn.Parameter(
                torch.empty(H).uniform_(-0.01 / H**0.5, 0.01 / H**0.5, generator=generator)
            )
            self.step_bias = nn.Parameter(torch.zeros(()))
        self.hypergradient_signals: tuple[str, ...] = ()
        if self.spec.hypergradient_step:
            start = _HYPERGRADIENT_WEIGHTS[self.spec.hypergradient_signal]
            self.hypergradient_signals = tuple(start)
            for signal, weight in start.items():
                setattr(self, _HYPERGRADIENT_ATTRIBUTES[signal], nn.Parameter(torch.tensor(weight)))

    def input_size(self) -> int:
        return self.hidden_size  # the LSTM reads the dense layer's output

    def weights(self) -> dict[str, Tensor]:
        named = {
            **super().weights(),
            "dense.weight": self.dense_weight,
            "dense.bias": self.dense_bias,
        }
        if self.spec.adapt_step:
            named.update({"step.weight": self.step_weight, "step.bias": self.step_bias})
        for signal in self.hypergradient_signals:
            attribute = _HYPERGRADIENT_ATTRIBUTES[signal]
            named[f"step.{attribute}"] = getattr(self, attribute)
        return named

    def state_names(self) -> tuple[str, ...]:
        names = super().state_names()
        names = (*names, "log_step") if self.spec.adapt_step else names
        names = (*names, "last_update") if self.spec.hypergradient_step else names
        return (*names, "momentum_peak") if self._tracks_peak() else names

    def state_widths(self) -> tuple[int, ...]:
        widths = super().state_widths()
        widths = (*widths, 1) if self.spec.adapt_step else widths
        widths = (*widths, 1) if self.spec.hypergradient_step else widths
        return (*widths, 1) if self._tracks_peak() else widths

    def _tracks_peak(self) -> bool:
        """Whether the state keeps the running peak of RMS(m̂) per tensor."""
        return bool(self.spec.max_log_step_boost or self.spec.step_rise_decades)

    def step(
        self,
        grads: Tensor,
        state: State,
        layout: Layout | None = None,
        step: int = 0,
        lr: float | None = None,
    ) -> tuple[Tensor, State]:
        B, D = grads.shape
        x, state = self.inputs(grads, state, layout, step)
        adapt = int(self.spec.adapt_step)
        hyper = int(self.spec.hypergradient_step)
        boost = self.spec.max_log_step_boost
        # feature accumulators come first, then h, c per layer, s, u_{t−1}, the peak of RMS(m̂)
        skip = len(state) - 2 * self.layers - adapt - hyper - int(self._tracks_peak())
        x = nn.functional.elu(torch.addmm(self.dense_bias, x, self.dense_weight))
        new_state: list[Tensor] = []
        for layer in range(self.layers):
            h, c = lstm_layer(
                x,
                state[skip + 2 * layer],
                state[skip + 2 * layer + 1],
                getattr(self, f"cell{layer}_weight"),
                getattr(self, f"cell{layer}_bias"),
            )
            new_state += [h, c]
            x = h
        scale = self.output_scale if lr is None else lr
        update = torch.tanh(torch.mv(x, self.out_weight) + self.out_bias).view(B, D) * scale
        peak = None
        if adapt:
            change = (torch.mv(x, self.step_weight) + self.step_bias).view(B, D, 1)
            norm = tensor_norm(layout, D, grads.device)
            upper: float | Tensor = self.spec.max_log_step
            rise_share = None
            if self._tracks_peak():
                momentum = _moment(state[0].view(B, D, -1), 0, step).unsqueeze(-1)
                log_ratio, peak = momentum_progress(
                    norm.rms(momentum.detach()), state[-1].view(B, D, 1)
                )
                if boost:
                    upper = upper + boost * fading_share(log_ratio, BOOST_DECADES)
                if self.spec.step_rise_decades:
                    rise_share = fading_share(log_ratio, self.spec.step_rise_decades)
            for signal in self.hypergradient_signals:
                weight = getattr(self, _HYPERGRADIENT_ATTRIBUTES[signal])
                # m_t: the first feature accumulator, just updated (its bias correction is one
                # factor per step, which the cosine ignores)
                read = grads if signal == "gradient" else state[0].view(B, D, -1)[..., 0]
                last = state[skip + 2 * self.layers + adapt].view(B, D, 1)
                change = change + weight * step_cosine(read.view(B, D, 1), last, norm)
            log_step = adapted_log_step(
                state[skip + 2 * self.layers].view(B, D, 1),
                change,
                norm,
                self.spec.min_log_step,
                upper,
                rise_share,
            )
            update = update * log_step.squeeze(-1).exp()
            new_state.append(log_step.reshape(B * D, 1))
        if self.spec.damping_eps:
            rms = _moment(state[0].view(B, D, -1), 1, step).sqrt()  # √v̂
            update = update * (rms / (rms + self.spec.damping_eps)).detach()
        if self.spec.skip_zero_grad:
            update = mask_zero_grads(update, grads)
        if hyper:  # a constant for autograd, like the cosine it feeds
            new_state.append(update.detach().reshape(B * D, 1))
        if peak is not None:
            new_state.append(peak.expand(B, D, 1).reshape(B * D, 1))
        return update, (*state[:skip], *new_state)


def _moment(accumulators: Tensor, index: int, step: int) -> Tensor:
    """m̂ (``index`` 0) or v̂ (1) ``(B, D)`` from the ``rnnprop`` feature set's accumulators
    ``(B, D, 2)``, just updated for ``step``: bias-corrected as the features are."""
    return accumulators[..., index] / (1.0 - RNNPROP_BETA ** (step + 1))


def momentum_progress(current: Tensor, peak: Tensor) -> tuple[Tensor, Tensor]:
    """How many decades each tensor's gradient has fallen, log10 ρ ≤ 0, and the new peak (both
    ``(B, D, 1)``).

    ``current`` is the RMS of each tensor's m̂_t and ρ = ``current`` ÷ its running peak. The
    peak starts at 0 (a fresh state), so log10 ρ is 0 on the first step. A constant for
    autograd: it sets bounds.
    """
    peak = torch.maximum(peak.detach(), current)
    tiny = torch.finfo(current.dtype).tiny
    ratio = current / peak.clamp_min(tiny)
    return ratio.clamp_min(tiny).log10(), peak


def fading_share(log_ratio: Tensor, decades: float) -> Tensor:
    """1 + log10 ρ / ``decades``, clipped to [0, 1]: all of it at the gradient's peak, none
    once it has fallen ``decades`` decades. A share linear in ρ is gone after the first decade,
    long before the quadratic's steps stop gaining from it."""
    return (1.0 + log_ratio / decades).clamp(0.0, 1.0)
