"""One conformance suite over every optimizer l2o ships, after torch.optim's own.

The learned optimizer (a fresh network, one loaded from disk, each pretrained one) and every
baseline in :data:`l2o.baselines.BASELINES` must honour the same ``torch.optim.Optimizer``
contract: closure, zero_grad, state_dict round trip, parameter groups, parameters without
gradients, an lr scheduler, dtype and device preserved, in-place updates under ``no_grad``.
"""

from __future__ import annotations

import copy
import inspect
import io
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import l2o
from l2o.baselines import BASELINES

Factory = Callable[..., torch.optim.Optimizer]


def _fresh_net() -> nn.Module:
    return l2o.LSTMOptimizer(seed=0)


@pytest.fixture(scope="session")
def loaded_net(tmp_path_factory: pytest.TempPathFactory) -> nn.Module:
    trained = l2o.LSTMOptimizer(seed=1, output_scale=0.05)
    with torch.no_grad():
        trained.out_bias.fill_(-0.01)  # weights a fresh network would not have
    path = l2o.save_optimizer(trained, tmp_path_factory.mktemp("net") / "opt.safetensors")
    return l2o.load(path)


# one fresh network of every single-gradient kind l2o ships
KINDS = {
    "mlp": {"optimizer": "mlp"},
    "mlp-nominal": {"optimizer": "mlp", "nominal": True, "update_norm": True},
    "mlp-relative": {"optimizer": "mlp", "param_scale": True},
    "mlp-gradient-units": {"optimizer": "mlp", "grad_scale": True},
    "mlp-progress": {"optimizer": "mlp", "progress_feature": True},
    "mlp-agreement": {"optimizer": "mlp", "agreement_feature": True},
    "mlp-adapt-step": {"optimizer": "mlp", "adapt_step": True},
    "rnnprop-adapt-step": {"optimizer": "rnnprop", "adapt_step": True},
    "rnnprop-hypergradient": {
        "optimizer": "rnnprop",
        "adapt_step": True,
        "hypergradient_step": True,
    },
    "rnnprop-hypergradient-both": {
        "optimizer": "rnnprop",
        "adapt_step": True,
        "hypergradient_step": True,
        "hypergradient_signal": "both",
    },
    "rnnprop": {"optimizer": "rnnprop"},
}
LEARNED = ["learned-fresh", "learned-loaded", *(f"learned-{k}" for k in KINDS)]
OPTIMIZERS = [
    *LEARNED,
    *(f"pretrained-{name}" for name in l2o.pretrained.names()),
    *BASELINES,
]


def _factory(name: str, request: pytest.FixtureRequest) -> Factory:
    """``make(params, **hyperparameters)`` for the optimizer ``name``."""
    if name == "learned-fresh":
        return lambda params, **kw: l2o.LearnedOptimizer(params, _fresh_net(), **kw)
    if name == "learned-loaded":
        net = request.getfixturevalue("loaded_net")
        return lambda params, **kw: l2o.LearnedOptimizer(params, net, **kw)
    if name.removeprefix("learned-") in KINDS:
        net = l2o.build_net(KINDS[name.removeprefix("learned-")], seed=0)
        return lambda params, **kw: l2o.LearnedOptimizer(params, net, **kw)
    if name.startswith("pretrained-"):
        net = l2o.pretrained(name.removeprefix("pretrained-"))
        return lambda params, **kw: l2o.LearnedOptimizer(params, net, **kw)
    baseline = BASELINES[name]
    return lambda params, **kw: baseline.make(params, kw)


@pytest.fixture(params=OPTIMIZERS)
def make(request: pytest.FixtureRequest) -> Factory:
    return _factory(request.param, request)


@pytest.fixture(params=[*LEARNED, *(f"pretrained-{n}" for n in l2o.pretrained.names())])
def make_learned(request: pytest.FixtureRequest) -> Factory:
    """The learned optimizers only: the promises beyond torch.optim's common contract."""
    return _factory(request.param, request)


def _model(dtype: torch.dtype = torch.float32, seed: int = 0, device: str = "cpu") -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).to(device, dtype)


