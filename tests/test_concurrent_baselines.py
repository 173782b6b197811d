"""The baselines of ``l2o concurrent``: ``l2o compare``'s tuning and runner on the mean gradient."""

from __future__ import annotations

import optuna
import pytest
import torch

from l2o.baselines import get_baseline
from l2o.compare.tuning import study_name
from l2o.concurrent.baselines import MeanGradientFamily, compare_baselines
from l2o.concurrent.experiment import load_concurrent_config, run_experiment
from l2o.concurrent.initializers import build_set
from l2o.errors import L2OError

LEVELS = {"levels": [0.01, 0.5, 1.0]}


def by_hand(cset, name: str, hyperparameters: dict, split: str, n: int, steps: int):
    """The baseline written out: torch's optimizer on the mean of the K gradients, clean loss."""
    batch = cset.sample(split, list(range(n)))
    theta = batch.init_params().requires_grad_(True)
    if name == "adam":
        opt = torch.optim.Adam([theta], lr=hyperparameters["lr"])
    else:
        opt = torch.optim.SGD([theta], **hyperparameters)
    curve = [batch.eval_loss(theta.detach())]
    for step in range(steps):
        theta.grad = batch.grads(theta.detach(), step)[1].mean(-1)
        opt.step()
        curve.append(batch.eval_loss(theta.detach()))
    return torch.stack(curve)


CASES = [("noise", "quadratic"), ("poison", "digits-mlp")]


@pytest.mark.parametrize(("initializer", "task"), CASES)
def test_the_family_gives_the_mean_gradient_and_the_clean_held_out_loss(initializer, task):
    cset = build_set(initializer, task)
    batch, seen = cset.sample("test", [0, 1]), MeanGradientFamily(cset).sample("test", [0, 1])
    theta = batch.init_params() + 0.1
    losses, grads = batch.grads(theta, 3)
    loss, grad = seen.loss_and_grad(theta, 3)
    assert torch.equal(grad, grads.mean(-1)) and torch.equal(loss, losses.mean(-1))
    assert torch.equal(seen.eval_loss(theta), batch.eval_loss(theta))
    assert torch.equal(seen.init_params(), batch.init_params())


def test_tuned_baselines_on_test_are_the_baselines_run_on_the_mean_gradient():
    cset = build_set("noise", "quadratic", {}, LEVELS)
    outcome = compare_baselines(
        cset, ["adam", "momentum"], steps=8, instances=3, trials=3, tune_instances=4,
        storage="sqlite:///:memory:", seed=1,
    )  # fmt: skip
    for name in ("adam", "momentum"):
        tuned = outcome.tuning[name]
        curve = by_hand(cset, name, tuned.hyperparameters, "test", 3, 8)
        assert outcome.evaluation.curves[name] == pytest.approx(curve.double().numpy(), rel=1e-6)
        assert outcome.evaluation.hyperparameters[name] == tuned.hyperparameters
        # the study's score is the same baseline's mean final clean loss on validation
        final = by_hand(cset, name, tuned.hyperparameters, "validation", 4, 8)[-1]
        assert tuned.validation_loss == pytest.approx(float(final.double().mean()), rel=1e-6)
    assert outcome.settings["gradient"] == "mean of the K sources"


def test_a_study_is_never_shared_with_the_base_task_or_another_set():
    adam = get_baseline("adam")
    names = {
        study_name(MeanGradientFamily(build_set("noise", "quadratic", {}, LEVELS)), adam, 10, 4),
        study_name(MeanGradientFamily(build_set("noise", "quadratic")), adam, 10, 4),
        study_name(build_set("noise", "quadratic").family, adam, 10, 4),
    }
    assert len(names) == 3


TINY = [
    "iterations=1",
    "batch_size=2",
    "horizon=5",
    "truncation=5",
    "val_every=1",
    "val_instances=2",
    "eval_instances=3",
    "tune_instances=4",
    "trials=3",
    "references=[]",
    "baselines=['adam', 'momentum']",
    "options.levels=[0.01, 0.5, 1.0]",
]


def test_the_experiment_tunes_with_the_stored_optuna_study_and_reuses_it(tmp_path):
    config = load_concurrent_config(None, TINY, "noise", seed=2)
    first = run_experiment(config, tmp_path)
    assert set(first["optimizers"]) == {"softmax", "adam", "momentum"}
    family = MeanGradientFamily(build_set("noise", "quadratic", {}, LEVELS))
    for name in ("adam", "momentum"):
        record = first["tuning"][name]
        assert record["study"] == study_name(family, get_baseline(name), 5, 4)
        assert record["trials"] == record["new_trials"] == 3
        study = optuna.load_study(
            study_name=record["study"], storage=f"sqlite:///{tmp_path / 'tuning.db'}"
        )
        assert dict(study.best_trial.params) == first["optimizers"][name]["hyperparameters"]
    assert first["adam_lr"] == first["optimizers"]["adam"]["hyperparameters"]["lr"]
    assert first["comparison"]["trials"] == 3 and first["comparison"]["tune_instances"] == 4

    again = run_experiment(config, tmp_path)  # same folder: the studies are finished already
    for name in ("adam", "momentum"):
        assert again["tuning"][name]["new_trials"] == 0
        stats, before = again["optimizers"][name], first["optimizers"][name]
        assert stats["hyperparameters"] == before["hyperparameters"]
        assert stats["final_loss_mean"] == before["final_loss_mean"]

    more = load_concurrent_config(None, [*TINY, "trials=4"], "noise", seed=2)
    assert run_experiment(more, tmp_path)["tuning"]["adam"]["new_trials"] == 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("references=['mean', 'adam']", "list them in baselines"),
        ("adam_lrs=[0.01, 0.1]", "adam_lrs is gone"),
        ("baselines=['adamm']", "unknown baselines 'adamm'"),
        ("objective=best", "objective must be one of mean, median"),
        ("trials=0", "trials must be >= 1"),
        ("storage=''", "storage must be a non-empty string"),
    ],
)
def test_baseline_settings_are_checked(override, message):
    with pytest.raises(L2OError, match=message):
        load_concurrent_config(None, [override], "noise")


def test_no_baselines_means_no_tuning(tmp_path):
    config = load_concurrent_config(None, [*TINY, "baselines=[]"], "noise")
    results = run_experiment(config, tmp_path)
    assert set(results["optimizers"]) == {"softmax"} and results["adam_lr"] is None
    assert "tuning" not in results and not (tmp_path / "tuning.db").exists()


def test_without_an_output_folder_the_studies_live_in_a_throw_away_file():
    """No folder: the tuning still works over many trials (an in-memory SQLite lost its tables
    once Optuna's heartbeat threads had taken the pool's connections: 7 baselines × 6 trials
    failed) and leaves nothing behind."""
    seven = "baselines=['sgd', 'momentum', 'nesterov', 'adam', 'adamw', 'rmsprop', 'adagrad']"
    config = load_concurrent_config(None, [*TINY, seven, "trials=6"], "noise", seed=2)
    results = run_experiment(config)
    assert {record["new_trials"] for record in results["tuning"].values()} == {6}
    assert len(results["tuning"]) == 7
