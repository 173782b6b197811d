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

Meta-training's first-order windows of the plain LSTM go one step further: :class:`WindowTape`
records a window's steps on the C loops without a node per step and differentiates the whole
window as one node.
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
            # Bias and g's doubling in the C loop: addmm would first copy the bias into every row.
            gates = xh @ weight
            h_new, c_new, tanh_c = native.forward(gates, bias, gate_scale, c)
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


def _stack_forward(
    x: Tensor,
    grads: Tensor | None,
    out_weight: Tensor,
    out_bias: Tensor,
    scale: float,
    tensors: tuple[Tensor, ...],
    whole: bool,
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """The stack's step on the C loops: ``(update, new state, what the backward reads)``, each
    layer in one C call (its matmuls included) when ``whole``, else with torch's matmuls."""
    layers = len(tensors) // 4
    state, weights = tensors[: 2 * layers], tensors[2 * layers :]
    saved: list[Tensor] = []
    new_state: list[Tensor] = []
    inputs = x
    for layer in range(layers):
        h, c = state[2 * layer], state[2 * layer + 1]
        weight, bias = weights[2 * layer], weights[2 * layer + 1]
        gate_scale, _ = _scales(h.shape[1], h)
        if whole:
            inputs, c_new, tanh_c, xh, gates = native.layer_forward(
                inputs, h, c, weight, bias, gate_scale
            )
        else:
            xh = torch.cat((inputs, h), dim=1)
            gates = xh @ weight
            inputs, c_new, tanh_c = native.forward(gates, bias, gate_scale, c)
        saved += [xh, gates, c, tanh_c, weight]
        new_state += [inputs, c_new]
    update = native.output(inputs, out_weight, out_bias, scale, grads)
    return update, new_state, [*saved, inputs]


def _stack_backward(
    saved: tuple[Tensor, ...] | list[Tensor],
    grads: Tensor | None,
    out_weight: Tensor,
    scale: float,
    whole: bool,
    d_update: Tensor | None,
    d_state: tuple[Tensor | None, ...] | list[Tensor | None],
    need_x: bool,
    need_state: tuple[bool, ...] | list[bool],
) -> tuple[Tensor | None, Tensor | None, Tensor | None, list, list]:
    """:func:`_stack_forward`'s backward: the gradients of the input features (``None`` unless
    ``need_x``), of the output's weight and bias, of the state (``None`` where ``need_state``
    is false) and of the layers' weights and biases."""
    layers = len(d_state) // 2
    h_top = saved[5 * layers]
    d_out = d_out_weight = d_out_bias = None
    if d_update is not None:
        d_out, d_out_weight, d_out_bias = native.output_backward(d_update, scale, grads, h_top)
    d_states: list[Tensor | None] = [None] * (2 * layers)
    d_weights: list[Tensor | None] = [None] * (2 * layers)
    from_above = None  # the gradient of this layer's h from the layer above
    step = native.layer_backward if whole else _layer_backward
    for layer in reversed(range(layers)):
        xh, gates, c, tanh_c, weight = saved[5 * layer : 5 * layer + 5]
        top = layer == layers - 1
        d_x, d_h, dc_prev, d_weights[2 * layer], d_weights[2 * layer + 1] = step(
            *d_state[2 * layer : 2 * layer + 2],
            gates,
            c,
            tanh_c,
            xh,
            weight,
            layer > 0 or need_x,
            need_state[2 * layer],
            dh2=from_above,
            d_out=d_out if top else None,
            w_out=out_weight if top else None,
        )
        d_states[2 * layer] = d_h
        d_states[2 * layer + 1] = dc_prev if need_state[2 * layer + 1] else None
        from_above = d_x
    return from_above, d_out_weight, d_out_bias, d_states, d_weights


class LSTMStack(torch.autograd.Function):
    """The stacked layers and the linear output in one node, on the C loops (float32 CPU).

    ``(update, h0, c0, ...) = LSTMStack.apply(x, grads, out_w, out_b, scale, *state, *weights)``
    with ``weights`` ``(W0, b0, W1, b1, ...)``: :func:`l2o.nets.lstm_update`'s maths, the
    update 0 where ``grads`` (``None``: nowhere) is exactly 0. One node instead of one per layer
    and six for the output and its mask; the backward adds the layer above's gradient and the
    output's into each layer's C loop instead of in separate kernels. A backward that must be
    differentiable itself (``create_graph=True``) recomputes the step on the eager path and
    differentiates that.
    """

    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        grads: Tensor | None,
        out_weight: Tensor,
        out_bias: Tensor,
        scale: float,
        *tensors: Tensor,
    ):
        # each layer in one C call, its matmuls included, when torch's sgemm_ is at hand
        ctx.whole = native.whole_layers(x.shape[0])
        update, new_state, saved = _stack_forward(
            x, grads, out_weight, out_bias, scale, tensors, ctx.whole
        )
        ctx.save_for_backward(*saved, x, grads, out_weight, out_bias, *tensors)
        ctx.scale, ctx.layers = scale, len(tensors) // 4
        return (update, *new_state)

    @staticmethod
    def backward(ctx, d_update: Tensor | None, *d_state: Tensor | None):
        layers, needs = ctx.layers, ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph: differentiate the eager step instead
            return _differentiable_backward(ctx, (d_update, *d_state))
        saved = ctx.saved_tensors
        grads, out_weight = saved[5 * layers + 2 : 5 * layers + 4]
        d_x, d_out_weight, d_out_bias, d_states, d_weights = _stack_backward(
            saved, grads, out_weight, ctx.scale, ctx.whole, d_update, d_state, needs[0], needs[5:]
        )
        return (d_x, None, d_out_weight, d_out_bias, None, *d_states, *d_weights)


