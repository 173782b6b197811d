"""Randomised horizons and the plateau curriculum (issue 10)."""

from __future__ import annotations

import math

import pytest
import torch

from l2o.config import TrainConfig
from l2o.errors import L2OError
from l2o.meta.curriculum import Curriculum
from l2o.meta.horizons import HorizonSchedule
from l2o.meta.train import meta_train
from l2o.meta.unroll import run_learned, task_observer
from l2o.tasks import get_task


def test_default_schedule_is_the_papers_fixed_horizon():
    schedule = HorizonSchedule(TrainConfig())
    assert {schedule.horizon(i) for i in range(50)} == {100}
    assert schedule.val_horizon == 100
    schedule.observe(1.0)
    schedule.observe(2.0)
    schedule.observe(3.0)
    assert schedule.horizon(99) == 100


def test_log_uniform_horizons_span_the_range_and_are_reproducible():
    config = TrainConfig(horizon_sampling="log_uniform", max_horizon=1000, truncation=20)
    schedule = HorizonSchedule(config)
    draws = [schedule.horizon(i) for i in range(2000)]
    assert min(draws) >= 20 and max(draws) <= 1000
    assert min(draws) < 25 and max(draws) > 950
    logs = [math.log(d) for d in draws]  # log-uniform: the median is the geometric mean
    assert abs(sorted(logs)[1000] - 0.5 * (math.log(20) + math.log(1000))) < 0.15
    assert draws == [HorizonSchedule(config).horizon(i) for i in range(2000)]
    other_seed = HorizonSchedule(config.replace(seed=1))
    assert draws[:50] != [other_seed.horizon(i) for i in range(50)]


def test_curriculum_lengthens_on_stalls_only_up_to_its_cap():
    c = Curriculum(100, 500, patience=2, factor=2.0)
    for v in (5.0, 4.0, 4.5, 4.2):  # two validations without a new best
        c.observe(v)
    assert c.horizon == 200
    c.observe(4.1)
    assert c.horizon == 200  # one stall only
    c.observe(3.0)
    for v in (3.5, 3.5, 3.5, 3.5, 3.5, 3.5):
        c.observe(v)
    assert c.horizon == 500 and c.stage == 3


def test_curriculum_with_sampling_caps_the_draws():
    config = TrainConfig(
        horizon=50,
        max_horizon=400,
        curriculum="plateau",
        curriculum_patience=1,
        horizon_sampling="log_uniform",
        truncation=10,
    )
    schedule = HorizonSchedule(config)
    assert max(schedule.horizon(i) for i in range(200)) <= 50
    schedule.observe(1.0)
    schedule.observe(2.0)
    assert schedule.cap == 100
    assert 50 < max(schedule.horizon(i) for i in range(200)) <= 100


def test_curriculum_meta_training_grows_the_unroll_and_resumes_identically(tmp_path, monkeypatch):
    import l2o.meta.train as train_module

    config = TrainConfig(
        iterations=6,
        batch_size=4,
        horizon=10,
        truncation=5,
        max_horizon=40,
        curriculum="plateau",
        curriculum_patience=2,
        val_every=1,
        val_instances=4,
        val_horizon=40,
    )
    horizons: list[int] = []
    unroll, validate = train_module._unroll_and_step, train_module._validate

    def spy(*args):
        horizons.append(args[6])
        return unroll(*args)

    def stalled(net, problem, indices, steps, metric="mean"):
        assert steps == 40  # validation measures val_horizon
        validate(net, problem, indices, steps, metric)
        return 1.0  # never a new best after the first: the curriculum must move

    monkeypatch.setattr(train_module, "_unroll_and_step", spy)
    monkeypatch.setattr(train_module, "_validate", stalled)
    full, _ = meta_train(config, out_dir=tmp_path / "full")
    assert horizons == [10, 10, 10, 20, 20, 40]
    meta_train(config.replace(iterations=4), out_dir=tmp_path / "part")
    horizons.clear()
    resumed, _ = meta_train(config, out_dir=tmp_path / "part", resume=True)
    assert horizons == [20, 40]  # the resumed run continues the curriculum
    for p, q in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"horizon_sampling": "uniform"}, "horizon_sampling"),
        ({"max_horizon": 50}, "max_horizon"),
        ({"curriculum": "plateau"}, "max_horizon > horizon"),
        ({"curriculum": "steps", "max_horizon": 200}, "curriculum must be one of"),
        ({"curriculum_factor": 1.0}, "curriculum_factor"),
        ({"curriculum_patience": 0}, "curriculum_patience"),
        ({"val_horizon": -1}, "val_horizon"),
        ({"val_metric": "median"}, "val_metric must be one of mean, log_mean"),
    ],
)
def test_bad_horizon_config(changes, message):
    with pytest.raises(L2OError, match=message):
        TrainConfig(**changes)


def test_log_mean_validation_scores_the_geometric_mean_and_keeps_that_best(tmp_path):
    """With ``val_metric = "log_mean"`` the recorded validation loss is the geometric mean of
    the validation instances' final losses, and the kept weights are the best by it."""
    config = TrainConfig(
        batch_size=4, horizon=12, truncation=4, iterations=6, val_every=2, val_instances=6,
        checkpoint_every=2, meta_loss="log", val_metric="log_mean", seed=0,
    )  # fmt: skip
    net, history = meta_train(config, out_dir=tmp_path / "run")
    scores = {
        int(r["iteration"]): r["val_loss"] for r in history.rows if r["val_loss"] == r["val_loss"]
    }
    assert sorted(scores) == [2, 4, 6]
    batch = get_task("quadratic").sample("validation", list(range(6)))
    _, theta = run_learned(net, batch.init_params(), task_observer(batch), 12)
    finals = batch.eval_loss(theta).double()
    assert min(scores.values()) == pytest.approx(float(finals.log().mean().exp()), rel=1e-5)
    assert min(scores.values()) < float(finals.mean())  # not the arithmetic mean
