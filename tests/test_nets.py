from __future__ import annotations

import math

import pytest
import torch

from l2o.errors import L2OError
from l2o.nets import LSTMOptimizer, build_net, log_sign, lstm_update
from l2o.nets.lstm_cell import LSTMLayer


@pytest.mark.parametrize("p", [10.0, 5.0])
def test_log_sign_matches_the_formula_on_both_sides_of_the_threshold(p):
    t = math.exp(-p)
    g = torch.tensor([3.0, -0.5, 2 * t, -1.01 * t, 0.99 * t, -0.5 * t, 0.0], dtype=torch.float64)
    out = log_sign(g, p)
    for value, (a, b) in zip(g.tolist(), out.tolist()):
        if abs(value) >= t:
            expected = (math.log(abs(value)) / p, math.copysign(1.0, value))
        else:
            expected = (-1.0, math.exp(p) * value)
        assert a == pytest.approx(expected[0], rel=1e-9, abs=1e-12)
        assert b == pytest.approx(expected[1], rel=1e-9, abs=1e-12)


def test_lstm_update_equals_torch_lstm_cells():
    """The packed, sigmoid-only cell computes exactly a stack of nn.LSTMCell."""
    torch.manual_seed(0)
    net = LSTMOptimizer(hidden_size=6, layers=2, seed=1).double()
    H = 6
    cells = [torch.nn.LSTMCell(2, H).double(), torch.nn.LSTMCell(H, H).double()]
    order = torch.cat(
        [
            torch.arange(0, H),
            torch.arange(H, 2 * H),
            torch.arange(3 * H, 4 * H),
            torch.arange(2 * H, 3 * H),
        ]
    )  # ours: i f o g, torch's: i f g o
    with torch.no_grad():
        for layer, cell in enumerate(cells):
            w = getattr(net, f"cell{layer}_weight")
            b = getattr(net, f"cell{layer}_bias")
            in_size = w.shape[0] - H
            cell.weight_ih.copy_(w[:in_size, :].T[torch.argsort(order)])
            cell.weight_hh.copy_(w[in_size:, :].T[torch.argsort(order)])
            cell.bias_ih.copy_(b[torch.argsort(order)])
            cell.bias_hh.zero_()
    grad = torch.randn(9, dtype=torch.float64)
    state = tuple(torch.randn(9, H, dtype=torch.float64) for _ in range(4))
    update, new_state = net(grad, state)
    x = net.features(grad)
    h1, c1 = cells[0](x, (state[0], state[1]))
    h2, c2 = cells[1](h1, (state[2], state[3]))
    expected = (h2 @ net.out_weight + net.out_bias) * net.output_scale
    torch.testing.assert_close(update, expected)
    for ours, theirs in zip(new_state, (h1, c1, h2, c2)):
        torch.testing.assert_close(ours, theirs)


def test_weights_are_shared_by_all_coordinates():
    net = LSTMOptimizer(seed=0)
    grad = torch.tensor([0.3, -2.0, 0.3])
    with torch.no_grad():
        update, _ = net(grad, net.init_state(3))
    torch.testing.assert_close(update[0], update[2])
    assert abs(float(update[0] - update[1])) > 1e-6
    assert sum(p.numel() for p in net.parameters()) == 2 * 20 * 4 * 20 + 2 * 4 * 20 + 22 * 80 + 21
    alone, _ = lstm_update(net.weights(), net.features(grad[1:2]), net.init_state(1), 0.1)
    torch.testing.assert_close(alone, update[1:2])


def test_no_preprocessing_feeds_raw_gradients():
    net = LSTMOptimizer(preprocess="none", seed=0)
    assert net.features(torch.tensor([2.5])).tolist() == [[2.5]]
    assert net.cell0_weight.shape == (1 + 20, 80)


def test_build_net_validates():
    with pytest.raises(L2OError, match="unknown learned optimizer"):
        build_net({"optimizer": "transformer"})
    with pytest.raises(L2OError, match="preprocess must be one of"):
        build_net({"optimizer": "lstm", "preprocess": "tanh"})
    with pytest.raises(L2OError, match="unknown architecture key"):
        build_net({"optimizer": "lstm", "depth": 3})


def test_fused_lstm_layer_gradients_are_exact():
    torch.manual_seed(0)
    args = (
        torch.randn(5, 2),
        torch.randn(5, 3),
        torch.randn(5, 3),
        torch.randn(5, 12),
        torch.randn(12),
    )
    args = tuple(a.double().requires_grad_(True) for a in args)
    assert torch.autograd.gradcheck(LSTMLayer.apply, args)
