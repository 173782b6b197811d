from __future__ import annotations

import math

import pytest
import torch

from l2o.config import TrainConfig
from l2o.errors import L2OError
from l2o.meta import build_from_config, meta_train, run_learned
from l2o.meta.checkpoint import checkpoint_path
from l2o.meta.unroll import start_unroll, step_weights, task_observer, truncation_window
from l2o.tasks import get_task

TINY = TrainConfig(
    batch_size=8,
    horizon=20,
    truncation=5,
    iterations=4,
    val_every=2,
    val_instances=8,
    checkpoint_every=2,
)


def window(net, batch, start, steps, second_order=False, log_loss=False):
    return truncation_window(
        net,
        start,
        task_observer(batch),
        steps,
        step_weights("uniform", 40),
        batch,
        second_order,
        log_loss,
    )


def test_every_lstm_weight_receives_a_nonzero_meta_gradient():
    net = build_from_config(TINY)
    batch = get_task("quadratic").sample("train", range(4))
    state = start_unroll(net, batch.init_params(), task_observer(batch))
    objective, _, _ = window(net, batch, state, 5)
    objective.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and float(p.grad.abs().max()) > 0, name


def test_state_carries_across_truncations():
    """Two windows of 5 steps with carried state retrace one window of 10 steps exactly."""
    net = build_from_config(TINY)
    batch = get_task("quadratic").sample("train", range(3))
    observe = task_observer(batch)
    start = start_unroll(net, batch.init_params(), observe)
    _, losses_long, end_long = window(net, batch, start, 10)
    _, losses_a, mid = window(net, batch, start, 5)
    mid = mid.detach()
    assert all(float(s.abs().max()) > 0 for s in mid.state)  # the state is not reset
    _, losses_b, end = window(net, batch, mid, 5)
    torch.testing.assert_close(torch.cat([losses_a, losses_b]), losses_long)
    torch.testing.assert_close(end.theta, end_long.theta.detach())
    # ...and the carried state matters: a reset state would take another path.
    reset = type(mid)(mid.theta, mid.inputs, net.init_state(mid.theta.numel()), mid.step)
    _, losses_reset, _ = window(net, batch, reset, 5)
    assert not torch.allclose(losses_reset, losses_b)


@pytest.mark.parametrize("log_loss", [False, True])
def test_surrogate_meta_gradient_equals_autograd_through_the_loss(log_loss):
    """First-order surrogate = autograd of Σ f(θ_t) (or Σ log f) with ∇f fed in detached."""
    net = build_from_config(TINY).double()
    batch = get_task("digits-mlp").sample("train", range(2))
    theta0 = batch.init_params().double()
    batch.X = batch.X.double()
    observe = task_observer(batch)
    start = start_unroll(net, theta0, observe)
    objective, _, _ = window(net, batch, start, 4, log_loss=log_loss)
    fast = torch.autograd.grad(objective, list(net.parameters()))
    # Reference: differentiate the real losses; feed detached autograd gradients to the net.
    theta, state, total = theta0, net.init_state(theta0.numel()), 0.0
    grad = observe(theta0, 0)[2]
    for step in range(1, 5):
        update, state = net(grad.reshape(-1), state)
        theta = theta + update.view_as(theta)
        loss = batch.loss(theta, step)
        total = total + (loss.log() if log_loss else loss).mean()
        tt = theta.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(batch.loss(tt, step).sum(), tt)
    slow = torch.autograd.grad(total, list(net.parameters()))
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b)


def test_log_meta_loss_floor_stops_the_meta_gradient_of_converged_instances():
    """Below meta_loss_floor an instance teaches nothing; the original rule (floor 0) lets it
    dominate, as 1 / 1e-12 times its gradient."""
    net = build_from_config(TINY)
    pair = get_task("quadratic").sample("train", range(2))
    alone = get_task("quadratic").sample("train", range(1))
    observe_pair = task_observer(pair)

    def converged_second(theta, step):  # instance 1 reports a loss of ~1e-20
        loss, grad, inputs = observe_pair(theta, step)
        return loss * torch.tensor([1.0, 1e-20]), grad, inputs

    weights = step_weights("uniform", 40)

    def meta_grad(batch, observe, floor):
        start = start_unroll(net, batch.init_params(), observe)
        objective, _, _ = truncation_window(
            net, start, observe, 5, weights, batch, log_loss=True, log_floor=floor
        )
        return torch.cat([g.flatten() for g in torch.autograd.grad(objective, net.parameters())])

    floored = meta_grad(pair, converged_second, 1e-8)
    single = meta_grad(alone, task_observer(alone), 1e-8)
    torch.testing.assert_close(floored, single / 2)  # the objective averages over instances
    original = meta_grad(pair, converged_second, 0.0)
    assert float(original.norm()) > 1e6 * float(floored.norm())


def test_second_order_differs_from_first_order_and_is_finite():
    net = build_from_config(TINY)
    batch = get_task("quadratic").sample("train", range(4))
    start = start_unroll(net, batch.init_params(), task_observer(batch))
    first = torch.autograd.grad(window(net, batch, start, 5)[0], list(net.parameters()))
    second = torch.autograd.grad(window(net, batch, start, 5, True)[0], list(net.parameters()))
    assert all(torch.isfinite(g).all() for g in second)
    assert any(not torch.allclose(a, b) for a, b in zip(first, second))


