"""Every net kind through the same machinery: meta-training, saving, loading in a fresh process,
resuming, the features it reads, and the update rules it promises."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

import l2o
from l2o.config import TrainConfig
from l2o.errors import L2OError
from l2o.meta import build_from_config, meta_train
from l2o.meta.unroll import start_unroll, step_weights, task_observer, truncation_window
from l2o.nets import NetSpec, build_net, net_names, spec_from_dict
from l2o.nets.features import TensorNorm, adam_direction, compute_features
from l2o.tasks import get_task

KINDS = {
    "lstm": {},
    "mlp": {},
    "mlp-nominal-norm": {"optimizer": "mlp", "nominal": True, "update_norm": True},
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
    "rnnprop-boosted-cap-damped": {
        "optimizer": "rnnprop",
        "adapt_step": True,
        "hypergradient_step": True,
        "max_log_step_boost": 1.0,
        "damping_eps": 1e-8,
    },
    "rnnprop-faded-rise": {"optimizer": "rnnprop", "adapt_step": True, "step_rise_decades": 8.0},
    "rnnprop": {},
    "lstm-adam-features": {"optimizer": "lstm", "preprocess": "adam"},
}


def _arch(name: str) -> dict:
    return {"optimizer": name, **KINDS[name]}


TINY = dict(
    batch_size=4, horizon=12, truncation=4, iterations=4, val_every=2, val_instances=4,
    checkpoint_every=2,
)  # fmt: skip


def test_builtin_kinds_are_registered_on_import() -> None:
    assert {"lstm", "mlp", "rnnprop"} <= set(net_names())
    # concurrent kinds load in a fresh process without importing l2o.concurrent first
    code = "import l2o; print(l2o.build_net({'optimizer': 'concurrent-softmax', 'k': 3}).k)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3"


def test_spec_takes_kind_defaults_and_validates_in_one_place() -> None:
    assert (NetSpec().preprocess, NetSpec().hidden_size) == ("log_sign", 20)
    mlp = NetSpec(optimizer="mlp")
    assert (mlp.preprocess, mlp.hidden_size, mlp.output_scale) == ("adam", 16, 0.01)
    assert NetSpec().replace(optimizer="mlp") == mlp  # a new kind resets kind-defaulted keys
    assert TrainConfig(optimizer="rnnprop").net.preprocess == "rnnprop"
    for bad, match in [
        ({"optimizer": "mlp", "hidden_size": 0}, "hidden_size"),
        ({"optimizer": "mlp", "step_alpha": float("nan")}, "step_alpha"),
        ({"optimizer": "lstm", "nominal": True}, "nominal = true does nothing for .*mlp"),
        ({"optimizer": "lstm", "preprocess": "adam", "progress_feature": True}, "read by: mlp"),
        ({"optimizer": "mlp", "k": 3}, "k = 3 does nothing .*concurrent-softmax"),
        ({"optimizer": "mlp", "nominal": "yes"}, "nominal"),
        ({"optimizer": "lstm", "preprocess": "adamw"}, "preprocess"),
        ({"optimizer": "rnnprop", "max_log_step": 1.0}, "set adapt_step = true"),
        ({"optimizer": "rnnprop", "adapt_step": True, "max_log_step": -10}, "max_log_step"),
        ({"optimizer": "lstm", "max_log_step": 1.0}, "read by: rnnprop, mlp"),
        ({"optimizer": "mlp", "min_log_step": -12.0}, "set adapt_step = true"),
        ({"optimizer": "mlp", "adapt_step": True, "min_log_step": -31.0}, r"min_log_step .*\[-30"),
        ({"optimizer": "mlp", "adapt_step": True, "max_log_step": 1, "min_log_step": 1}, "min_"),
        ({"optimizer": "rnnprop", "hypergradient_step": True}, "set adapt_step = true"),
        ({"optimizer": "mlp", "adapt_step": True, "hypergradient_step": True}, "read by: rnnprop"),
        (
            {"optimizer": "rnnprop", "adapt_step": True, "hypergradient_signal": "momentum"},
            "set hypergradient_step = true",
        ),
        ({**HYPER, "hypergradient_signal": "ema"}, "one of gradient, momentum, both"),
        ({**HYPER, "hypergradient_signal": "both", "preprocess": "adam"}, "preprocess = 'rnnprop'"),
        ({"optimizer": "rnnprop", "max_log_step_boost": 1.0}, "set adapt_step = true"),
        ({**HYPER, "max_log_step_boost": -1.0}, r"max_log_step_boost must be in \[0, 10\]"),
        ({**HYPER, "max_log_step_boost": 1.0, "preprocess": "adam"}, "preprocess = 'rnnprop'"),
        ({"optimizer": "mlp", "adapt_step": True, "max_log_step_boost": 1.0}, "read by: rnnprop"),
        ({"optimizer": "rnnprop", "step_rise_decades": 4.0}, "set adapt_step = true"),
        ({**HYPER, "step_rise_decades": 4.0, "preprocess": "adam"}, "preprocess = 'rnnprop'"),
        ({"optimizer": "mlp", "adapt_step": True, "step_rise_decades": 4.0}, "read by: rnnprop"),
        ({**HYPER, "step_rise_decades": -1.0}, r"step_rise_decades must be in \[0, 38\]"),
        ({"optimizer": "rnnprop", "damping_eps": 1.0}, r"damping_eps must be in \[0, 1\)"),
        ({"optimizer": "rnnprop", "damping_eps": 1e-8, "preprocess": "adam"}, "g² that"),
        ({"optimizer": "lstm", "damping_eps": 1e-8}, "read by: rnnprop"),
    ]:
        with pytest.raises(L2OError, match=match):
            build_net(bad)


@pytest.mark.parametrize("name", KINDS)
def test_kind_meta_trains_saves_loads_in_a_fresh_process_and_resumes(name, tmp_path) -> None:
    cfg = TrainConfig(**TINY, **_arch(name))
    full, history = meta_train(cfg, out_dir=tmp_path / "full")
    assert all(torch.isfinite(torch.tensor(r["meta_loss"])) for r in history.rows)
    meta_train(cfg.replace(iterations=2), out_dir=tmp_path / "cut")
    resumed, _ = meta_train(cfg, out_dir=tmp_path / "cut", resume=True)
    for (key, p), q in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), key
    code = (
        "import json, sys, l2o, torch\n"
        f"net = l2o.load({str(tmp_path / 'full')!r})\n"
        "print(json.dumps({k: v.flatten()[:3].tolist() for k, v in net.state_dict().items()}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    fresh = json.loads(out.stdout)
    assert fresh == {k: v.flatten()[:3].tolist() for k, v in full.state_dict().items()}
    assert l2o.load(tmp_path / "full").arch_config() == full.arch_config()


@pytest.mark.parametrize("name", KINDS)
def test_every_weight_receives_a_meta_gradient(name) -> None:
    net = build_from_config(TrainConfig(**_arch(name), seed=1))
    batch = get_task("digits-mlp", {"hidden": [3]}).sample("train", range(2))
    start = start_unroll(net, batch.init_params(), task_observer(batch), batch.layout)
    objective, _, _ = truncation_window(
        net, start, task_observer(batch), 3, step_weights("uniform", 3), batch
    )
    objective.backward()
    for key, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, key


def test_short_mlp_meta_training_beats_its_initialisation() -> None:
    cfg = TrainConfig(
        optimizer="mlp", batch_size=16, horizon=20, truncation=10, iterations=40,
        val_every=40, val_instances=32, meta_lr=0.01, seed=0,
    )  # fmt: skip
    problem = l2o.meta.task_problem(get_task("quadratic"))
    before = problem.final_loss(build_from_config(cfg), "validation", list(range(32)), 20)
    net, _ = meta_train(cfg)
    after = problem.final_loss(net, "validation", list(range(32)), 20)
    assert after < 0.5 * before


def test_adam_features_are_normalised_per_tensor_and_scale_free() -> None:
    layout = ((2, 3), (3,))
    grads = torch.randn(2, 9)
    grads[:, 6:] *= 1000.0  # the bias tensor lives at another scale
    norm = TensorNorm(layout, 9, grads.device)
    acc = torch.zeros(2, 9, 5)
    x, _ = compute_features("adam", grads, acc, norm, 0)
    rms_w = x[:, :6, :6].pow(2).mean(1).sqrt()
    rms_b = x[:, 6:, :6].pow(2).mean(1).sqrt()
    torch.testing.assert_close(rms_w, torch.ones_like(rms_w))
    torch.testing.assert_close(rms_b, torch.ones_like(rms_b))
    y, _ = compute_features("adam", grads * 1e-4, acc, norm, 0)
    torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)  # scale free, every feature


def test_accumulators_carry_the_emas() -> None:
    g1, g2 = torch.randn(1, 4), torch.randn(1, 4)
    norm = TensorNorm(None, 4, g1.device)
    _, acc = compute_features("adam", g1, torch.zeros(1, 4, 5), norm, 0)
    _, acc = compute_features("adam", g2, acc, norm, 1)
    torch.testing.assert_close(acc[..., 1], 0.9 * 0.1 * g1 + 0.1 * g2)
    torch.testing.assert_close(acc[..., 4], 0.999 * 0.001 * g1**2 + 0.001 * g2**2)
    # Adam's bias-corrected direction from the same accumulators
    m_hat = (0.9 * 0.1 * g1 + 0.1 * g2) / (1 - 0.9**2)
    v_hat = (0.999 * 0.001 * g1**2 + 0.001 * g2**2) / (1 - 0.999**2)
    torch.testing.assert_close(adam_direction(acc, 1), m_hat / (v_hat.sqrt() + 1e-8))


def test_untrained_mlp_starts_as_an_adam_like_rule() -> None:
    """The skip path starts as −m_0.9/√v: the first step moves against the gradient."""
    net = build_net({"optimizer": "mlp"}, seed=0)
    grads = torch.randn(3, 50)
    update, _ = net.step(grads, net.init_state(150))
    assert (torch.sign(update) == -torch.sign(grads)).float().mean() > 0.95


def test_update_norm_sets_each_tensor_rms_to_lr() -> None:
    net = build_net({"optimizer": "mlp", "update_norm": True}, seed=0)
    layout = ((4, 5), (5,))
    update, _ = net.step(torch.randn(2, 25), net.init_state(50), layout, 0, lr=0.3)
    for part in update.split([20, 5], dim=1):
        torch.testing.assert_close(part.pow(2).mean(1).sqrt(), torch.full((2,), 0.3))


def test_rnnprop_steps_are_bounded_by_the_output_scale() -> None:
    net = build_net({"optimizer": "rnnprop", "output_scale": 0.05}, seed=0)
    update, _ = net.step(torch.randn(4, 30) * 1e3, net.init_state(120))
    assert update.abs().max() <= 0.05


@pytest.mark.parametrize("name", KINDS)
def test_zero_gradient_coordinates_do_not_move(name) -> None:
    net = build_net(_arch(name), seed=0)
    grads = torch.randn(2, 8)
    grads[:, :3] = 0.0
    kw = {"params": torch.randn(2, 8)} if net.needs_params else {}
    update, _ = net.step(grads, net.init_state(16), step=5, **kw)
    assert torch.equal(update[:, :3], torch.zeros(2, 3))
    # damping_eps alone stops a zero gradient (√v̂ = 0): without both, the coordinates move
    off = build_net({**_arch(name), "skip_zero_grad": False, "damping_eps": 0.0}, seed=0)
    moved, _ = off.step(grads, off.init_state(16), step=5, **kw)
    assert moved[:, :3].abs().sum() > 0


def test_param_scale_steps_are_relative_to_each_tensor() -> None:
    """Rescaling a tensor's parameters rescales its steps (floored at 1e-3 for tensors at 0)."""
    net = build_net({"optimizer": "mlp", "param_scale": True}, seed=0)
    layout = ((3, 4), (4,))
    grads, params = torch.randn(1, 16), torch.randn(1, 16)
    base, _ = net.step(grads, net.init_state(16), layout, 0, params=params)
    scaled = params.clone()
    scaled[:, :12] *= 100.0
    bigger, _ = net.step(grads, net.init_state(16), layout, 0, params=scaled)
    torch.testing.assert_close(bigger[:, :12], 100.0 * base[:, :12])
    torch.testing.assert_close(bigger[:, 12:], base[:, 12:])
    zero, _ = net.step(grads, net.init_state(16), layout, 0, params=torch.zeros(1, 16))
    assert zero.abs().max() > 0  # the floor keeps zero-initialised tensors moving


