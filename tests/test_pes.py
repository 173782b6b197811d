"""PES: unbiased for the Gaussian-smoothed meta-loss, and it meta-trains (issue 10)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from l2o.config import TrainConfig
from l2o.errors import L2OError
from l2o.meta.pes import PESUnroll
from l2o.meta.train import build_from_config, meta_train, task_problem
from l2o.meta.unroll import apply_net, step_weights, task_observer
from l2o.nets import build_net, net_names
from l2o.tasks import get_task

SIGMA, PAIRS, SAMPLES, STEPS = 0.05, 600, 50, 2  # two windows of two steps


class _Apply(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, inputs, state, layout, step):
        return apply_net(self.net, inputs, state, layout, step)


def _exact_window_gradients(net, batch, eps_per_window):
    """∇_w of each window's loss at weights w + ε_k in window k, by autograd through it all
    (the optimizee's gradient included: PES differentiates the true, not first-order, loss)."""
    apply = _Apply(net)
    names = [n for n, _ in net.named_parameters()]
    w = {n: p.detach().clone().requires_grad_(True) for n, p in net.named_parameters()}
    W, y = batch.W, batch.y

    def loss_grad(theta):
        r = torch.bmm(W, theta.unsqueeze(-1)).squeeze(-1) - y
        return r.pow(2).sum(-1), 2 * torch.bmm(r.unsqueeze(1), W).squeeze(1)

    theta = batch.init_params()
    state = net.init_state(theta.numel())
    _, g = loss_grad(theta)
    grads = []
    step = 0
    for eps in eps_per_window:
        params = {f"net.{n}": w[n] + eps[n] for n in names}
        window = theta.new_zeros(())
        for _ in range(STEPS):
            update, state = functional_call(apply, params, (g, state, batch.layout, step))
            step += 1
            theta = theta + update
            f, g = loss_grad(theta)
            window = window + f.mean()
        parts = torch.autograd.grad(window, [w[n] for n in names], retain_graph=True)
        grads.append(torch.cat([p.flatten() for p in parts]))
    return grads


def test_pes_mean_is_the_gradient_of_the_smoothed_meta_loss():
    torch.manual_seed(0)
    net = build_net({"optimizer": "lstm", "hidden_size": 1, "layers": 1}, seed=0)
    batch = get_task("quadratic", {"dim": 2}).sample("train", [0])
    weights = step_weights("uniform", 2 * STEPS)
    groups = [(batch.init_params(), task_observer(batch), batch.layout)] * PAIRS
    unroll = PESUnroll(net, groups, [1] * PAIRS, SIGMA, torch.Generator().manual_seed(1))
    pes = [unroll.window(STEPS, weights)[0] for _ in range(2)]
    named = dict(net.named_parameters())
    reference = [
        _exact_window_gradients(
            net,
            batch,
            [{n: SIGMA * torch.randn_like(p) for n, p in named.items()} for _ in range(2)],
        )
        for _ in range(SAMPLES)
    ]
    for k in range(2):
        ref = torch.stack([r[k] for r in reference])
        se = (pes[k].var(0) / PAIRS + ref.var(0) / SAMPLES).sqrt()
        z = (pes[k].mean(0) - ref.mean(0)) / se
        assert z.abs().max() < 4.5 and (z**2).mean() < 2.0, z
        # ...and the test has power: an estimate off by a factor 2 would fail it
        assert ((0.5 * pes[k].mean(0) - ref.mean(0)) / se).abs().max() > 4.5


def test_pes_meta_training_lowers_the_meta_loss():
    config = TrainConfig(
        iterations=10,
        batch_size=16,
        horizon=20,
        truncation=5,
        val_every=10,
        val_instances=32,
        estimator="pes",
        pes_pairs=4,
        meta_lr=0.03,
    )
    problem = task_problem(get_task("quadratic"))
    indices = list(range(32))
    before = problem.final_loss(build_from_config(config), "validation", indices, 20)
    net, history = meta_train(config)
    after = problem.final_loss(net, "validation", indices, 20)
    assert after < 0.3 * before, (before, after)
    assert all(r["grad_norm"] > 0 for r in history.rows)


def test_pes_runs_are_reproducible():
    config = TrainConfig(
        iterations=2, batch_size=4, horizon=6, truncation=3, estimator="pes", pes_pairs=2
    )
    a, _ = meta_train(config)
    b, _ = meta_train(config)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"estimator": "es"}, "estimator must be one of"),
        ({"estimator": "pes", "pes_sigma": 0.0}, "pes_sigma"),
        ({"estimator": "pes", "pes_pairs": 0}, "pes_pairs"),
        ({"estimator": "pes", "second_order": True}, "second_order"),
    ],
)
def test_bad_pes_config(changes, message):
    with pytest.raises(L2OError, match=message):
        TrainConfig(**changes)


# The concurrent combiners need the concurrent framework's inputs, not a plain task's; the mlp
# with param_scale also reads θ (needs_params), which PES must pass through.
@pytest.mark.parametrize(
    ("kind", "options"),
    [(k, {}) for k in net_names() if not k.startswith("concurrent")]
    + [("mlp", {"param_scale": True})],
)
def test_pes_trains_every_net_kind(kind, options):
    config = TrainConfig(
        optimizer=kind,
        **options,
        iterations=1,
        batch_size=4,
        horizon=6,
        truncation=3,
        estimator="pes",
        pes_pairs=2,
        val_instances=4,
    )
    before = build_from_config(config)
    net, history = meta_train(config)
    assert history.rows[0]["skipped"] == 0 and history.rows[0]["grad_norm"] > 0
    moved = [not torch.equal(p, q) for p, q in zip(before.parameters(), net.parameters())]
    assert all(moved)
