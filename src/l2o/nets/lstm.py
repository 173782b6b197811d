"""The paper's learned optimizer: a coordinatewise 2-layer LSTM with weights shared by all
coordinates (Andrychowicz et al., 2016).

The maths is the pure function :func:`lstm_update` (features, state, weights) → (update, state);
:class:`LSTMOptimizer` is the small module that owns the weights and computes the features (any
feature set of :mod:`l2o.nets.features`; the paper's is ``log_sign``). Meta-training (out of place,
with autograd) and :class:`l2o.LearnedOptimizer` (in place, under ``no_grad``) both call it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from l2o.nets import native
from l2o.nets.base import OptimizerNet, State, tensor_norm
from l2o.nets.features import compute_features, feature_count, state_size
from l2o.nets.lstm_cell import LSTMStack, WindowTape, stack_update
from l2o.nets.preprocess import preprocess
from l2o.nets.spec import NetSpec
from l2o.tasks.base import Layout


def lstm_update(
    weights: Mapping[str, Tensor],
    features: Tensor,
    state: State,
    output_scale: float,
    grads: Tensor | None = None,
    tape: WindowTape | None = None,
) -> tuple[Tensor, State]:
    """One step of the stacked LSTM for n coordinates at once.

    Args:
        weights: ``cell{i}.weight`` ``(in + H, 4H)`` and ``cell{i}.bias`` ``(4H,)`` per layer (the
            four gates packed: one matmul per layer), ``out.weight`` ``(H,)``, ``out.bias`` ``()``.
        features: ``(n, in)`` preprocessed inputs, one row per coordinate.
        state: ``(h, c)`` per layer, each ``(n, H)``.
        output_scale: multiplies the linear output.
        grads: ``(n,)``; where given, a coordinate whose gradient is exactly 0 gets update 0
            (it does not move).
        tape: records the step for a whole window's backward instead of making a node (see
            :class:`~l2o.nets.lstm_cell.WindowTape`).

    Returns:
        The update ``(n,)`` (θ ← θ + update) and the new state.
    """
    layers = len(state) // 2
    stacked = [weights[f"cell{i}.{kind}"] for i in range(layers) for kind in ("weight", "bias")]
    out_weight, out_bias = weights["out.weight"], weights["out.bias"]
    given = [t for t in (grads, out_weight, out_bias) if t is not None]
    # float32 on the CPU: one autograd node on the C loops; else layer by layer in PyTorch.
    fused = native.usable(features, *state, *stacked, *given)
    step = LSTMStack.apply if fused else stack_update
    if tape is not None:
        if not fused:
            raise ValueError("a window tape records steps on the C loops: float32 CPU tensors")
        step = tape.step
    update, *new_state = step(features, grads, out_weight, out_bias, output_scale, *state, *stacked)
    return update, tuple(new_state)


class LSTMOptimizer(OptimizerNet):
    """The coordinatewise LSTM optimizer: ``update, state = net(grad, state)``.

    State per coordinate: the feature accumulators (none for the paper's ``log_sign``) and
    ``h, c`` per layer: ``2 · layers · hidden_size`` floats (80 for the 2×20 network).

    Example:
        >>> net = LSTMOptimizer()
        >>> grad = torch.randn(5)
        >>> update, state = net(grad, net.init_state(5))
        >>> update.shape
        torch.Size([5])
    """

    kind = "lstm"

    def __init__(
        self,
        hidden_size: int | None = None,
        layers: int | None = None,
        output_scale: float | None = None,
        preprocess: str | None = None,
        preprocess_p: float = 10.0,
        seed: int | None = None,
        **spec_keys: Any,
    ) -> None:
        """Arguments are :class:`~l2o.nets.spec.NetSpec` keys (``None``: the kind's default)."""
        super().__init__()
        self.spec = NetSpec(
            optimizer=self.kind,
            hidden_size=hidden_size,
            layers=layers,
            output_scale=output_scale,
            preprocess=preprocess,
            preprocess_p=preprocess_p,
            **spec_keys,
        )
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self._init_lstm(self.input_size(), generator)

    @classmethod
    def from_spec(cls, spec: NetSpec, seed: int | None = None) -> LSTMOptimizer:
        keys = {k: getattr(spec, k) for k in spec.arch_config() if k != "optimizer"}
        return cls(**keys, seed=seed)

    def _init_lstm(self, in_size: int, generator: torch.Generator | None) -> None:
        H = self.hidden_size
        for layer in range(self.layers):
            fan_in = (in_size if layer == 0 else H) + H
            bound = 1.0 / H**0.5
            weight = torch.empty(fan_in, 4 * H).uniform_(-bound, bound, generator=generator)
            bias = torch.empty(4 * H).uniform_(-bound, bound, generator=generator)
            bias[H : 2 * H] += 1.0  # forget gates start open: state is remembered by default
            setattr(self, f"cell{layer}_weight", nn.Parameter(weight))
            setattr(self, f"cell{layer}_bias", nn.Parameter(bias))
        self.out_weight = nn.Parameter(
            torch.empty(H).uniform_(-1.0 / H**0.5, 1.0 / H**0.5, generator=generator)
        )
        self.out_bias = nn.Parameter(torch.zeros(()))

    # the spec's keys, read often
    @property
    def hidden_size(self) -> int:
        return int(self.spec.hidden_size)

    @property
    def layers(self) -> int:
        return int(self.spec.layers)

    @property
    def preprocess(self) -> str:
        return str(self.spec.preprocess)

    @property
    def preprocess_p(self) -> float:
        return float(self.spec.preprocess_p)

    # --- what differs between LSTM variants (and concurrent combiners): the input features ---
    def input_size(self) -> int:
        return feature_count(self.preprocess)

    def features(self, grad: Tensor) -> Tensor:
        """Per-coordinate inputs ``(n, input_size)`` from the gradient ``(n,)`` (stateless sets)."""
        return preprocess(grad, self.preprocess, self.preprocess_p)

    # --- the shared recurrent core ---
    def weights(self) -> dict[str, Tensor]:
        """The weights by their functional names (see :func:`lstm_update`)."""
        named = {f"cell{i}.weight": getattr(self, f"cell{i}_weight") for i in range(self.layers)}
        named.update({f"cell{i}.bias": getattr(self, f"cell{i}_bias") for i in range(self.layers)})
        named.update({"out.weight": self.out_weight, "out.bias": self.out_bias})
        return named

    def state_names(self) -> tuple[str, ...]:
        lstm = tuple(f"{kind}{i}" for i in range(self.layers) for kind in ("h", "c"))
        return ("features", *lstm) if state_size(self.preprocess) else lstm

    def state_widths(self) -> tuple[int, ...]:
        lstm = (self.hidden_size,) * (2 * self.layers)
        size = state_size(self.preprocess)
        return (size, *lstm) if size else lstm

    def inputs(
        self, grads: Tensor, state: State, layout: Layout | None, step: int
    ) -> tuple[Tensor, State]:
        """Network inputs ``(B·D, F)`` and the state with new feature accumulators."""
        B, D = grads.shape[:2]
        size = state_size(self.preprocess)
        if not size:
            return self.features(grads.reshape(B * D, *grads.shape[2:])), state
        acc = state[0].view(B, D, size)
        norm = tensor_norm(layout, D, grads.device)
        x, acc = compute_features(self.preprocess, grads, acc, norm, step, self.preprocess_p)
        return x.reshape(B * D, -1), (acc.reshape(B * D, size), *state[1:])

    def step(
        self,
        grads: Tensor,
        state: State,
        layout: Layout | None = None,
        step: int = 0,
        lr: float | None = None,
        tape: WindowTape | None = None,
    ) -> tuple[Tensor, State]:
        B, D = grads.shape[:2]
        x, state = self.inputs(grads, state, layout, step)
        skip = 1 if state_size(self.preprocess) else 0
        scale = self.output_scale if lr is None else lr
        flat = grads.reshape(B * D) if self.spec.skip_zero_grad and grads.dim() == 2 else None
        update, lstm_state = lstm_update(self.weights(), x, state[skip:], scale, flat, tape)
        return update.view(B, D), (*state[:skip], *lstm_state)

    def window_tape(self, theta: Tensor) -> WindowTape | None:
        """A tape for a first-order window from ``theta`` ``(B, D)``, where one applies: this
        class's own features and step (a subclass may read its weights elsewhere), weights that
        need a gradient, float32 on the CPU and one chunk of rows (see
        :class:`~l2o.nets.lstm_cell.WindowTape`)."""
        own = all(
            getattr(type(self), name) is getattr(LSTMOptimizer, name)
            for name in ("step", "inputs", "features")
        )
        weights = list(self.weights().values())
        applies = own and native.usable(theta, *weights) and native.whole_layers(theta.numel())
        trained = torch.is_grad_enabled() and all(w.requires_grad for w in weights)
        return WindowTape() if applies and trained else None

    def forward(self, grad: Tensor, state: State) -> tuple[Tensor, State]:
        """One step for ``n`` coordinates of one tensor: ``grad`` ``(n, ...)``."""
        update, state = self.step(grad.unsqueeze(0), state)
        return update.squeeze(0), state