def test_grad_scale_steps_are_in_gradient_units() -> None:
    """Features are scale-free, so scaling one tensor's gradients by c scales its steps by c
    (steps shrink with the gradients, like SGD's), and leaves the other tensor's alone."""
    net = build_net({"optimizer": "mlp", "grad_scale": True}, seed=0)
    layout = ((3, 4), (4,))
    grads = torch.randn(2, 16)
    scaled = grads.clone()
    scaled[:, :12] *= 1e-3
    state, state_scaled = net.init_state(32), net.init_state(32)
    for step in range(3):  # through the accumulators too
        base, state = net.step(grads, state, layout, step)
        small, state_scaled = net.step(scaled, state_scaled, layout, step)
    torch.testing.assert_close(small[:, :12], 1e-3 * base[:, :12], rtol=1e-4, atol=1e-12)
    torch.testing.assert_close(small[:, 12:], base[:, 12:])
    plain = build_net({"optimizer": "mlp"}, seed=0)  # the scale-free step does not shrink
    first, _ = plain.step(grads, plain.init_state(32), layout, 0)
    tiny, _ = plain.step(scaled, plain.init_state(32), layout, 0)
    torch.testing.assert_close(tiny, first, rtol=1e-4, atol=1e-7)


def test_progress_feature_is_how_far_momentum_fell_and_is_scale_free() -> None:
    """The extra input is 0.1·log(RMS(m̂_0.9) / its peak) per tensor, and a run whose gradients
    are all scaled by one constant (a rescaled loss) gets the same updates."""
    net = build_net({"optimizer": "mlp", "progress_feature": True}, seed=0)
    layout = ((3, 4), (4,))
    base = torch.randn(2, 16)
    decay = torch.ones(16)
    decay[:12] = 0.8  # the first tensor's gradients fall, the second's stay
    # With the feature as the log-magnitude (skip weight 10 = 1/0.1), steps are × ρ exactly.
    with torch.no_grad():
        net.skip_weight[-1, 1] = 10.0
        net.in_weight[-1].zero_()
    blind = build_net({"optimizer": "mlp", "progress_feature": True}, seed=0)
    blind.load_state_dict(net.state_dict())
    with torch.no_grad():
        blind.skip_weight[-1, 1] = 0.0

    def run(model: torch.nn.Module, scale: float) -> list[torch.Tensor]:
        state, updates = model.init_state(32), []
        for step in range(60):
            update, state = model.step(scale * base * decay**step, state, layout, step)
            updates.append(update)
        return updates

    updates, rescaled, plain = run(net, 1.0), run(net, 1e3), run(blind, 1.0)
    for a, b in zip(updates, rescaled):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-12)
    m, peak = torch.zeros(2, 16), torch.zeros(2, 1)  # m̂_0.9 and ρ by hand, first tensor
    for step in range(60):
        m = 0.9 * m + 0.1 * base * decay**step
        rms = (m[:, :12] / (1 - 0.9 ** (step + 1))).square().mean(1, keepdim=True).sqrt()
        peak = torch.maximum(peak, rms)
        torch.testing.assert_close(updates[step][:, :12], plain[step][:, :12] * rms / peak)
    assert (rms / peak < 1e-2).all()  # the steps did shrink, by as much as momentum fell
    torch.testing.assert_close(updates[-1][:, 12:], plain[-1][:, 12:])  # steady: ρ = 1


