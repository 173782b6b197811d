from __future__ import annotations

import pytest

from l2o.config import TrainConfig, load_config
from l2o.errors import L2OError


def test_defaults_are_the_papers():
    cfg = TrainConfig()
    assert (cfg.hidden_size, cfg.layers, cfg.preprocess_p, cfg.output_scale) == (20, 2, 10.0, 0.1)
    assert (cfg.horizon, cfg.truncation, cfg.preprocess) == (100, 20, "log_sign")
    assert cfg.second_order is False


def test_toml_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('task = "digits-mlp"\nhorizon = 40\n[task_options]\nhidden = [40]\n')
    cfg = load_config(path, ["truncation=10", "task_options.activation=relu", "meta_lr=1e-2"])
    assert cfg.task == "digits-mlp" and cfg.horizon == 40 and cfg.truncation == 10
    assert cfg.task_options == {"hidden": [40], "activation": "relu"}
    assert cfg.meta_lr == 0.01


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("horizon=0", "horizon must be >= 1"),
        ("truncation=500", "truncation must be between 1 and horizon"),
        ("preprocess=fancy", "preprocess must be one of"),
        ("nonsense=1", "unknown config key"),
        ("batch_size=two", "batch_size must be an integer"),
        ("second_order=3", "second_order must be true or false"),
        ("meta_loss_floor=2", "meta_loss_floor must be 0"),
        ("meta_loss_floor=nan", "meta_loss_floor must be a finite number"),
        ("meta_loss_floor=1e-8", "meta_loss_floor applies to meta_loss"),
        ("horizon", "--set expects key=value"),
    ],
)
def test_invalid_values_name_the_problem(override, message):
    with pytest.raises(L2OError, match=message):
        load_config(overrides=[override])


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(L2OError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("horizon = = 3")
    with pytest.raises(L2OError, match="not valid TOML"):
        load_config(bad)


def test_config_is_frozen_and_round_trips():
    cfg = TrainConfig(task_options={"dim": 3})
    with pytest.raises(AttributeError):
        cfg.horizon = 5  # type: ignore[misc]
    assert cfg.replace(horizon=50).horizon == 50
    assert TrainConfig(**cfg.to_dict()) == cfg


def test_a_task_brings_its_recommended_settings_and_explicit_values_win(tmp_path):
    cfg = load_config(overrides=["task=digits-mlp"])
    assert (cfg.batch_size, cfg.iterations) == (8, 150)
    assert load_config(overrides=["task=digits-mlp", "batch_size=4"]).batch_size == 4
    path = tmp_path / "c.toml"
    path.write_text('task = "digits-mlp"\niterations = 3\n')
    assert load_config(path).iterations == 3 and load_config(path).batch_size == 8
    assert load_config(overrides=["task=quadratic"]).batch_size == 128
