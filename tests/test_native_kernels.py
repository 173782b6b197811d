"""The C loops of the LSTM cell (l2o.nets.native) against the eager PyTorch path."""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext

import pytest
import torch

from l2o.config import TrainConfig
from l2o.meta.train import meta_train
from l2o.meta.unroll import start_unroll, step_weights, task_observer, truncation_window
from l2o.nets import LSTMOptimizer, NetSpec, build_net, log_sign, lstm_update, native
from l2o.nets.lstm_cell import LSTMLayer
from l2o.tasks import get_task

needs_native = pytest.mark.skipif(not native.available(), reason="no C compiler here")


def _layer(n: int, H: int, x_size: int, use_native: bool, dh_slice: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    inputs = [
        torch.randn(n, x_size, generator=g),
        torch.randn(n, H, generator=g),
        torch.randn(n, H, generator=g) * 2,
        torch.randn(x_size + H, 4 * H, generator=g) * 0.5,
        torch.randn(4 * H, generator=g),
    ]
    inputs = [t.requires_grad_(True) for t in inputs]
    # dh as the next layer hands it on: a column slice of a wider gradient (row stride 2H)
    wide = torch.randn(n, 2 * H, generator=g)
    dh = wide[:, H:] if dh_slice else wide[:, :H].contiguous()
    dc = torch.randn(n, H, generator=g)
    with nullcontext() if use_native else native.disabled():
        h, c = LSTMLayer.apply(*inputs)
        torch.autograd.backward((h, c), (dh, dc))
    return [h.detach(), c.detach(), *(t.grad for t in inputs)]


@needs_native
@pytest.mark.parametrize(
    ("n", "H", "x_size", "dh_slice"), [(37, 20, 2, True), (5, 3, 1, False), (1280, 20, 20, True)]
)
def test_native_layer_equals_the_eager_layer_to_float_tolerance(n, H, x_size, dh_slice):
    eager = _layer(n, H, x_size, False, dh_slice)
    fast = _layer(n, H, x_size, True, dh_slice)
    names = ["h", "c", "dx", "dh", "dc", "dweight", "dbias"]
    for name, a, b in zip(names, eager, fast):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5, msg=name)


@needs_native
def test_native_layer_with_only_one_output_used():
    torch.manual_seed(0)
    inputs = [torch.randn(9, 2), torch.randn(9, 4), torch.randn(9, 4)]
    inputs += [torch.randn(6, 16), torch.randn(16)]

    def grads(use_native: bool) -> list[torch.Tensor]:
        args = [t.clone().requires_grad_(True) for t in inputs]
        with nullcontext() if use_native else native.disabled():
            h, _ = LSTMLayer.apply(*args)
            h.sum().backward()  # c unused: its gradient arrives as None
        return [a.grad for a in args]

    for a, b in zip(grads(False), grads(True)):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


@needs_native
def test_native_rows_do_not_depend_on_the_batch():
    """A row's result is the same alone or among others: vector body and tail round alike."""
    g = torch.Generator().manual_seed(0)
    n, H = 37, 20
    pre, bias = torch.randn(n, 4 * H, generator=g) * 3, torch.randn(4 * H, generator=g)
    c, dh, dc = (torch.randn(n, H, generator=g) for _ in range(3))
    scale = torch.cat((torch.ones(3 * H), torch.full((H,), 2.0)))

    def both(rows: slice):
        gates = pre[rows].clone()
        h, c_new, tanh_c = native.forward(gates, bias, scale, c[rows])
        return (h, c_new, *native.backward(dh[rows], dc[rows], gates, c[rows], tanh_c)[::2])

    for whole, part in zip(both(slice(None)), both(slice(3, 8))):
        assert torch.equal(whole[3:8], part)


@needs_native
def test_native_sigmoid_is_accurate_and_keeps_nan_and_inf():
    """σ as the forward loop computes it: the gates, in place, against float64."""
    z = torch.cat(
        (
            torch.linspace(-100, 100, 4001),
            torch.tensor([math.inf, -math.inf, math.nan, 0.0, -0.0, 88.5, -88.5, 1e-8]),
        )
    )
    n, H = z.numel(), 1
    gates = torch.zeros(n, 4 * H)
    gates[:, 2] = z  # the output gate
    native.forward(gates, torch.zeros(4 * H), torch.ones(4 * H), torch.zeros(n, H))
    expected = torch.sigmoid(z.double())
    got = gates[:, 2].double()
    finite = ~z.isnan()
    assert torch.isnan(got[~finite]).all()
    error = (got[finite] - expected[finite]).abs()
    assert float((error / expected[finite].clamp_min(1e-30)).max()) < 5e-7  # about 4 ulp
    # e^x saturates at x = ±88.4: σ(−∞) comes out as ~4e-39 (denormal), not 0
    assert float(got[z == math.inf][0]) == 1.0 and 0.0 <= float(got[z == -math.inf][0]) < 1e-38


