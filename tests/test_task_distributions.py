"""Meta-training distributions: random MLPs, mixtures, augmentation (issue 10)."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from l2o.errors import L2OError
from l2o.tasks import get_task, index_groups, layout_sizes
from l2o.tasks.augment import AugmentedBatch
from l2o.tasks.digits_mlp import digits_halves
from l2o.tasks.mlp import REGRESSION, MLPShape, mlp_loss, mlp_loss_and_grad


def autograd_grad(batch, theta, step):
    theta = theta.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(batch.loss(theta, step).sum(), theta)
    return grad


@pytest.mark.parametrize("activation", ["gelu", "relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse", REGRESSION])
def test_manual_backprop_equals_autograd(activation, loss):
    torch.manual_seed(0)
    shape = MLPShape([5, 7, 6, 3])
    theta = torch.randn(2, shape.dim)
    x = torch.randn(2, 11, 5)
    y = torch.randn(2, 11, 3) if loss == REGRESSION else torch.randint(3, (2, 11))
    value, grad = mlp_loss_and_grad(theta, shape, x, y, activation, loss)
    theta_ = theta.clone().requires_grad_(True)
    reference = mlp_loss(theta_, shape, x, y, activation, loss)
    (expected,) = torch.autograd.grad(reference.sum(), theta_)
    torch.testing.assert_close(value, reference.detach())
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6)


def test_digits_mlp_accepts_gelu():
    batch = get_task("digits-mlp", {"activation": "gelu"}).sample("train", [0, 1])
    theta = batch.init_params()
    torch.testing.assert_close(batch.loss_and_grad(theta, 3)[1], autograd_grad(batch, theta, 3))


def test_random_mlp_batches_have_one_architecture_in_range_and_exact_gradients():
    family = get_task("random-mlp")
    archs = [family.architecture("train", i) for i in range(200)]
    assert {a.problem for a in archs} == {"classification", "regression"}
    assert {a.activation for a in archs} == {"sigmoid", "relu", "tanh", "gelu"}
    assert {a.source for a in archs} == {"sklearn", "teacher", "digits"}
    assert {len(a.sizes) - 2 for a in archs} == {1, 2, 3}
    assert all(8 <= h <= 64 for a in archs for h in a.sizes[1:-1])
    assert all(a.problem == "classification" for a in archs if a.source == "digits")
    for first in (0, 1, 2, 5):  # a few architectures, both problems among them
        batch = family.sample("train", [first, 40, 41])
        assert batch.arch == archs[first]
        assert sum(layout_sizes(batch.layout)) == batch.dim == MLPShape(batch.arch.sizes).dim
        theta = batch.init_params() + 0.1 * torch.randn(3, batch.dim)
        loss, grad = batch.loss_and_grad(theta, 4)
        torch.testing.assert_close(loss, batch.loss(theta, 4).detach())
        torch.testing.assert_close(grad, autograd_grad(batch, theta, 4), rtol=1e-4, atol=1e-6)
        assert torch.isfinite(batch.eval_loss(theta)).all()


def test_random_mlp_is_reproducible_and_instances_do_not_depend_on_their_batch():
    family = get_task("random-mlp")
    a, b = family.sample("train", [6, 7]), family.sample("train", [6, 7])
    torch.testing.assert_close(a.init_params(), b.init_params())
    torch.testing.assert_close(a.minibatch(9)[0], b.minibatch(9)[0])
    alone = family.sample("train", [6])
    torch.testing.assert_close(alone.init_params()[0], a.init_params()[0])
    torch.testing.assert_close(alone.X[0], a.X[0])
    torch.testing.assert_close(alone.minibatch(3)[0][0], a.minibatch(3)[0][0])


def test_random_mlp_splits_are_disjoint_and_digits_stays_on_its_meta_train_half():
    family = get_task("random-mlp", {"sources": ["sklearn", "teacher"]})
    data = {s: family.sample(s, [0]) for s in ("train", "validation", "test")}
    for s, t in (("train", "validation"), ("train", "test"), ("validation", "test")):
        if data[s].X.shape == data[t].X.shape:
            assert not torch.equal(data[s].X, data[t].X)
    digits = get_task("random-mlp", {"sources": ["digits"]})
    (train_X, _), (test_X, _) = digits_halves()
    for split in ("train", "validation"):
        assert torch.equal(digits.sample(split, [1]).X[0], train_X)
    assert torch.equal(digits.sample("test", [1]).X[0], test_X)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("random-mlp", {"depth": [0, 2]}, "depth"),
        ("random-mlp", {"activations": ["swish"]}, "activations"),
        ("random-mlp", {"problems": ["regression"], "sources": ["digits"]}, "regression"),
        ("mixture", {"members": []}, "non-empty"),
        ("mixture", {"members": [{"task": "quadratic", "weight": -1}]}, "weight"),
        ("mixture", {"members": [{"task": "nope"}]}, "unknown task"),
        ("mixture", {"members": [{"task": "quadratic", "colour": 1}]}, "colour"),
        ("augmented", {"param_scale": [1.0, 0.1]}, "param_scale"),
        ("augmented", {"level": "row"}, "level"),
    ],
)
def test_bad_distribution_options(name, options, message):
    with pytest.raises(L2OError, match=message):
        get_task(name, options)


def test_mixture_draws_members_by_weight_and_returns_their_instances():
    members = [
        {"task": "quadratic", "weight": 1.0, "options": {"dim": 3}},
        {"task": "quadratic", "weight": 3.0, "options": {"dim": 5}},
    ]
    mix = get_task("mixture", {"members": members})
    counts = Counter(mix.member("train", i) for i in range(2000))
    assert abs(counts[1] / 2000 - 0.75) < 0.04
    for first in range(6):
        batch = mix.sample("train", [first, 11])
        member = mix.families[mix.member("train", first)]
        assert batch.dim == member.dim
        torch.testing.assert_close(batch.init_params(), member.sample("train", [first, 11]).theta0)
    assert index_groups(mix, range(20)) == [list(range(8)), list(range(8, 16)), [16, 17, 18, 19]]


def test_mixture_from_toml_options():
    from l2o.config import load_config

    config = load_config(
        overrides=[
            "task=mixture",
            'task_options.members=[{task = "quadratic"}, '
            '{task = "random-mlp", weight = 2, options = {depth = [1, 1]}}]',
        ]
    )
    mix = get_task(config.task, config.task_options)
    assert [m["weight"] for m in mix.members] == [1.0, 2.0]


def test_augmentation_rescales_consistently_and_reports_the_unscaled_loss():
    family = get_task("augmented", {"task": "digits-mlp", "options": {"hidden": [6]}})
    batch = family.sample("train", [0, 1, 2])
    plain = family.inner.sample("train", [0, 1, 2])
    assert isinstance(batch, AugmentedBatch) and batch.layout == plain.layout
    s, c = batch.scale, batch.loss_scale
    assert ((s >= 1e-3) & (s <= 1e3)).all() and ((c >= 1e-3) & (c <= 1e3)).all()
    # one scale per tensor: constant within each tensor of the layout
    for part in torch.split(s, layout_sizes(batch.layout), dim=1):
        assert (part == part[:, :1]).all()
    assert len(set(s[0].tolist())) > 1
    phi = batch.init_params()
    torch.testing.assert_close(s * phi, plain.init_params())
    loss, grad = batch.loss_and_grad(phi, 5)
    plain_loss, plain_grad = plain.loss_and_grad(s * phi, 5)
    torch.testing.assert_close(loss, c * plain_loss)
    torch.testing.assert_close(grad, c.unsqueeze(1) * s * plain_grad)
    torch.testing.assert_close(grad, autograd_grad(batch, phi, 5), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(batch.eval_loss(phi), plain.eval_loss(plain.init_params()))
    # reproducible, and validation is the plain task unless asked
    torch.testing.assert_close(family.sample("train", [0, 1, 2]).scale, s)
    assert not isinstance(family.sample("validation", [0]), AugmentedBatch)
    spread = get_task("augmented", {"task": "quadratic"}).sample("train", list(range(400)))
    logs = spread.scale[:, 0].log10()
    assert logs.min() < -2.5 and logs.max() > 2.5 and abs(float(logs.mean())) < 0.3
    assert math.isclose(float(spread.loss_scale.log10().mean()), 0.0, abs_tol=0.3)
