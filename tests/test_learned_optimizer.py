"""What only the learned optimizer does: its state, its errors, and equivalence with the core."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import l2o
from l2o.meta.unroll import run_learned, task_observer
from l2o.nets import spec as spec_module
from l2o.tasks import get_task


def _net(**kw: object) -> l2o.LSTMOptimizer:
    return l2o.LSTMOptimizer(seed=0, **kw)


def _grads(n: int, steps: int, seed: int = 0) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g) * 10.0 ** (-i % 4) for i in range(steps)]


def test_same_updates_as_calling_the_net() -> None:
    net = _net()
    theta = nn.Parameter(torch.randn(7))
    opt = l2o.LearnedOptimizer([theta], net)
    expected = theta.detach().clone()
    state = net.init_state(7)
    with torch.no_grad():
        for grad in _grads(7, 5):
            theta.grad = grad.clone()
            opt.step()
            update, state = net(grad, state)
            expected = expected + update
            assert torch.equal(theta.detach(), expected)
    for key, value in zip(opt.state_keys(), state):
        assert torch.equal(opt.state[theta][key], value)


def test_a_group_is_one_net_call_over_its_concatenated_gradients() -> None:
    net = _net()
    a, b = nn.Parameter(torch.zeros(2, 3)), nn.Parameter(torch.zeros(4))
    opt = l2o.LearnedOptimizer([a, b], net)
    for grad in _grads(10, 3, seed=1):
        a.grad, b.grad = grad[:6].view(2, 3).clone(), grad[6:].clone()
        opt.step()
    total = torch.cat([a.detach().reshape(-1), b.detach()])
    assert torch.equal(total, _cumulative(net, _grads(10, 3, seed=1)))
    assert opt.state[a]["h0"].shape == (6, 20) and opt.state[b]["h0"].shape == (4, 20)


def _cumulative(net: nn.Module, grads: list[Tensor]) -> Tensor:
    theta, state = torch.zeros(grads[0].shape), net.init_state(grads[0].numel())
    with torch.no_grad():
        for grad in grads:
            update, state = net(grad, state)
            theta = theta + update
    return theta


def test_same_trajectory_as_run_learned_on_a_task() -> None:
    net = _net()
    batch = get_task("quadratic").sample("test", [0, 1, 2])
    _, expected = run_learned(net, batch.init_params(), task_observer(batch), steps=20)
    theta = nn.Parameter(batch.init_params())
    opt = l2o.LearnedOptimizer([theta], net)
    for step in range(20):
        theta.grad = batch.loss_and_grad(theta.detach(), step)[1]
        opt.step()
    assert torch.equal(theta.detach(), expected)


def test_lr_is_the_output_scale() -> None:
    net = _net(output_scale=0.1)
    grad = torch.randn(5)
    moved = []
    for lr in (None, 0.1, 0.3):
        theta = nn.Parameter(torch.zeros(5))
        opt = l2o.LearnedOptimizer([theta], net, lr=lr)
        theta.grad = grad.clone()
        opt.step()
        moved.append(theta.detach().clone())
    assert opt.defaults["lr"] == 0.3
    assert torch.equal(moved[0], moved[1])  # the default is the net's own output scale
    torch.testing.assert_close(moved[2], 3 * moved[1])


def test_maximize_flips_the_gradient() -> None:
    net, grad = _net(), torch.randn(6)
    up, down = nn.Parameter(torch.zeros(6)), nn.Parameter(torch.zeros(6))
    opt_up = l2o.LearnedOptimizer([up], net, maximize=True)
    opt_down = l2o.LearnedOptimizer([down], net)
    up.grad, down.grad = grad.clone(), -grad
    opt_up.step()
    opt_down.step()
    assert torch.equal(up, down)


def test_state_is_lazy_and_float32_for_low_precision_params() -> None:
    w = nn.Parameter(torch.randn(3, 2, dtype=torch.bfloat16))
    opt = l2o.LearnedOptimizer([w], _net())
    assert len(opt.state) == 0
    w.grad = torch.randn(3, 2, dtype=torch.bfloat16)
    opt.step()
    state = opt.state[w]
    assert sorted(state) == ["c0", "c1", "h0", "h1", "step"]
    for key in ("h0", "c0", "h1", "c1"):
        assert state[key].dtype == torch.float32 and state[key].shape == (6, 20)
    assert state["step"] == 1


def test_bfloat16_state_survives_load_state_dict_at_full_precision() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3).to(torch.bfloat16)
    opt = l2o.LearnedOptimizer(model.parameters(), _net(), lr=0.5)
    x = torch.randn(16, 4, dtype=torch.bfloat16)

    def train(m: nn.Module, o: torch.optim.Optimizer, steps: int) -> None:
        for _ in range(steps):
            o.zero_grad()
            m(x).float().pow(2).mean().backward()
            o.step()

    train(model, opt, 3)
    saved = copy.deepcopy(opt.state_dict())
    twin = copy.deepcopy(model)
    twin_opt = l2o.LearnedOptimizer(twin.parameters(), _net())
    twin_opt.load_state_dict(saved)
    for p, q in zip(model.parameters(), twin.parameters()):
        for key in twin_opt.state_keys():
            assert twin_opt.state[q][key].dtype == torch.float32
            assert torch.equal(twin_opt.state[q][key], opt.state[p][key])
    train(model, opt, 3)
    train(twin, twin_opt, 3)
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


def test_state_dict_of_another_network_is_rejected() -> None:
    p = nn.Parameter(torch.zeros(4))
    opt = l2o.LearnedOptimizer([p], l2o.LSTMOptimizer(hidden_size=8, seed=0))
    p.grad = torch.ones(4)
    opt.step()
    q = nn.Parameter(torch.zeros(4))
    other = l2o.LearnedOptimizer([q], _net())
    with pytest.raises(l2o.L2OError, match="shape"):
        other.load_state_dict(copy.deepcopy(opt.state_dict()))


def test_sparse_gradients_are_rejected() -> None:
    embedding = nn.Embedding(10, 3, sparse=True)
    opt = l2o.LearnedOptimizer(embedding.parameters(), _net())
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(l2o.L2OError, match=r"sparse gradient.*sparse=False"):
        opt.step()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_gradients_raise_and_change_nothing(bad: float) -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    opt = l2o.LearnedOptimizer(
        [{"params": model[0].parameters()}, {"params": model[1].parameters()}], _net()
    )
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    before = [p.detach().clone() for p in model.parameters()]
    state_before = copy.deepcopy(opt.state_dict())
    model(torch.ones(1, 3)).sum().backward()
    model[1].bias.grad[0] = bad
    with pytest.raises(l2o.L2OError, match=r"parameter 1 of group 1 \(shape \(1,\)\).*NaN or inf"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # group 0 too
    after = opt.state_dict()["state"]
    assert after[0]["step"] == state_before["state"][0]["step"] == 1
    assert all(torch.equal(after[0][k], state_before["state"][0][k]) for k in ("h0", "c1"))
    assert isinstance(l2o.L2OError("x"), ValueError)


def test_check_finite_can_be_turned_off() -> None:
    p = nn.Parameter(torch.zeros(3))
    opt = l2o.LearnedOptimizer([p], _net(), check_finite=False)
    p.grad = torch.tensor([float("nan"), 1.0, 1.0])
    opt.step()
    assert torch.isnan(p[0]) and torch.isfinite(p[1:]).all()


@pytest.mark.parametrize("lr", [-0.1, float("nan"), "0.1", True])
def test_invalid_lr_is_rejected(lr: object) -> None:
    with pytest.raises(l2o.L2OError, match="lr"):
        l2o.LearnedOptimizer([nn.Parameter(torch.zeros(1))], _net(), lr=lr)  # type: ignore[arg-type]
    opt = l2o.LearnedOptimizer([nn.Parameter(torch.zeros(1))], _net())
    with pytest.raises(l2o.L2OError, match="lr"):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(1))], "lr": lr})


def test_not_a_learned_network_is_rejected() -> None:
    with pytest.raises(l2o.L2OError, match="learned optimizer network"):
        l2o.LearnedOptimizer([nn.Parameter(torch.zeros(1))], nn.Linear(2, 2))


class _TwoGradientNet(l2o.LSTMOptimizer):
    """Stands in for a concurrent optimizer: inputs of two gradients per coordinate."""

    kind = "test-two-gradient"

    def input_size(self) -> int:
        return 4

    def features(self, grad: Tensor) -> Tensor:
        return torch.cat([super().features(grad[:, 0]), super().features(grad[:, 1])], 1)


def test_multi_gradient_network_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spec_module, "_KINDS", dict(spec_module._KINDS))  # registered here only
    keys = ("hidden_size", "layers", "output_scale", "preprocess", "preprocess_p", "k")
    spec_module.register_net("test-two-gradient", _TwoGradientNet.from_spec, keys=keys)
    with pytest.raises(l2o.L2OError, match="single-gradient"):
        l2o.LearnedOptimizer([nn.Parameter(torch.zeros(1))], _TwoGradientNet(seed=0, k=2))


def test_network_weights_stay_out_of_param_groups_and_travel_with_copies() -> None:
    net = _net()
    p = nn.Parameter(torch.zeros(2))
    opt = l2o.LearnedOptimizer([p], net)
    grouped = {id(q) for g in opt.param_groups for q in g["params"]}
    assert grouped == {id(p)}
    assert not any(id(w) in grouped for w in net.parameters())
    assert "net" not in opt.state_dict() and "net" not in opt.param_groups[0]
    clone = copy.deepcopy(opt)
    assert torch.equal(clone.net.out_weight, net.out_weight)
    assert "lstm" in repr(opt)


def test_trains_a_model_with_a_briefly_trained_net() -> None:
    torch.manual_seed(0)
    cfg = l2o.TrainConfig(task="quadratic", iterations=30, batch_size=16, horizon=20, truncation=10)
    net, _ = l2o.meta_train(cfg)
    W, y = torch.randn(10, 10), torch.randn(10)
    theta = nn.Parameter(torch.zeros(10))
    opt = l2o.LearnedOptimizer([theta], net)
    start = (W @ theta - y).pow(2).sum().item()

    def closure() -> Tensor:
        opt.zero_grad()
        loss = (W @ theta - y).pow(2).sum()
        loss.backward()
        return loss

    for _ in range(20):
        opt.step(closure)
    assert closure().item() < 0.5 * start


ROOT = Path(__file__).resolve().parent.parent


def test_the_documented_pretrained_optimizers_ship() -> None:
    assert {"quadratic", "digits-mlp"} <= set(l2o.pretrained.names())
    with pytest.raises(l2o.L2OError, match="unknown pretrained optimizer 'nope'; known: "):
        l2o.pretrained("nope")


@pytest.mark.parametrize("name", l2o.pretrained.names())
def test_pretrained_card_says_where_it_came_from(name: str) -> None:
    from l2o.cli.listing import sections

    net = l2o.pretrained(name)
    card = l2o.pretrained.card(name)
    assert card["task"] in l2o.tasks.list_tasks() and card["horizon"] >= 1
    assert card["command"].startswith(f"l2o train {card['task']} --config configs/")
    config_file = card["command"].split("--config ")[1].split()[0]
    assert (ROOT / config_file).is_file()
    assert card["training"]["iterations"] >= 1 and card["training"]["best_val_loss"] > 0
    if "compare" in card:  # an l2o compare run, or a generalisation table scored against one
        assert card["compare"]["optimizers"] and card["compare"]["steps"] >= 1
    else:
        assert all(row["settings"] for row in card["generalization"])
    assert card["task"] in card["summary"] and f"T={card['horizon']}" in card["summary"]
    assert sections()["pretrained"][name] == card["summary"]  # what `l2o list` prints
    assert net.arch_config()["hidden_size"] == card["train_config"]["hidden_size"]
    theta = nn.Parameter(torch.ones(3))
    theta.grad = torch.ones(3)
    l2o.LearnedOptimizer([theta], net).step()
    assert torch.isfinite(theta).all() and not torch.equal(theta, torch.ones(3))


def test_default_network_is_the_shipped_general_optimizer_and_trains_a_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    opt = l2o.LearnedOptimizer(model.parameters())  # no network given: `general`
    assert opt.net.arch_config() == l2o.pretrained("general").arch_config()
    x = torch.randn(64, 8)
    y = x[:, :1] * 2.0 - x[:, 1:2]
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss = (model(x) - y).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
