"""RNNprop (Lv, Jiang, Li, ICML 2017): the paper's LSTM on Adam-like relative inputs.

Inputs m̂/√v̂ and g/√v̂ (bias-corrected EMAs, β1 = β2 = 0.95: the ``rnnprop`` feature set), a
dense layer with ELU, the stacked coordinatewise LSTM, and a bounded output
``output_scale · tanh(linear(h))``: no step is ever larger than ``output_scale``.

State per coordinate: 2 accumulators (m, v) and ``h, c`` per layer (82 floats for 2×20).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from l2o.nets.base import State, mask_zero_grads
from l2o.nets.features import feature_count
from l2o.nets.lstm import LSTMOptimizer
from l2o.nets.lstm_cell import lstm_layer
from l2o.tasks.base import Layout


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

    def input_size(self) -> int:
        return self.hidden_size  # the LSTM reads the dense layer's output

    def weights(self) -> dict[str, Tensor]:
        return {
            **super().weights(),
            "dense.weight": self.dense_weight,
            "dense.bias": self.dense_bias,
        }

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
        skip = len(state) - 2 * self.layers  # feature accumulators come first
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
        if self.spec.skip_zero_grad:
            update = mask_zero_grads(update, grads)
        return update, (*state[:skip], *new_state)
