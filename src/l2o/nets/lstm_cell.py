"""One LSTM layer step for n coordinates, as a fused autograd function.

Meta-training spends most of its time in this cell on a few thousand rows, where the cost is
the number of kernels, not arithmetic. Writing forward and backward by hand halves the kernels
of autograd's generic graph (measured in ``benchmarks/meta_throughput.py``); the result equals
``nn.LSTMCell`` (tested) and is checked with ``gradcheck``.

Gates are packed ``[i, f, o, g]`` in one ``(in + H, 4H)`` matrix: one matmul per layer. tanh is
computed as 2σ(2z) − 1, so one sigmoid covers all four gates (tanh is ~3× dearer on CPU).

For float32 on the CPU the elementwise work of each direction runs as one C loop
(:mod:`l2o.nets.native`, built on first use) instead of ~15 kernels: the same maths to float
tolerance (tested), deterministic run to run. Without a C compiler, for other dtypes and
devices, and for double backward, the eager code below runs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from l2o.nets import native
from l2o.nets.scalars import scalar

_SCALES: dict[tuple[int, torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}


def _scales(hidden: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """([1]*3H + [2]*H, [1]*3H + [4]*H): g's pre-activation doubled, and 1 − g² = 4σ(1 − σ)."""
    key = (hidden, like.dtype, like.device)
    if key not in _SCALES:
        ones = torch.ones(3 * hidden, dtype=like.dtype, device=like.device)
        two = torch.full((hidden,), 2.0, dtype=like.dtype, device=like.device)
        _SCALES[key] = (torch.cat((ones, two)), torch.cat((ones, 2 * two)))
    return _SCALES[key]


class LSTMLayer(torch.autograd.Function):
    """``(h, c) = LSTMLayer.apply(x, h, c, weight, bias)``, rows are coordinates."""

    @staticmethod
    def forward(ctx, x: Tensor, h: Tensor, c: Tensor, weight: Tensor, bias: Tensor):
        H = h.shape[1]
        gate_scale, _ = _scales(H, h)
        xh = torch.cat((x, h), dim=1)
        ctx.x_size = x.shape[1]
        if native.usable(xh, c, weight, bias):
            # The bias is added in the C loop: addmm would first copy it into every row.
            gates = xh @ (weight * gate_scale)
            h_new, c_new, tanh_c = native.forward(gates, bias * gate_scale, c)
            ctx.save_for_backward(xh, gates, c, tanh_c, weight)
            return h_new, c_new
        gates = torch.addmm(bias * gate_scale, xh, weight * gate_scale).sigmoid_()
        i, f, o, s = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H : 3 * H], gates[:, 3 * H :]
        c_new = torch.addcmul(f * c, i, s, value=2.0).sub_(i)  # f·c + i·(2σ − 1)
        two, one = scalar(2.0, c_new), scalar(1.0, c_new)
        tanh_c = torch.sigmoid(c_new + c_new).mul_(two).sub_(one)  # 2σ(2c) − 1, exactly
        h_new = o * tanh_c
        ctx.save_for_backward(xh, gates, c, tanh_c, weight)
        return h_new, c_new

    @staticmethod
    def backward(ctx, dh: Tensor | None, dc: Tensor | None):
        xh, gates, c, tanh_c, weight = ctx.saved_tensors
        if not torch.is_grad_enabled() and native.usable(gates):  # (no double backward in C)
            dz, d_bias, dc_prev = native.backward(dh, dc, gates, c, tanh_c)
            # Only the inputs that need it (the first layer's features are constants, and so
            # is the state a window starts from): matmuls are now most of the time.
            need_x, need_h = ctx.needs_input_grad[:2]
            d_x = d_h = None
            if need_x and need_h:
                d_xh = dz @ weight.t()
                d_x, d_h = d_xh[:, : ctx.x_size], d_xh[:, ctx.x_size :]
            elif need_h:
                d_h = dz @ weight[ctx.x_size :].t()
            elif need_x:
                d_x = dz @ weight[: ctx.x_size].t()
            return d_x, d_h, dc_prev, xh.t() @ dz, d_bias
        H = c.shape[1]
        _, deriv_scale = _scales(H, c)
        i, f, o, s = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H : 3 * H], gates[:, 3 * H :]
        if dh is None:
            dh = torch.zeros_like(c)
        one = scalar(1.0, c)
        dc_total = dh * o * (one - tanh_c * tanh_c)
        if dc is not None:
            dc_total = dc_total + dc
        # d/d(gate outputs), then through σ' (and tanh' = 4σ(1 − σ) for g) in one pass.
        d_gates = torch.cat(
            (
                torch.addcmul(-dc_total, dc_total, s, value=2.0),
                dc_total * c,
                dh * tanh_c,
                dc_total * i,
            ),
            dim=1,
        )
        dz = d_gates * gates * (one - gates) * deriv_scale
        d_xh = dz @ weight.t()
        d_weight = xh.t() @ dz
        d_bias = dz.sum(0)
        return d_xh[:, : ctx.x_size], d_xh[:, ctx.x_size :], dc_total * f, d_weight, d_bias


def lstm_layer(
    x: Tensor, h: Tensor, c: Tensor, weight: Tensor, bias: Tensor
) -> tuple[Tensor, Tensor]:
    """One layer step: inputs ``x`` ``(n, in)``, state ``h, c`` ``(n, H)`` → new ``(h, c)``."""
    return LSTMLayer.apply(x, h, c, weight, bias)