def test_same_seed_same_result():
    a, ha = meta_train(TINY)
    b, hb = meta_train(TINY)
    assert [r["meta_loss"] for r in ha.rows] == [r["meta_loss"] for r in hb.rows]
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    c, _ = meta_train(TINY.replace(seed=1))
    assert not torch.equal(a.out_weight, c.out_weight)


def test_short_training_beats_its_own_initialisation_on_validation():
    cfg = TrainConfig(
        batch_size=32,
        horizon=40,
        truncation=10,
        iterations=40,
        val_every=40,
        val_instances=32,
        meta_lr=0.01,
    )
    family = get_task("quadratic")
    batch = family.sample("validation", range(100, 132))  # not the instances used for selection

    def final_loss(net):
        _, theta = run_learned(net, batch.init_params(), task_observer(batch), cfg.horizon)
        return float(batch.eval_loss(theta).mean())

    before = final_loss(build_from_config(cfg))
    net, history = meta_train(cfg)
    after = final_loss(net)
    assert history.skipped == 0
    assert after < 0.5 * before, (before, after)
    assert history.rows[-1]["meta_loss"] < history.rows[0]["meta_loss"]


def test_resume_after_interruption_gives_the_same_weights(tmp_path):
    full, _ = meta_train(TINY, out_dir=tmp_path / "full")
    meta_train(TINY.replace(iterations=2), out_dir=tmp_path / "cut")  # "killed" after 2
    resumed, history = meta_train(TINY, out_dir=tmp_path / "cut", resume=True)
    for (name, p), q in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name
    rows = (tmp_path / "cut" / "metrics.csv").read_text().splitlines()
    assert rows[0] == "iteration,meta_loss,val_loss,grad_norm,skipped,wall_time"
    assert [int(r.split(",")[0]) for r in rows[1:]] == [1, 2, 3, 4]
    assert len(history.rows) == 4


def test_resume_refuses_another_config(tmp_path):
    meta_train(TINY.replace(iterations=2), out_dir=tmp_path)
    with pytest.raises(L2OError, match="different config"):
        meta_train(TINY.replace(horizon=30), out_dir=tmp_path, resume=True)
    with pytest.raises(L2OError, match="no checkpoint"):
        meta_train(TINY, out_dir=tmp_path / "other", resume=True)


def test_a_checkpoint_from_before_a_new_config_key_resumes(tmp_path, monkeypatch):
    """A key added to the config after the checkpoint was written was at its default there."""
    import l2o.meta.train as train_module

    load = train_module.load_checkpoint

    def older(*args, **kwargs):
        training, saved = load(*args, **kwargs)
        return training, {k: v for k, v in saved.items() if k != "val_metric"}

    monkeypatch.setattr(train_module, "load_checkpoint", older)
    meta_train(TINY.replace(iterations=2), out_dir=tmp_path)
    meta_train(TINY, out_dir=tmp_path, resume=True)  # val_metric = "mean", the default
    meta_train(TINY.replace(iterations=2), out_dir=tmp_path / "b")
    with pytest.raises(L2OError, match="val_metric"):
        meta_train(TINY.replace(val_metric="log_mean"), out_dir=tmp_path / "b", resume=True)


def test_corrupt_checkpoint_is_reported(tmp_path):
    meta_train(TINY.replace(iterations=2), out_dir=tmp_path)
    checkpoint_path(tmp_path).write_bytes(b"garbage")
    with pytest.raises(L2OError, match="corrupt"):
        meta_train(TINY, out_dir=tmp_path, resume=True)


def test_nan_meta_loss_is_skipped_and_counted():
    cfg = TINY.replace(iterations=3, val_every=3)
    family = get_task("quadratic")
    calls = {"n": 0}
    from l2o.meta.train import MetaProblem, task_problem

    base = task_problem(family)

    def sample(split, indices):
        theta0, observe, batch = base.sample(split, indices)
        calls["n"] += 1
        if calls["n"] == 2:  # the second meta-iteration's data blow up

            def observe_nan(theta, step):
                loss, grad, inputs = observe(theta, step)
                return loss * math.nan, grad, inputs

            return theta0, observe_nan, batch
        return theta0, observe, batch

    net, history = meta_train(cfg, problem=MetaProblem(sample, base.evaluate))
    assert history.skipped == 1
    assert [r["skipped"] for r in history.rows] == [0, 1, 1]
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_every_validated_network_is_kept_and_the_best_is_the_run_s_network(tmp_path):
    import l2o

    net, history = meta_train(TINY.replace(iterations=6), out_dir=tmp_path / "run")
    validated = tmp_path / "run" / "validated"
    assert sorted(p.name for p in validated.iterdir()) == ["000002", "000004", "000006"]
    best = l2o.load(validated / f"{history.best_iteration:06d}")
    for name, tensor in net.state_dict().items():
        assert torch.equal(best.state_dict()[name], tensor), name
    others = [l2o.load(p) for p in validated.iterdir() if p.name != f"{history.best_iteration:06d}"]
    assert all(
        any(not torch.equal(o.state_dict()[k], t) for k, t in net.state_dict().items())
        for o in others
    )  # each is the network at its own iteration, not a copy of the kept one