def _data(step: int, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(8, 4, generator=g).to(dtype), torch.randn(8, 2, generator=g).to(dtype)


def _loss(model: nn.Module, step: int) -> Tensor:
    param = next(model.parameters())
    x, y = (t.to(param.device) for t in _data(step, param.dtype))
    return (model(x) - y).pow(2).mean()


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: range) -> list[float]:
    losses = []
    for step in steps:
        opt.zero_grad()
        loss = _loss(model, step)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _snapshot(model: nn.Module) -> list[Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_step_with_closure_returns_its_loss(make: Factory) -> None:
    model = _model()
    opt = make(model.parameters(), lr=0.01)
    before = _snapshot(model)
    calls = []

    def closure() -> Tensor:
        calls.append(1)
        opt.zero_grad()
        loss = _loss(model, 0)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert len(calls) == 1
    assert isinstance(loss, Tensor) and loss.item() == pytest.approx(_loss_at(before, 0))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert opt.step() is None  # no closure: returns None, still steps on the existing grads


def _loss_at(params: list[Tensor], step: int) -> float:
    model = _model()
    with torch.no_grad():
        for p, value in zip(model.parameters(), params):
            p.copy_(value)
        return float(_loss(model, step))


def test_zero_grad(make: Factory) -> None:
    model = _model()
    opt = make(model.parameters(), lr=0.01)
    _loss(model, 0).backward()
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    _loss(model, 0).backward()
    opt.zero_grad()  # torch's default: set_to_none=True
    assert all(p.grad is None for p in model.parameters())


def test_state_dict_round_trip_continues_identically(make: Factory) -> None:
    model = _model()
    opt = make(model.parameters(), lr=0.01)
    _train(model, opt, range(3))
    saved = copy.deepcopy(opt.state_dict())
    # Through bytes too, with torch.load's safe default: the state is plain tensors and numbers.
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    reloaded = torch.load(buffer, weights_only=True)

    twin = _model(seed=99)
    with torch.no_grad():
        for p, q in zip(twin.parameters(), model.parameters()):
            p.copy_(q)
    twin_opt = make(twin.parameters(), lr=0.5)  # lr comes back from the state_dict
    twin_opt.load_state_dict(reloaded)
    assert twin_opt.param_groups[0]["lr"] == 0.01

    expected = _train(model, opt, range(3, 6))
    got = _train(twin, twin_opt, range(3, 6))
    assert got == expected
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


def test_param_groups_have_their_own_lr(make: Factory) -> None:
    model = _model()
    first, second = model[0], model[2]
    opt = make(
        [{"params": first.parameters()}, {"params": second.parameters(), "lr": 0.0}], lr=0.01
    )
    frozen = _snapshot(second)
    moving = _snapshot(first)
    _train(model, opt, range(3))
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.0]
    assert all(torch.equal(a, b) for a, b in zip(frozen, second.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(moving, first.parameters()))


def test_groups_behave_like_separate_optimizers(make: Factory) -> None:
    together, apart = _model(), _model()
    opt = make(
        [{"params": together[0].parameters()}, {"params": together[2].parameters(), "lr": 0.03}],
        lr=0.01,
    )
    first = make(apart[0].parameters(), lr=0.01)
    second = make(apart[2].parameters(), lr=0.03)
    for step in range(4):
        for m in (together, apart):
            m.zero_grad()
            _loss(m, step).backward()
        opt.step()
        first.step()
        second.step()
    for p, q in zip(together.parameters(), apart.parameters()):
        torch.testing.assert_close(p, q)


def _adagrad_state_is_lazy() -> bool:
    """Older torch (2.11 at least) creates Adagrad's state in __init__ only (newer: lazily)."""
    return "len(state) == 0" in inspect.getsource(torch.optim.Adagrad._init_group)


def test_add_param_group(make: Factory) -> None:
    model = _model()
    opt = make(model[0].parameters(), lr=0.01)
    if isinstance(opt, torch.optim.Adagrad) and not _adagrad_state_is_lazy():
        pytest.xfail(f"torch {torch.__version__}: Adagrad.add_param_group leaves no state")
    opt.add_param_group({"params": model[2].parameters(), "lr": 0.02})
    before = _snapshot(model)
    _train(model, opt, range(2))
    assert opt.param_groups[1]["lr"] == 0.02
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_parameters_without_grad_are_skipped(make: Factory) -> None:
    model = _model()
    unused = nn.Parameter(torch.ones(3))
    opt = make([*model.parameters(), unused], lr=0.01)
    initial = copy.deepcopy(dict(opt.state[unused]))  # Adagrad creates its state eagerly
    _train(model, opt, range(2))
    assert unused.grad is None
    assert torch.equal(unused, torch.ones(3))
    assert set(opt.state[unused]) == set(initial)
    assert all(torch.equal(opt.state[unused][k], v) for k, v in initial.items())


def test_scheduler_steps_lr(make: Factory) -> None:
    model = _model()
    opt = make(model.parameters(), lr=0.02)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    lrs = []
    for step in range(3):
        _train(model, opt, range(step, step + 1))
        scheduler.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.01, 0.005, 0.0025])
    # A schedule down to zero stops every optimizer: lr scales the whole update.
    zero = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.0)
    assert opt.param_groups[0]["lr"] == 0.0
    before = _snapshot(model)
    _train(model, opt, range(3, 5))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    zero.step()


DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_dtype_and_device_preserved(make: Factory, dtype: torch.dtype, device: str) -> None:
    model = _model(dtype, device=device)
    params = list(model.parameters())
    pointers = [p.data_ptr() for p in params]
    opt = make(params, lr=0.1)  # updates of 0.01 * O(0.1) would vanish in bfloat16 rounding
    before = _snapshot(model)
    losses = _train(model, opt, range(3))
    assert all(torch.isfinite(torch.tensor(losses)))
    for p, ptr, old in zip(model.parameters(), pointers, before):
        assert p.dtype == dtype and p.device.type == device
        assert p.data_ptr() == ptr  # updated in place
        assert not torch.equal(p, old)
        for value in opt.state[p].values():
            if isinstance(value, Tensor) and value.dim() > 0:  # torch keeps scalar steps on cpu
                assert value.device.type == device


def test_step_under_no_grad_is_in_place(make: Factory) -> None:
    model = _model()
    opt = make(model.parameters(), lr=0.01)
    _loss(model, 0).backward()
    params = list(model.parameters())
    with torch.no_grad():
        opt.step()
    assert all(p.is_leaf and p.requires_grad and p.grad_fn is None for p in params)
    assert list(model.parameters()) == params
    assert isinstance(opt, torch.optim.Optimizer)


def test_deterministic(make: Factory) -> None:
    runs: list[list[Any]] = []
    for _ in range(2):
        model = _model()
        opt = make(model.parameters(), lr=0.01)
        runs.append(_train(model, opt, range(4)) + [p.detach().clone() for p in model.parameters()])
    assert runs[0][:4] == runs[1][:4]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][4:], runs[1][4:]))


def test_step_is_noop_for_zero_grads(make: Factory) -> None:
    """torch's own check: a fresh optimizer given all-zero gradients moves nothing."""
    model = _model()
    opt = make(model.parameters(), lr=0.01)
    if isinstance(opt, torch.optim.AdamW):
        pytest.skip("AdamW's decoupled weight decay moves parameters whatever the gradient")
    before = _snapshot(model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    for _ in range(20):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_zero_gradient_coordinates_never_move_mid_training(make_learned: Factory) -> None:
    """Padding rows / masked weights: exactly-zero gradients leave those coordinates alone,
    even after the optimizer has built up state from earlier gradients."""
    model = _model()
    opt = make_learned(model.parameters(), lr=0.01)
    _train(model, opt, range(3))
    weight = model[0].weight
    frozen = weight[:2].detach().clone()
    for step in range(3, 23):
        opt.zero_grad()
        _loss(model, step).backward()
        weight.grad[:2] = 0.0
        opt.step()
    assert torch.equal(weight[:2], frozen)


def test_complex_parameters_follow_their_real_view(make_learned: Factory) -> None:
    torch.manual_seed(0)
    z = nn.Parameter(torch.randn(6, dtype=torch.complex64))
    r = nn.Parameter(torch.view_as_real(z.detach()).clone())
    target = torch.randn(6, dtype=torch.complex64)
    opt_z, opt_r = make_learned([z], lr=0.01), make_learned([r], lr=0.01)
    for _ in range(4):
        for opt, loss in (
            (opt_z, lambda: (z - target).abs().pow(2).sum()),
            (opt_r, lambda: (r - torch.view_as_real(target)).pow(2).sum()),
        ):
            opt.zero_grad()
            loss().backward()
            opt.step()
    torch.testing.assert_close(torch.view_as_real(z.detach()), r.detach())


def test_state_dict_missing_a_group_key_loads_with_defaults(make_learned: Factory) -> None:
    model = _model()
    opt = make_learned(model.parameters(), lr=0.01)
    _train(model, opt, range(2))
    saved = opt.state_dict()
    for group in saved["param_groups"]:
        del group["check_finite"], group["maximize"]
    twin = make_learned(model.parameters(), lr=0.01)
    twin.load_state_dict(saved)
    assert twin.param_groups[0]["maximize"] is False
    _train(model, twin, range(2, 4))


def test_memory_does_not_grow_with_changing_parameter_subsets(make_learned: Factory) -> None:
    params = [nn.Parameter(torch.randn(50)) for _ in range(8)]
    opt = make_learned(params, lr=0.01)
    for step in range(30):
        for i, p in enumerate(params):  # a different subset has gradients at each step
            p.grad = torch.randn(50) if (i + step) % 3 else None
        opt.step()
    cached = sum(t.numel() for whole, _ in opt._joined.values() for t in whole)
    assert cached <= sum(p.numel() for p in params) * sum(opt.net.state_widths())