class WindowTape:
    """A truncation window's LSTM steps on the C loops, differentiated as one autograd node.

    Per step, :class:`LSTMStack` costs an autograd node, a Python backward call and the engine's
    sums of every weight's gradient; at 1,280 coordinates that is about a third of the step. In
    first-order meta-training the window's objective is Σ_t w_t·⟨∇f(θ_{t+1}), θ_{t+1}⟩ / B with
    θ_{t+1} = θ_t + update_t, so its gradient with respect to update_t is known in closed form:
    Σ_{s ≥ t} w_s·∇f(θ_{s+1}) / B. The tape runs each step without a graph (:meth:`step`),
    records each term's gradient (:meth:`term`), and :meth:`attach` returns the objective as
    one node whose backward runs the steps' backwards in a loop, in the same order and with the
    same C calls as the per-step nodes: the same gradients, to the last bit (tested).

    Made by :meth:`l2o.nets.LSTMOptimizer.window_tape` where it applies: the weights are the
    only inputs that need a gradient (θ, the features and the state the window starts from are
    constants), float32 on the CPU, one chunk of rows.
    """

    def __init__(self) -> None:
        self.steps: list[tuple[list[Tensor], Tensor | None, float]] = []
        self.terms: list[tuple[Tensor, Tensor, Tensor]] = []
        self.weights: tuple[Tensor, ...] = ()

    def step(
        self,
        x: Tensor,
        grads: Tensor | None,
        out_weight: Tensor,
        out_bias: Tensor,
        scale: float,
        *tensors: Tensor,
    ) -> tuple[Tensor, ...]:
        """:class:`LSTMStack`'s forward, recorded here instead of in a node: ``(update, *state)``
        without a graph."""
        layers = len(tensors) // 4
        self.weights = (out_weight, out_bias, *tensors[2 * layers :])
        with torch.no_grad():
            update, new_state, saved = _stack_forward(
                x, grads, out_weight, out_bias, scale, tensors, True
            )
        self.steps.append((saved, grads, scale))
        return (update, *new_state)

    def term(self, grad: Tensor, weight: Tensor, divisor: Tensor) -> None:
        """The objective gained ``weight · ⟨grad, θ⟩ / divisor`` at θ after the last step."""
        self.terms.append((grad, weight, divisor))

    def attach(self, objective: Tensor) -> Tensor:
        """``objective`` (computed without a graph) as a function of the weights."""
        if not self.steps:
            return objective
        return _Window.apply(self, objective, *self.weights)

    def backward(self, d_objective: Tensor) -> list[Tensor | None]:
        """The weights' gradients (:attr:`weights` order), steps last to first."""
        layers = (len(self.weights) - 2) // 2
        totals: list[Tensor | None] = [None] * len(self.weights)
        d_theta: Tensor | None = None
        d_state: list[Tensor | None] = [None] * (2 * layers)
        out_weight = self.weights[0]
        for t in reversed(range(len(self.steps))):
            # each step's tensors let go once used, as autograd frees a node's (peak memory)
            saved, grads, scale = self.steps.pop()
            grad, weight, divisor = self.terms.pop()
            # as autograd differentiates w·(g·θ).sum()/B and θ_{t+1} = θ_t + update_t
            here = grad * ((d_objective / divisor) * weight)
            d_theta = here if d_theta is None else here + d_theta
            _, d_out_weight, d_out_bias, d_state, d_weights = _stack_backward(
                saved,
                grads,
                out_weight,
                scale,
                True,
                d_theta.reshape(-1),
                d_state,
                False,
                [t > 0] * (2 * layers),  # the state the window starts from is a constant
            )
            for i, d in enumerate((d_out_weight, d_out_bias, *d_weights)):
                totals[i] = d if totals[i] is None else totals[i] + d
        return totals


