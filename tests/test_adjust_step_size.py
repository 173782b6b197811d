"""scripts/adjust_step_size.py: the trained weights kept, the rule added, the bounds on s moved."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import l2o
from l2o.config import TrainConfig
from l2o.errors import L2OError
from l2o.meta import meta_train

ROOT = Path(__file__).resolve().parent.parent
SPEC = importlib.util.spec_from_file_location("adjust", ROOT / "scripts/adjust_step_size.py")
script = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(script)

TINY = dict(batch_size=4, horizon=12, truncation=4, iterations=2, val_every=2, val_instances=2)


def _log_steps(net, grads):
    """Updates and log step sizes of ``net`` fed ``grads`` one step after another."""
    state, seen = net.init_state(grads[0].numel()), []
    for step, grad in enumerate(grads):
        update, state = net.step(grad, state, None, step)
        seen.append((update, state[net.state_names().index("log_step")]))
    return seen


def _overshooting(net, steps=4):
    """Gradients that point along the network's last update: every step overshot (cos = −1)."""
    grads, state = [torch.randn(3, 10)], net.init_state(30)
    for step in range(steps - 1):
        update, state = net.step(grads[-1], state, None, step)
        grads.append(update.detach() * 10)
    return grads


def test_the_rule_is_added_to_the_trained_weights(tmp_path) -> None:
    run = tmp_path / "run"
    meta_train(
        TrainConfig(optimizer="rnnprop", adapt_step=True, max_log_step=1.0, **TINY), out_dir=run
    )
    script.adjust(run, tmp_path / "off", hypergradient_weight=0.0)
    script.adjust(run, tmp_path / "on", hypergradient_weight=2, max_log_step=1.5, min_log_step=-16)
    script.adjust(run, tmp_path / "on0", hypergradient_weight=0.0, max_log_step=1.5)
    trained, off, on = l2o.load(run), l2o.load(tmp_path / "off"), l2o.load(tmp_path / "on")
    assert (on.spec.hypergradient_step, on.spec.max_log_step, on.spec.min_log_step) == (
        True,
        1.5,
        -16.0,
    )
    assert (off.spec.max_log_step, off.spec.min_log_step) == (1.0, -10.0)
    assert on.hypergradient_weight.item() == 2.0
    with torch.no_grad():  # weight 0: every update is the trained network's
        grads = [torch.randn(3, 10) * (-1) ** step for step in range(4)]
        for (a, s_a), (b, s_b) in zip(_log_steps(trained, grads), _log_steps(off, grads)):
            torch.testing.assert_close(a, b)
            torch.testing.assert_close(s_a, s_b)
        # weight 2, each gradient along the last update: s falls by the rule against weight 0
        grads = _overshooting(on)
        ruled, plain = _log_steps(on, grads), _log_steps(l2o.load(tmp_path / "on0"), grads)
        torch.testing.assert_close(ruled[0][1], plain[0][1])  # no last update yet
        for (_, s_ruled), (_, s_plain) in zip(ruled[1:], plain[1:]):
            assert (s_ruled < s_plain - 0.01).all()
    info = json.loads((tmp_path / "on" / "config.json").read_text())
    assert info["post_training"]["max_log_step"] == {"from": 1.0, "to": 1.5}
    assert info["post_training"]["min_log_step"] == {"from": -10.0, "to": -16.0}
    assert (tmp_path / "on" / "metrics.csv").is_file()
    with pytest.raises(L2OError, match="already has hypergradient_step"):
        script.adjust(tmp_path / "on", tmp_path / "again", hypergradient_weight=2.0)
    with pytest.raises(L2OError, match="nothing to change"):
        script.adjust(run, tmp_path / "same")


def test_a_network_trained_with_the_rule_keeps_it_and_only_its_floor_moves(tmp_path) -> None:
    """general's post-training step: the learned weight stays, s may now fall below −10."""
    run = tmp_path / "run"
    cfg = TrainConfig(optimizer="rnnprop", adapt_step=True, hypergradient_step=True, **TINY)
    meta_train(cfg, out_dir=run)
    script.adjust(run, tmp_path / "low", min_log_step=-16.0)
    trained, low = l2o.load(run), l2o.load(tmp_path / "low")
    assert low.spec.min_log_step == -16.0 and low.spec.hypergradient_step
    torch.testing.assert_close(low.state_dict(), trained.state_dict())
    with torch.no_grad():  # the rule alone, every step an overshoot: s falls 0.1·tanh(w) a step
        for net in (trained, low):
            net.step_weight.zero_()
            net.step_bias.zero_()
        grads = _overshooting(low, steps=200)
        s_trained = _log_steps(trained, grads)[-1][1]
        s_low = _log_steps(low, grads)[-1][1]
    assert (s_trained >= -10.0).all() and (s_trained < -9.9).all()
    assert (s_low < -10.5).all() and (s_low >= -16.0).all()
    # a second change on the changed folder keeps the first one's record
    script.adjust(tmp_path / "low", tmp_path / "capped", max_log_step=1.5)
    record = json.loads((tmp_path / "capped" / "config.json").read_text())["post_training"]
    assert record["max_log_step"] == {"from": 10.0, "to": 1.5}
    assert record["previous"]["min_log_step"] == {"from": -10.0, "to": -16.0}
    capped = l2o.load(tmp_path / "capped").spec
    assert (capped.max_log_step, capped.min_log_step) == (1.5, -16.0)
    # a cap that rises with ρ: recorded from its default 0, the trained weights kept
    script.adjust(tmp_path / "low", tmp_path / "boosted", max_log_step_boost=1.0)
    boosted = l2o.load(tmp_path / "boosted")
    assert (boosted.spec.max_log_step_boost, boosted.spec.min_log_step) == (1.0, -16.0)
    torch.testing.assert_close(boosted.state_dict(), l2o.load(tmp_path / "low").state_dict())
    record = json.loads((tmp_path / "boosted" / "config.json").read_text())["post_training"]
    assert record["max_log_step_boost"] == {"from": 0.0, "to": 1.0}
    # s's rise faded by the gradient's fall, recorded the same way
    script.adjust(tmp_path / "low", tmp_path / "faded", step_rise_decades=8.0)
    faded = l2o.load(tmp_path / "faded")
    assert faded.spec.step_rise_decades == 8.0 and faded.state_names()[-1] == "momentum_peak"
    torch.testing.assert_close(faded.state_dict(), l2o.load(tmp_path / "low").state_dict())
    record = json.loads((tmp_path / "faded" / "config.json").read_text())["post_training"]
    assert record["step_rise_decades"] == {"from": 0.0, "to": 8.0}


def test_a_network_without_a_step_size_is_one_clear_error(tmp_path) -> None:
    run = tmp_path / "lstm"
    meta_train(TrainConfig(**TINY), out_dir=run)
    with pytest.raises(L2OError, match="rnnprop network with adapt_step"):
        script.adjust(run, tmp_path / "out", hypergradient_weight=2.0)