@needs_native
def test_meta_training_is_deterministic_and_matches_eager():
    config = TrainConfig(iterations=2, batch_size=8, horizon=10, truncation=5, val_every=100)
    a, _ = meta_train(config)
    b, _ = meta_train(config)
    with native.disabled():
        e, _ = meta_train(config)
    for name, p in a.state_dict().items():
        assert torch.equal(p, b.state_dict()[name]), name  # bit-identical run to run
        torch.testing.assert_close(p, e.state_dict()[name], rtol=1e-4, atol=1e-6)


def test_a_failing_compiler_falls_back_to_eager_with_one_log_line(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setenv("CC", "false")  # on PATH, always fails
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="l2o.nets.native"):
        assert not native.available()
    assert len(caplog.records) == 1 and "eager PyTorch" in caplog.records[0].getMessage()
    # the layer still runs, on the eager path
    h, _ = LSTMLayer.apply(
        torch.randn(3, 2), torch.zeros(3, 4), torch.zeros(3, 4), torch.randn(6, 16), torch.zeros(16)
    )
    assert h.shape == (3, 4)


def test_l2o_native_0_turns_the_c_loops_off(monkeypatch):
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setenv("L2O_NATIVE", "0")
    assert not native.available()
    assert not native.usable(torch.zeros(2, 2))


@needs_native
@pytest.mark.parametrize("features_need_grad", [False, True])
@pytest.mark.parametrize(("n", "sgemm"), [(45, True), (1280, True), (45, False)])
def test_fused_stack_equals_the_eager_layers(monkeypatch, features_need_grad, n, sgemm):
    """lstm_update on the C loops (one node) against the eager layers and output, both ways:
    each layer in one C call with torch's sgemm_, and with the matmuls in torch."""
    native.available()  # loaded first: loading looks for sgemm_
    if sgemm and not native.whole_layers(n):
        pytest.skip("torch exports no sgemm_ here")
    monkeypatch.setattr(native, "_sgemm", sgemm)
    net = LSTMOptimizer(seed=3)
    g = torch.Generator().manual_seed(1)
    grads = torch.randn(n, generator=g)
    grads[::7] = 0.0  # these coordinates must not move
    state = [torch.randn(n, 20, generator=g) for _ in range(4)]
    d_update = torch.randn(n, generator=g)
    d_state = [torch.randn(n, 20, generator=g) for _ in range(4)]

    def run(use_native: bool) -> list[torch.Tensor]:
        net.zero_grad()
        x = net.features(grads).requires_grad_(features_need_grad)
        s = [t.clone().requires_grad_(True) for t in state]
        with nullcontext() if use_native else native.disabled():
            update, new = lstm_update(net.weights(), x, tuple(s), 0.1, grads)
            torch.autograd.backward([update, *new], [d_update, *d_state])
        out = [update.detach(), *(t.detach() for t in new), *(t.grad for t in s)]
        out += [p.grad for p in net.parameters()]
        return out + ([x.grad] if features_need_grad else [])

    eager, fast = run(False), run(True)
    assert torch.equal(fast[0][::7], torch.zeros_like(fast[0][::7]))
    for i, (a, b) in enumerate(zip(eager, fast)):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5, msg=f"output {i}")


@needs_native
def test_without_torchs_sgemm_the_layers_keep_torch_matmuls(monkeypatch):
    native.available()
    monkeypatch.setattr(native, "_sgemm_address", lambda: None)
    monkeypatch.setattr(native, "_sgemm", False)
    native._use_sgemm(native._lib)
    assert not native.whole_layers(10)


@needs_native
def test_fused_stack_double_backward_differentiates_the_eager_step():
    net = LSTMOptimizer(seed=0)
    grad = torch.randn(6)

    def hessian_vector(use_native: bool) -> torch.Tensor:
        with nullcontext() if use_native else native.disabled():
            state = net.init_state(6)
            update, _ = lstm_update(net.weights(), net.features(grad), state, 0.1, grad)
            (g,) = torch.autograd.grad(update.pow(2).sum(), net.cell0_weight, create_graph=True)
            (hv,) = torch.autograd.grad(g.sum(), net.cell1_weight)
        return hv

    torch.testing.assert_close(hessian_vector(True), hessian_vector(False), rtol=1e-4, atol=1e-6)