class _Window(torch.autograd.Function):
    """The node :meth:`WindowTape.attach` makes: the objective's value in, its gradient out."""

    @staticmethod
    def forward(ctx, tape: WindowTape, objective: Tensor, *weights: Tensor):
        ctx.tape = tape
        return objective.clone()

    @staticmethod
    def backward(ctx, d_objective: Tensor):
        if torch.is_grad_enabled():
            raise RuntimeError("a window on the C loops has no double backward")
        if not ctx.tape.steps:
            raise RuntimeError("a window's backward runs once (its tensors are freed)")
        return (None, None, *ctx.tape.backward(d_objective))


def _layer_backward(
    dh: Tensor | None,
    dc: Tensor | None,
    gates: Tensor,
    c: Tensor,
    tanh_c: Tensor,
    xh: Tensor,
    weight: Tensor,
    need_x: bool,
    need_h: bool,
    dh2: Tensor | None = None,
    d_out: Tensor | None = None,
    w_out: Tensor | None = None,
) -> tuple[Tensor | None, Tensor | None, Tensor, Tensor, Tensor]:
    """:func:`l2o.nets.native.layer_backward` with the matmuls in torch (many rows, or no
    ``sgemm_``): the C loop for the elementwise work, then only the input gradients needed (the
    first layer's features are constants, and so is the state a window starts from)."""
    dz, d_bias, dc_prev = native.backward(dh, dc, gates, c, tanh_c, dh2, d_out, w_out)
    x_size = xh.shape[1] - c.shape[1]
    d_x = d_h = None
    if need_x and need_h:
        d_xh = dz @ weight.t()
        d_x, d_h = d_xh[:, :x_size], d_xh[:, x_size:]
    elif need_h:
        d_h = dz @ weight[x_size:].t()
    elif need_x:
        d_x = dz @ weight[:x_size].t()
    return d_x, d_h, dc_prev, xh.t() @ dz, d_bias


def stack_update(
    x: Tensor,
    grads: Tensor | None,
    out_weight: Tensor,
    out_bias: Tensor,
    scale: float,
    *tensors: Tensor,
) -> tuple[Tensor, ...]:
    """:class:`LSTMStack`'s maths on the eager path, layer by layer: ``(update, h0, c0, ...)``."""
    layers = len(tensors) // 4
    state, weights = tensors[: 2 * layers], tensors[2 * layers :]
    new_state: list[Tensor] = []
    for layer in range(layers):
        h, c = lstm_layer(
            x, state[2 * layer], state[2 * layer + 1], weights[2 * layer], weights[2 * layer + 1]
        )
        new_state += [h, c]
        x = h
    out = torch.mv(x, out_weight) + out_bias
    update = out * scalar(scale, out)
    if grads is not None:  # coordinates with a zero gradient do not move
        update = torch.where(grads == 0, update.new_zeros(()), update)
    return (update, *new_state)


def _differentiable_backward(ctx, d_outputs: tuple[Tensor | None, ...]) -> tuple:
    """The step recomputed on the eager path and differentiated with a graph (double backward)."""
    layers, needs = ctx.layers, ctx.needs_input_grad
    x, grads, out_weight, out_bias, *tensors = ctx.saved_tensors[5 * layers + 1 :]
    inputs = (x, grads, out_weight, out_bias, None, *tensors)
    with native.disabled():
        outputs = stack_update(x, grads, out_weight, out_bias, ctx.scale, *tensors)
    wanted = [i for i, need in enumerate(needs) if need]
    pairs = [(o, d) for o, d in zip(outputs, d_outputs) if d is not None and o.requires_grad]
    found = torch.autograd.grad(
        [o for o, _ in pairs],
        [inputs[i] for i in wanted],
        [d for _, d in pairs],
        create_graph=True,
        allow_unused=True,
    )
    result: list[Tensor | None] = [None] * len(inputs)
    for i, g in zip(wanted, found):
        result[i] = g
    return tuple(result)
