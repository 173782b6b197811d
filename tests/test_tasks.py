from __future__ import annotations

import pytest
import torch

from l2o.errors import L2OError
from l2o.tasks import SPLITS, TaskFamily, get_task, instance_seed, list_tasks, register_task
from l2o.tasks.digits_mlp import digits_halves


def autograd_grad(batch, theta, step):
    theta = theta.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(batch.loss(theta, step).sum(), theta)
    return grad


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("quadratic", {}),
        ("quadratic", {"dim": 7, "noise_std": 0.3}),
        ("digits-mlp", {}),
        ("digits-mlp", {"hidden": [20, 20], "activation": "relu"}),
        ("digits-mlp", {"hidden": [40], "activation": "tanh", "loss": "mse", "batch_size": 16}),
    ],
)
def test_batched_gradient_equals_autograd(name, options):
    batch = get_task(name, options).sample("train", [3, 1, 4])
    theta = batch.init_params() + 0.1 * torch.randn(batch.size, batch.dim)
    for step in (0, 7):
        loss, grad = batch.loss_and_grad(theta, step)
        assert grad.shape == theta.shape and loss.shape == (3,)
        torch.testing.assert_close(loss, batch.loss(theta, step).detach())
        torch.testing.assert_close(grad, autograd_grad(batch, theta, step), rtol=1e-4, atol=1e-6)


def test_batch_rows_are_the_single_instances():
    """A batch is B independent instances: row i equals instance i sampled alone."""
    for name in ("quadratic", "digits-mlp"):
        family = get_task(name)
        batch = family.sample("test", [5, 9])
        alone = family.sample("test", [9])
        theta = batch.init_params()
        torch.testing.assert_close(theta[1:], alone.init_params())
        for step in (0, 150):  # crosses a minibatch chunk boundary
            _, g_batch = batch.loss_and_grad(theta, step)
            _, g_alone = alone.loss_and_grad(theta[1:], step)
            torch.testing.assert_close(g_batch[1:], g_alone)


def test_splits_are_disjoint_and_stable():
    seeds = {split: {instance_seed("quadratic", split, i) for i in range(500)} for split in SPLITS}
    assert not seeds["train"] & seeds["validation"]
    assert not seeds["train"] & seeds["test"]
    assert not seeds["validation"] & seeds["test"]
    a = get_task("quadratic").sample("validation", [0]).init_params()
    b = get_task("quadratic").sample("validation", [0]).init_params()
    assert torch.equal(a, b)
    assert not torch.equal(a, get_task("quadratic").sample("test", [0]).init_params())


def test_digits_halves_are_disjoint_and_test_uses_the_unseen_half():
    (x_train, _), (x_test, _) = digits_halves()
    assert len(x_train) + len(x_test) == 1797
    assert float(x_train.min()) >= 0.0 and float(x_train.max()) <= 1.0
    train_rows = {tuple(r.tolist()) for r in x_train}
    overlap = sum(tuple(r.tolist()) in train_rows for r in x_test)
    assert overlap < 0.05 * len(x_test)  # a few digits images are exact duplicates
    family = get_task("digits-mlp")
    assert family.sample("test", [0]).X is x_test
    assert family.sample("validation", [0]).X is x_train


def test_minibatches_are_fresh_each_step_and_mlp_init_is_pytorchs():
    batch = get_task("digits-mlp").sample("train", [0])
    assert not torch.equal(batch.stream.indices(0), batch.stream.indices(1))
    w1 = batch.init_params()[0, : 64 * 20]
    assert float(w1.abs().max()) <= 1 / 8 and float(w1.std()) > 0.05  # U(±1/√64)


def test_quadratic_definition():
    batch = get_task("quadratic").sample("test", [2])
    theta = batch.init_params()
    expected = (batch.W[0] @ theta[0] - batch.y[0]).pow(2).sum()
    torch.testing.assert_close(batch.loss(theta, 0)[0], expected)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("nope", {}, "unknown task 'nope'"),
        ("quadratic", {"dim": 0}, "dim must be"),
        ("quadratic", {"size": 3}, "unknown option"),
        ("digits-mlp", {"activation": "swish"}, "activation must be one of"),
        ("digits-mlp", {"hidden": [0]}, "hidden must be"),
    ],
)
def test_bad_task_input(name, options, message):
    with pytest.raises(L2OError, match=message):
        get_task(name, options)


def test_users_can_register_their_own_task():
    class Line(TaskFamily):
        """A 1-d line for the test."""

        dim = 1

        def sample(self, split, indices):
            return get_task("quadratic", {"dim": 1}).sample(split, indices)

    register_task("test-line", Line)
    assert "test-line" in list_tasks()
    assert get_task("test-line").sample("train", [0, 1]).init_params().shape == (2, 1)


def test_layouts_cover_theta_in_order():
    from l2o.tasks import get_task, layout_sizes

    quad = get_task("quadratic").sample("train", [0, 1])
    assert quad.layout == ((10,),)
    mlp = get_task("digits-mlp", {"hidden": [5, 4]}).sample("train", [0])
    assert mlp.layout == ((64, 5), (5,), (5, 4), (4,), (4, 10), (10,))
    assert sum(layout_sizes(mlp.layout)) == mlp.dim