@needs_native
def test_native_log_sign_equals_the_eager_preprocessing():
    t = math.exp(-10.0)
    special = [0.0, -0.0, t, -t, 1.01 * t, 0.99 * t, -0.5 * t, 1e-30, 3.0, -2.5, math.inf]
    grads = torch.cat((torch.tensor(special), torch.randn(500) * 1e-3, torch.tensor([math.nan])))
    with native.disabled():
        expected = log_sign(grads)
    got = log_sign(grads)
    assert not got.requires_grad and got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=2e-7, atol=0, equal_nan=True)


@needs_native
def test_chunked_loops_give_the_same_result_on_any_thread_count(monkeypatch):
    """Rows run in chunks (on torch's threads): the result does not depend on the threads."""
    g = torch.Generator().manual_seed(0)
    n, H = 37, 20
    pre, bias = torch.randn(n, 4 * H, generator=g) * 3, torch.randn(4 * H, generator=g)
    c, dh, dc = (torch.randn(n, H, generator=g) for _ in range(3))
    scale = torch.cat((torch.ones(3 * H), torch.full((H,), 2.0)))

    def both() -> list[torch.Tensor]:
        gates = pre.clone()
        h, c_new, tanh_c = native.forward(gates, bias, scale, c)
        return [h, c_new, *native.backward(dh[:, :], dc, gates, c, tanh_c)]

    whole = both()
    monkeypatch.setattr(native, "CHUNK", 8)  # five chunks
    threads = torch.get_num_threads()
    try:
        results = []
        for count in (1, 3):
            torch.set_num_threads(count)
            results.append(both())
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)
    for i, (a, b) in enumerate(zip(whole, results[0])):
        if i == 3:  # the bias gradient: the chunks' sums are added in another grouping
            torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)
        else:
            assert torch.equal(a, b)


@needs_native
def test_a_compiler_without_the_x86_64_levels_builds_for_the_baseline(monkeypatch, tmp_path):
    compiler = tmp_path / "oldcc"
    compiler.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in -march=*) echo unknown >&2; exit 1;; esac; done\n'
        f'exec {native._compiler()} "$@"\n'
    )
    compiler.chmod(0o755)
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "_flags", lambda: ["-O3", "-shared", "-fPIC", "-march=future"])
    monkeypatch.setenv("CC", str(compiler))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert native.available()


@needs_native
def test_no_coordinates_at_all():
    net = LSTMOptimizer(seed=0)
    state = [t.requires_grad_(True) for t in net.init_state(0)]
    grads = torch.zeros(0)
    update, new = lstm_update(net.weights(), net.features(grads), tuple(state), 0.1, grads)
    torch.autograd.backward([update, *new], [torch.zeros(0), *(torch.zeros(0, 20),) * 4])
    assert update.shape == (0,) and float(net.cell1_bias.grad.abs().sum()) == 0.0


@needs_native
@pytest.mark.parametrize(
    ("B", "log_loss", "kind"), [(128, False, "uniform"), (3, True, "increasing")]
)
def test_a_window_as_one_node_gives_the_per_step_gradients_to_the_bit(
    monkeypatch, B, log_loss, kind
):
    """First-order windows on the tape (one autograd node) against a node per step: the same
    objectives, losses, θ and meta-gradients, bit for bit, over windows carried one to the next."""
    net = LSTMOptimizer(seed=1)
    batch = get_task("quadratic").sample("train", range(B))
    observe = task_observer(batch)
    start = start_unroll(net, batch.init_params(), observe, batch.layout)

    def run(tape: bool) -> list[torch.Tensor]:
        if not tape:
            monkeypatch.setattr(net, "window_tape", lambda theta: None)
        net.zero_grad(set_to_none=True)
        state, out = start, []
        for _ in range(3):
            objective, losses, end = truncation_window(
                net, state, observe, 7, step_weights(kind, 21), batch, log_loss=log_loss
            )
            assert (type(objective.grad_fn).__name__ == "_WindowBackward") == tape
            objective.backward()
            out += [objective.detach(), losses, end.theta.detach(), *end.state]
            state = end.detach()
        return out + [p.grad.clone() for p in net.parameters()]

    on_tape = run(True)
    for i, (a, b) in enumerate(zip(run(False), on_tape)):  # (the node per step: patched after)
        assert torch.equal(a, b), i


@needs_native
def test_no_tape_where_the_window_is_not_plain_first_order_lstm():
    net, theta = LSTMOptimizer(seed=0), torch.zeros(2, 5)
    assert net.window_tape(theta) is not None
    with torch.no_grad():
        assert net.window_tape(theta) is None  # nothing to differentiate
    assert net.window_tape(torch.zeros(1, native.CHUNK + 1)) is None  # rows split over threads
    assert net.window_tape(theta.double()) is None
    with native.disabled():
        assert net.window_tape(theta) is None
    assert build_net(NetSpec(optimizer="rnnprop")).window_tape(theta) is None  # its own step