def test_agreement_feature_is_the_cosine_of_the_last_step_with_the_new_descent_direction() -> None:
    """The two extra inputs are cos(−g_t, u_{t−1}) per tensor and its EMA (β = 0.9): positive
    while the gradient keeps its direction, negative when every step overshoots (the gradient
    flips), and unchanged when the loss is rescaled."""
    net = build_net({"optimizer": "mlp", "agreement_feature": True}, seed=0)
    layout = ((3, 4), (4,))
    base = torch.randn(2, 16).abs() + 0.1
    flips = torch.zeros(16, dtype=torch.bool)
    flips[12:] = True  # the second tensor's gradient changes sign every step

    def run(scale: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
        state, seen = net.init_state(32), []
        for step in range(30):
            grads = scale * torch.where(flips, base * (-1) ** step, base)
            update, state = net.step(grads, state, layout, step)
            seen.append((update, state[-1].view(2, 16)))  # the step and the EMA it read
        return seen

    seen, rescaled = run(1.0), run(1e-4)
    average = seen[-1][1]
    assert (average[:, :12] > 0.5).all() and (average[:, 12:] < -0.5).all()
    for (_, a), (_, b) in zip(seen, rescaled):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # By hand, first tensor, step 1: EMA = 0.1 · cos(−g_1, u_0) (0 before any step).
    u0, g1 = seen[0][0][:, :12], base[:, :12]
    cosine = (-g1 * u0).mean(1) / (g1.square().mean(1).sqrt() * u0.square().mean(1).sqrt())
    torch.testing.assert_close(seen[1][1][:, :12], (0.1 * cosine).unsqueeze(1).expand(2, 12))


def test_adapt_step_integrates_a_per_tensor_log_step_the_meta_gradient_reaches() -> None:
    """With ``adapt_step`` the step is × exp(s), s per tensor moving by 0.1·tanh(mean of the
    net's third output) a step within ±10, and the meta-gradient reaches the weights that move s
    through later steps."""
    net = build_net({"optimizer": "mlp", "adapt_step": True}, seed=0)
    plain = build_net({"optimizer": "mlp", "adapt_step": True}, seed=0)
    with torch.no_grad():
        net.out_bias[2] = 100.0  # tanh saturates: s rises by exactly 0.1 a step
        net.out_weight[:, 2].zero_()
        plain.load_state_dict(net.state_dict())
        plain.out_bias[2] = 0.0
    layout = ((3, 4), (4,))
    grads = torch.randn(2, 16)
    state, reference = net.init_state(32), plain.init_state(32)
    for step in range(120):
        update, state = net.step(grads, state, layout, step)
        base, reference = plain.step(grads, reference, layout, step)
        expected = min(0.1 * (step + 1), 10.0)
        torch.testing.assert_close(state[-1], torch.full((32, 1), expected), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(update, base * math.exp(expected), rtol=1e-4, atol=1e-6)
    weight = net.out_weight
    state = net.init_state(32)
    total = torch.zeros(())
    for step in range(3):
        update, state = net.step(grads, state, layout, step)
        total = total + update.square().sum()
    total.backward()
    assert weight.grad is not None and weight.grad[:, 2].abs().sum() == 0  # saturated tanh
    with torch.no_grad():
        net.out_bias[2] = 0.0
    net.zero_grad()
    state, total = net.init_state(32), torch.zeros(())
    for step in range(3):
        update, state = net.step(grads, state, layout, step)
        total = total + update.square().sum()
    total.backward()
    assert net.out_bias.grad[2].abs() > 0  # s is learned through the steps it scales


@pytest.mark.parametrize("kind", ["mlp", "rnnprop"])
@pytest.mark.parametrize("push", [100.0, -100.0])
def test_log_step_bounds_hold_the_step_size_the_net_moves(kind, push) -> None:
    """A net that always asks for a longer step stops at e^max_log_step × its plain step, one
    that always asks for a shorter step at e^min_log_step ×."""
    bounds = {"max_log_step": 0.5, "min_log_step": -0.3}
    net = build_net({"optimizer": kind, "adapt_step": True, **bounds}, seed=0)
    with torch.no_grad():
        if kind == "mlp":
            net.out_bias[2] = push
        else:
            net.step_bias.fill_(push)
    grads = torch.randn(2, 16)
    state = net.init_state(32)
    for step in range(10):
        _, state = net.step(grads, state, ((3, 4), (4,)), step)
        expected = min(0.1 * (step + 1), 0.5) if push > 0 else max(-0.1 * (step + 1), -0.3)
        log_step = state[net.state_names().index("log_step")]
        torch.testing.assert_close(log_step, torch.full((32, 1), expected), rtol=1e-5, atol=1e-5)
    loaded = spec_from_dict(net.arch_config())
    assert (loaded.max_log_step, loaded.min_log_step) == (0.5, -0.3)  # saved with the weights


def test_a_boosted_cap_rises_with_the_gradient_and_falls_back_as_it_falls() -> None:
    """``max_log_step_boost = b``: the cap on s is max_log_step + b·(1 + log10 ρ / 4), the share
    clipped to [0, 1], ρ = RMS(m̂) ÷ its peak per tensor. A net that always asks for a longer
    step climbs to max + b while the gradient holds its size, is pulled down to max + b/2 once
    the gradient has fallen two decades, and to max itself past four."""
    net = build_net(
        {"optimizer": "rnnprop", "adapt_step": True, "max_log_step": 0.5, "max_log_step_boost": 1.0}
    )
    assert net.state_names()[-2:] == ("log_step", "momentum_peak")
    with torch.no_grad():
        net.step_bias.fill_(100.0)
    layout, grads = ((3, 4), (4,)), torch.randn(2, 16)
    state, index = net.init_state(32), net.state_names().index("log_step")
    for step in range(20):  # a constant gradient: m̂ = g, ρ = 1
        _, state = net.step(grads, state, layout, step)
    torch.testing.assert_close(state[index], torch.full((32, 1), 1.5), rtol=1e-5, atol=1e-5)
    for step in range(20, 400):  # m̂ → g/100: ρ → 0.01, half the boost
        _, state = net.step(grads / 100, state, layout, step)
    torch.testing.assert_close(state[index], torch.full((32, 1), 1.0), rtol=0, atol=1e-4)
    for step in range(400, 800):  # ρ → 1e-5: no boost left
        _, state = net.step(grads / 1e5, state, layout, step)
    torch.testing.assert_close(state[index], torch.full((32, 1), 0.5), rtol=0, atol=1e-5)
    # without the boost the same net stops at max_log_step from the start
    plain = build_net({"optimizer": "rnnprop", "adapt_step": True, "max_log_step": 0.5})
    plain.load_state_dict(net.state_dict())
    state = plain.init_state(32)
    for step in range(20):
        _, state = plain.step(grads, state, layout, step)
    torch.testing.assert_close(state[index], torch.full((32, 1), 0.5), rtol=1e-5, atol=1e-5)


def test_a_faded_rise_stops_s_climbing_once_the_gradient_has_fallen_d_decades() -> None:
    """``step_rise_decades = 4``: each rise of s × (1 + log10 ρ / 4), clipped to [0, 1]. A net that
    always asks for a longer step climbs at the full 0.1·tanh rate while the gradient holds its
    size, at half the rate two decades down, not at all past four; falls are never slowed."""
    spec = {"optimizer": "rnnprop", "adapt_step": True, "min_log_step": -16.0}
    net = build_net({**spec, "step_rise_decades": 4.0})
    assert net.state_names()[-2:] == ("log_step", "momentum_peak")
    plain = build_net(spec)
    plain.load_state_dict(net.state_dict())
    with torch.no_grad():
        for each in (net, plain):
            each.step_weight.zero_()
            each.step_bias.fill_(100.0)  # every step asks for +0.1 on s (tanh(100) = 1)
    layout, grads = ((3, 4), (4,)), torch.randn(2, 16)
    index = net.state_names().index("log_step")

    def rises(scale: float, steps: range, states: list) -> list[float]:
        """The rise of s over ``steps`` with the gradient × ``scale``, for ``net`` and ``plain``."""
        out = []
        for i, each in enumerate((net, plain)):
            before = torch.zeros(32, 1)  # from s = 0, so the cap of 10 is never reached
            states[i] = (*states[i][:index], before, *states[i][index + 1 :])
            for step in steps:
                _, states[i] = each.step(grads * scale, states[i], layout, step)
            out.append(float((states[i][index] - before).detach().mean()))
        return out

    states = [net.init_state(32), plain.init_state(32)]
    faded, full = rises(1.0, range(10), states)  # ρ = 1: the whole rise
    assert faded == pytest.approx(full, rel=1e-5) and full == pytest.approx(1.0, rel=1e-5)
    rises(1e-2, range(10, 400), states)  # m̂ settles at g/100: ρ = 0.01
    faded, full = rises(1e-2, range(400, 410), states)
    assert faded == pytest.approx(0.5, rel=1e-3) and full == pytest.approx(1.0, rel=1e-5)
    rises(1e-5, range(410, 800), states)  # five decades down: s no longer rises
    faded, full = rises(1e-5, range(800, 810), states)
    assert faded == 0.0 and full == pytest.approx(1.0, rel=1e-5)
    with torch.no_grad():  # a fall is not slowed
        net.step_bias.fill_(-100.0)
    _, after = net.step(grads * 1e-5, states[0], layout, 810)
    torch.testing.assert_close(after[index] - states[0][index], torch.full((32, 1), -0.1))


def test_damping_eps_shrinks_the_steps_of_tiny_gradients_as_adams_eps_does() -> None:
    """``damping_eps = ε``: each update × √v̂ / (√v̂ + ε). The inputs m̂/√v̂ and g/√v̂ do not see
    a gradient's size, so without it a gradient of 1e-12 steps as far as one of 1."""
    plain = build_net({"optimizer": "rnnprop"}, seed=0)
    damped = build_net({"optimizer": "rnnprop", "damping_eps": 1e-8}, seed=0)
    damped.load_state_dict(plain.state_dict())
    for scale, factor in [(1.0, 1.0), (1e-8, 0.5), (1e-12, 1e-4)]:
        grads = torch.full((2, 16), scale)
        state_p, state_d = plain.init_state(32), damped.init_state(32)
        for step in range(3):
            u_plain, state_p = plain.step(grads, state_p, None, step)
            u_damped, state_d = damped.step(grads, state_d, None, step)
        assert u_plain.abs().min() > 1e-4  # full-size steps for any gradient
        torch.testing.assert_close(u_damped, u_plain * factor, rtol=2e-4, atol=0)


def test_hypergradient_step_lowers_s_after_an_overshoot_and_raises_it_after_an_undershoot():
    """With ``hypergradient_step`` the change of s also reads w·cos(−g_t, u_{t−1}) per tensor
    (w starts at 2): a gradient that reverses the last update lowers s by 0.1·tanh(2), one that
    continues it raises s as much, and the meta-gradient reaches w."""
    net = build_net({"optimizer": "rnnprop", "adapt_step": True, "hypergradient_step": True})
    assert net.state_names()[-2:] == ("log_step", "last_update")
    with torch.no_grad():  # the LSTM's own head silent: s moves by the cosine alone
        net.step_weight.zero_()
        net.step_bias.zero_()
    layout = ((3, 4), (4,))
    state = net.init_state(32)
    u0, state = net.step(torch.randn(2, 16), state, layout, 0)
    torch.testing.assert_close(state[-2], torch.zeros(32, 1))  # no last step: cos = 0
    torch.testing.assert_close(state[-1], u0.reshape(32, 1))
    move = 0.1 * math.tanh(2.0)
    # The next gradients point along the last update (it overshot, cos = −1), then against it.
    _, state = net.step(u0.clone(), state, layout, 1)
    torch.testing.assert_close(state[-2], torch.full((32, 1), -move), rtol=1e-5, atol=1e-6)
    _, state = net.step(-state[-1].view(2, 16), state, layout, 2)
    torch.testing.assert_close(state[-2], torch.zeros(32, 1), rtol=1e-5, atol=1e-6)
    state = net.init_state(32)
    total = torch.zeros(())
    for step in range(3):
        update, state = net.step(torch.randn(2, 16), state, layout, step)
        total = total + update.square().sum()
    total.backward()
    assert net.hypergradient_weight.grad.abs() > 0


HYPER = {"optimizer": "rnnprop", "adapt_step": True, "hypergradient_step": True}


@pytest.mark.parametrize("signal", ["momentum", "both"])
def test_hypergradient_signal_momentum_reads_the_cosine_of_the_gradients_ema(signal) -> None:
    """``hypergradient_signal = "momentum"`` moves s by w·cos(−m_t, u_{t−1}) per tensor, m_t the
    EMA of g (β = 0.95) the features keep; ``"both"`` adds w_g·cos(−g_t, u_{t−1}) (each w starts
    at 1), and the meta-gradient reaches every weight."""
    net = build_net({**HYPER, "hypergradient_signal": signal})
    with torch.no_grad():
        net.step_weight.zero_()
        net.step_bias.zero_()
    layout = ((3, 4), (4,))
    g0, g1 = torch.randn(2, 16), torch.randn(2, 16)
    state = net.init_state(32)
    u0, state = net.step(g0, state, layout, 0)
    _, state = net.step(g1, state, layout, 1)
    m1 = 0.95 * 0.05 * g0 + 0.05 * g1

    def cosines(read: torch.Tensor) -> torch.Tensor:  # per instance and tensor, per coordinate
        out = torch.empty(2, 16)
        for part in (slice(0, 12), slice(12, 16)):
            cosine = torch.nn.functional.cosine_similarity(read[:, part], u0[:, part])
            out[:, part] = -cosine[:, None]
        return out

    weight = 2.0 if signal == "momentum" else 1.0
    change = weight * cosines(m1) + (weight * cosines(g1) if signal == "both" else 0)
    expected = 0.1 * torch.tanh(change)  # s started at 0
    torch.testing.assert_close(state[-2], expected.reshape(32, 1), rtol=1e-4, atol=1e-6)
    named = net.weights()
    assert ("step.hypergradient_weight" in named) == (signal == "both")
    state, total = net.init_state(32), torch.zeros(())
    for step in range(3):
        update, state = net.step(torch.randn(2, 16), state, layout, step)
        total = total + update.square().sum()
    total.backward()
    assert named["step.hypergradient_momentum_weight"].grad.abs() > 0
    if signal == "both":
        assert named["step.hypergradient_weight"].grad.abs() > 0


def test_a_concurrent_kind_on_a_plain_task_is_one_clear_error() -> None:
    with pytest.raises(L2OError, match="l2o concurrent"):
        meta_train(TrainConfig(**TINY, optimizer="concurrent-softmax"))
