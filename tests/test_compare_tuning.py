"""Baseline tuning: validation only, seeded, stored, extended on rerun, robust to divergence."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import torch

import l2o.compare.tuning as tuning
from l2o import evaluate as evaluate_module
from l2o.baselines import Baseline, SearchRange
from l2o.compare.comparison import compare
from l2o.compare.tuning import PENALTY, objective_value, redact, tune, validation_loss
from l2o.evaluate import LearnedRunner
from l2o.nets import build_net
from l2o.tasks import get_task

optuna.logging.set_verbosity(optuna.logging.WARNING)


def spy_splits(family, calls: list[str]):
    """Record the split of every ``family.sample`` call."""
    sample = family.sample

    def spy(split, indices):
        calls.append(split)
        return sample(split, indices)

    family.sample = spy
    return family


def sqlite(tmp_path, name: str = "tuning.db") -> str:
    return f"sqlite:///{tmp_path / name}"


@pytest.mark.parametrize("task", ["quadratic", "digits-mlp"])
def test_tuning_never_samples_test_instances(tmp_path, task):
    calls: list[str] = []
    family = spy_splits(get_task(task), calls)
    tune(family, "adam", steps=3, trials=3, instances=4, storage=sqlite(tmp_path))
    assert calls and set(calls) == {"validation"}


def test_compare_tunes_on_validation_before_touching_test(tmp_path):
    calls: list[str] = []
    family = spy_splits(get_task("quadratic"), calls)
    learned = LearnedRunner(build_net({"optimizer": "lstm"}, seed=0))
    compare(
        family,
        learned,
        ["sgd", "adam"],
        steps=4,
        instances=3,
        trials=2,
        tune_instances=4,
        storage=sqlite(tmp_path),
    )
    first_test = calls.index("test")
    assert set(calls[:first_test]) == {"validation"}
    assert set(calls[first_test:]) == {"test"}  # evaluation and timing: test only


def _compare_once(tmp_path, seed: int, name: str):
    learned = LearnedRunner(build_net({"optimizer": "lstm"}, seed=0))
    return compare(
        get_task("quadratic"),
        learned,
        ["momentum", "adam"],
        steps=8,
        instances=5,
        trials=4,
        tune_instances=6,
        storage=sqlite(tmp_path, name),
        seed=seed,
    )


def test_same_seed_gives_same_hyperparameters_and_curves(tmp_path):
    a = _compare_once(tmp_path, seed=7, name="a.db")
    b = _compare_once(tmp_path, seed=7, name="b.db")
    assert a.evaluation.hyperparameters == b.evaluation.hyperparameters
    assert a.evaluation.curves.keys() == b.evaluation.curves.keys()
    for name, curve in a.evaluation.curves.items():
        np.testing.assert_array_equal(curve, b.evaluation.curves[name])
    c = _compare_once(tmp_path, seed=8, name="c.db")
    assert c.evaluation.hyperparameters["adam"] != a.evaluation.hyperparameters["adam"]


def test_rerun_reuses_and_extends_the_study(tmp_path, monkeypatch):
    runs = []
    real = tuning.validation_loss

    def counting(*args, **kwargs):
        runs.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(tuning, "validation_loss", counting)
    family, storage = get_task("quadratic"), sqlite(tmp_path)
    first = tune(family, "adam", steps=5, trials=3, instances=4, storage=storage)
    assert (first.trials, first.new_trials, len(runs)) == (3, 3, 3)

    again = tune(family, "adam", steps=5, trials=3, instances=4, storage=storage)
    assert (again.trials, again.new_trials, len(runs)) == (3, 0, 3)  # nothing redone
    assert again.hyperparameters == first.hyperparameters

    more = tune(family, "adam", steps=5, trials=5, instances=4, storage=storage)
    assert (more.trials, more.new_trials, len(runs)) == (5, 2, 5)
    assert runs[3] not in runs[:3]  # the extension explores new points, not replays
    assert more.validation_loss <= first.validation_loss

    other = tune(family, "adam", steps=6, trials=2, instances=4, storage=storage)
    assert other.study_name != first.study_name  # another horizon is another study
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    assert names == {first.study_name, other.study_name}


def test_task_options_give_separate_studies(tmp_path):
    storage = sqlite(tmp_path)
    a = tune(get_task("quadratic"), "sgd", steps=3, trials=1, instances=2, storage=storage)
    b = tune(
        get_task("quadratic", {"dim": 5}), "sgd", steps=3, trials=1, instances=2, storage=storage
    )
    assert a.study_name != b.study_name and b.new_trials == 1


def test_diverged_trials_get_a_finite_penalty(tmp_path):
    assert objective_value(torch.tensor([1.0, float("inf")])) == PENALTY
    assert objective_value(torch.tensor([float("nan")])) == PENALTY
    assert objective_value(torch.tensor([1.0, 3.0])) == 2.0
    assert objective_value(torch.tensor([1.0, 2.0, float("inf")]), "median") == 2.0
    assert objective_value(torch.tensor([1.0, float("nan"), float("inf")]), "median") == PENALTY
    reckless = Baseline(
        "reckless", torch.optim.SGD, "SGD, far too fast", search_space={"lr": SearchRange(1e3, 1e6)}
    )
    family = get_task("quadratic")
    assert validation_loss(family, reckless, {"lr": 1e4}, 50, 4) == PENALTY
    tuned = tune(family, reckless, steps=50, trials=3, instances=4, storage=sqlite(tmp_path))
    assert tuned.trials == 3 and tuned.validation_loss == PENALTY


def test_bad_storage_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="Optuna storage"):
        tune(get_task("quadratic"), "sgd", 3, 1, 2, storage="nosuchdb://x")


def test_redact_hides_passwords():
    assert redact("postgresql://me:secret@db:5432/l2o") == "postgresql://me:***@db:5432/l2o"
    assert redact("sqlite:///runs/x/tuning.db") == "sqlite:///runs/x/tuning.db"


def test_median_objective_is_its_own_study(tmp_path):
    storage, family = sqlite(tmp_path), get_task("quadratic")
    mean = tune(family, "sgd", steps=3, trials=2, instances=3, storage=storage)
    median = tune(
        family, "sgd", steps=3, trials=2, instances=3, storage=storage, objective="median"
    )
    assert median.study_name != mean.study_name and median.new_trials == 2
    assert median.record()["objective"] == "median final loss"
    with pytest.raises(ValueError, match="objective"):
        tune(family, "sgd", steps=3, trials=2, instances=3, storage=storage, objective="max")


def test_ms_per_step_is_the_fastest_timed_run_after_a_warm_up(monkeypatch):
    """Every ms_per_step (baselines, learned nets, concurrent nets) is the best of the timed
    calls, the untimed ``prepare`` left out: other processes only ever add time."""
    clock = iter([0.0, 3.0, 10.0, 11.0, 20.0, 22.0])  # timed calls of 3 s, 1 s and 2 s
    monkeypatch.setattr(evaluate_module.time, "perf_counter", lambda: next(clock))
    calls: list[tuple[object, int]] = []
    prepared = iter(["warm", "a", "b", "c"])
    ms = evaluate_module.best_ms_per_step(
        lambda: next(prepared), lambda batch, n: calls.append((batch, n)), 10
    )
    assert ms == 1000.0 * 1.0 / 10
    assert calls == [("warm", 2), ("a", 10), ("b", 10), ("c", 10)]
