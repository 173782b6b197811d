"""Initializers: the K optimizees really differ as specified, and bad options say what to fix."""

from __future__ import annotations

import pytest
import torch

from l2o.concurrent.initializers import (
    build_set,
    describe_all,
    digits_parts,
    rotate_images,
)
from l2o.errors import L2OError
from l2o.tasks.mlp import mlp_loss


def test_noise_levels_on_least_squares_are_the_residual_scales():
    levels = [0.0, 0.5, 2.0]
    cset = build_set("noise", "quadratic", {}, {"levels": levels})
    batch = cset.sample("train", list(range(64)))
    noise = batch.noisy_y - batch.clean_y.unsqueeze(1)  # (B, K, d): σ_k ε_k
    std = noise.std(dim=(0, 2))
    assert std[0] == 0
    assert std[1] == pytest.approx(0.5, rel=0.1) and std[2] == pytest.approx(2.0, rel=0.1)
    # the K noises are independent draws, not one ε scaled
    corr = torch.corrcoef(torch.stack((noise[:, 1].flatten(), noise[:, 2].flatten())))[0, 1]
    assert abs(float(corr)) < 0.1
    assert cset.clean == 0 and cset.labels == ["sigma=0", "sigma=0.5", "sigma=2"]


def test_quadratic_noise_gradients_match_autograd_and_clean_objective():
    cset = build_set("noise", "quadratic", {"dim": 6}, {"levels": [0.1, 1.0]})
    batch = cset.sample("validation", [3, 4])
    theta = torch.randn(2, 6, requires_grad=True)
    losses, grads = batch.grads(theta.detach(), 0)
    for k in range(2):
        r = torch.bmm(batch.W, theta.unsqueeze(-1)).squeeze(-1) - batch.noisy_y[:, k]
        (g,) = torch.autograd.grad(r.pow(2).sum(), theta)
        torch.testing.assert_close(grads[:, :, k], g)
        torch.testing.assert_close(losses[:, k], r.pow(2).sum(-1).detach())
    clean, clean_grad = batch.clean_loss_and_grad(theta.detach(), 0)
    assert torch.allclose(grads.mean(-1), clean_grad, atol=10.0)  # same function up to noise
    assert clean.shape == (2,)


def test_poison_replaces_exactly_the_given_fraction_with_wrong_labels():
    rates = [0.0, 0.25, 0.6]
    cset = build_set("poison", "digits-mlp", {}, {"rates": rates})
    batch = cset.sample("train", [0, 1])
    _, y, _, _ = digits_parts(cset.family, "train")
    wrong = batch.Y.ne(y).float().mean(-1)  # (B, K)
    for k, rho in enumerate(rates):
        assert wrong[:, k].tolist() == pytest.approx([round(rho * len(y)) / len(y)] * 2)
    # different instances poison different rows
    assert not torch.equal(batch.Y[0, 2], batch.Y[1, 2])


