"""The paper's learned optimizer: a coordinatewise 2-layer LSTM with weights shared by all
coordinates (Andrychowicz et al., 2016).

The maths is the pure function :func:`lstm_update` (features, state, weights) → (update, state);
:class:`LSTMOptimizer` is the small module that owns the weights. Meta-training (out of place, with
autograd) and :class:`l2o.LearnedOptimizer` (in place, under ``no_grad``) both call it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from l2o.errors import L2OError
from l2o.nets.lstm_cell import lstm_layer
from l2o.nets.preprocess import PREPROCESS_KINDS, feature_count, preprocess
from l2o.nets.scalars import scalar

State = tuple[Tensor, ...]  # (h₁, c₁, h₂, c₂, ...), each (n, hidden_size)


def lstm_update(
    weights: Mapping[str, Tensor], features: Tensor, state: State, output_scale: float
) -> tuple[Tensor, State]:
    """One step of the stacked LSTM for n coordinates at once.

    Args:
        weights: ``cell{i}.weight`` ``(in + H, 4H)`` and ``cell{i}.bias`` ``(4H,)`` per layer (the
            four gates packed: one matmul per layer), ``out.weight`` ``(H,)``, ``out.bias`` ``()``.
        features: ``(n, in)`` preprocessed inputs, one row per coordinate.
        state: ``(h, c)`` per layer, each ``(n, H)``.
        output_scale: multiplies the linear output.

    Returns:
        The update ``(n,)`` (θ ← θ + update) and the new state.
    """
    x = features
    new_state: list[Tensor] = []
    for layer in range(len(state) // 2):
        h, c = lstm_layer(
            x,
            state[2 * layer],
            state[2 * layer + 1],
            weights[f"cell{layer}.weight"],
            weights[f"cell{layer}.bias"],
        )
        new_state += [h, c]
        x = h
    out = torch.mv(x, weights["out.weight"]) + weights["out.bias"]
    return out * scalar(output_scale, out), tuple(new_state)


class LSTMOptimizer(nn.Module):
    """The coordinatewise LSTM optimizer: ``update, state = net(grad, state)``.

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
        hidden_size: int = 20,
        layers: int = 2,
        output_scale: float = 0.1,
        preprocess: str = "log_sign",
        preprocess_p: float = 10.0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if preprocess not in PREPROCESS_KINDS:
            raise L2OError(
                f"preprocess must be one of {', '.join(PREPROCESS_KINDS)}, got {preprocess!r}"
            )
        if hidden_size < 1 or layers < 1 or output_scale <= 0 or preprocess_p <= 0:
            raise L2OError(
                "hidden_size and layers must be >= 1, output_scale and preprocess_p > 0; got "
                f"{hidden_size}, {layers}, {output_scale}, {preprocess_p}"
            )
        self.hidden_size, self.layers = int(hidden_size), int(layers)
        self.output_scale = float(output_scale)
        self.preprocess, self.preprocess_p = preprocess, float(preprocess_p)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        H = self.hidden_size
        in_size = self.input_size()
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

    # --- what differs between learned optimizers: the input features ---
    def input_size(self) -> int:
        return feature_count(self.preprocess)

    def features(self, grad: Tensor) -> Tensor:
        """Per-coordinate inputs ``(n, input_size)`` from the gradient ``(n,)``."""
        return preprocess(grad, self.preprocess, self.preprocess_p)

    # --- the shared recurrent core ---
    def weights(self) -> dict[str, Tensor]:
        """The weights by their functional names (see :func:`lstm_update`)."""
        named = {f"cell{i}.weight": getattr(self, f"cell{i}_weight") for i in range(self.layers)}
        named.update({f"cell{i}.bias": getattr(self, f"cell{i}_bias") for i in range(self.layers)})
        named.update({"out.weight": self.out_weight, "out.bias": self.out_bias})
        return named

    def init_state(self, n: int, device: torch.device | str | None = None) -> State:
        """Zero state for n coordinates (float32 whatever the parameters' dtype)."""
        zeros = torch.zeros(n, self.hidden_size, device=device)
        return tuple(zeros.clone() for _ in range(2 * self.layers))

    def forward(self, grad: Tensor, state: State) -> tuple[Tensor, State]:
        return lstm_update(self.weights(), self.features(grad), state, self.output_scale)

    def arch_config(self) -> dict[str, Any]:
        """Everything needed to rebuild this network (saved with the weights)."""
        return {
            "optimizer": self.kind,
            "hidden_size": self.hidden_size,
            "layers": self.layers,
            "output_scale": self.output_scale,
            "preprocess": self.preprocess,
            "preprocess_p": self.preprocess_p,
        }