def test_digits_gradients_are_one_batched_call_matching_each_optimizee():
    cset = build_set("poison", "digits-mlp", {"batch_size": 16}, {"rates": [0.0, 0.5]})
    batch = cset.sample("train", [0, 1, 2])
    theta = batch.init_params().requires_grad_(True)
    losses, grads = batch.grads(theta.detach(), step=5)
    assert grads.shape == (3, cset.dim, 2)
    rows = batch.rows(5)
    f = cset.family
    for k in range(2):
        x = batch.X[batch.xsel[:, k].unsqueeze(-1), rows[:, k]]
        labels = batch.Y[:, k].gather(1, rows[:, k])
        loss = mlp_loss(theta, f.shape, x, labels, f.activation, f.loss)
        (g,) = torch.autograd.grad(loss.sum(), theta)
        torch.testing.assert_close(grads[:, :, k], g, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(losses[:, k], loss.detach(), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(grads[..., 0], grads[..., 1])


def test_rotation_rotates_each_optimizees_images_by_its_angle():
    X = torch.rand(5, 64)
    torch.testing.assert_close(rotate_images(X, 0.0), X)
    ninety = rotate_images(X, 90.0).view(5, 8, 8)
    torch.testing.assert_close(ninety, torch.rot90(X.view(5, 8, 8), 1, (1, 2)), atol=1e-5, rtol=0)
    cset = build_set("rotation", "digits-mlp", {}, {"angles": [0, 20, 45]})
    batch = cset.sample("test", [0])
    Xopt, _, _, _ = digits_parts(cset.family, "test")
    for k, angle in enumerate([0, 20, 45]):
        torch.testing.assert_close(batch.X[batch.xsel[0, k]], rotate_images(Xopt, angle))
    # larger angles move the images further from the originals
    dist = [float((batch.X[k] - Xopt).norm()) for k in range(3)]
    assert dist[0] == 0 < dist[1] < dist[2]
    assert cset.clean == 0


def test_pixel_noise_on_digits_has_the_given_scale():
    cset = build_set("noise", "digits-mlp", {}, {"levels": [0.0, 0.3]})
    batch = cset.sample("train", [0, 1])
    Xopt, _, _, _ = digits_parts(cset.family, "train")
    diff = batch.X[batch.xsel] - Xopt  # (B, K, n, 64)
    assert float(diff[:, 0].abs().max()) == 0
    assert float(diff[:, 1].std()) == pytest.approx(0.3, rel=0.05)


@pytest.mark.parametrize("alpha", [None, 0.5])
def test_shards_are_disjoint_and_cover_the_data(alpha):
    cset = build_set("shards", "digits-mlp", {}, {"parts": 4, "alpha": alpha})
    batch = cset.sample("train", [0, 1])
    members, sizes = batch.pool
    n = batch.n
    for b in range(2):
        rows = torch.cat([members[b, k, : sizes[b, k]] for k in range(4)])
        assert sorted(rows.tolist()) == list(range(n))
    if alpha is None:
        assert int(sizes.max() - sizes.min()) <= 1
    else:
        assert int(sizes.max() - sizes.min()) > 10  # Dirichlet(0.5): uneven parts
    # every optimizee's minibatch stays inside its own shard
    rows = batch.rows(3)
    for k in range(4):
        allowed = set(members[0, k, : sizes[0, k]].tolist())
        assert set(rows[0, k].tolist()) <= allowed
    assert cset.clean is None


def test_grid_builds_the_cartesian_product_and_finds_the_clean_point():
    cset = build_set(
        "grid",
        "digits-mlp",
        {},
        {"options": {"activation": ["tanh", "sigmoid"], "loss": ["mse", "cross_entropy"]}},
    )
    assert cset.k == 4 and cset.labels[3] == "activation=sigmoid,loss=cross_entropy"
    assert cset.clean == 3  # the base task's own options
    batch = cset.sample("train", [0])
    _, grads = batch.grads(batch.init_params(), 0)
    assert grads.shape == (1, cset.dim, 4)


@pytest.mark.parametrize(
    ("name", "task", "options", "message"),
    [
        ("noise", "quadratic", {"levels": []}, "non-empty list"),
        ("noise", "quadratic", {"levels": [0.1, -1]}, ">= 0"),
        ("noise", "quadratic", {"sigma": [0.1]}, "unknown option"),
        ("poison", "digits-mlp", {"rates": [0, 1.5]}, r"in \[0, 1\]"),
        ("poison", "quadratic", {}, "works on digits-mlp"),
        ("rotation", "digits-mlp", {"angles": ["a"]}, "number"),
        ("shards", "digits-mlp", {"parts": 0}, "parts \\(K\\) must be >= 1"),
        ("shards", "digits-mlp", {"alpha": -1}, "alpha"),
        ("grid", "digits-mlp", {"options": {"hidden": [[20], [40]]}}, "parameter count"),
        ("grid", "digits-mlp", {"options": {"activation": []}}, "non-empty list"),
        ("nope", "quadratic", {}, "unknown initializer"),
    ],
)
def test_initializers_reject_bad_options_with_clear_errors(name, task, options, message):
    with pytest.raises(L2OError, match=message):
        build_set(name, task, {}, options)


def test_describe_all_lists_every_initializer():
    data = {"noise", "poison", "shards", "rotation", "grid"}
    attacks = {"signflip", "ipm", "alie", "gaussian", "inf"}
    assert set(describe_all()) == data | attacks
