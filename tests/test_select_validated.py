"""scripts/select_validated.py: the kept network chosen by its worst ratio to tuned Adam, or to
the suite's goal against several tuned baselines."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch

import l2o
from l2o.baselines import get_baseline
from l2o.compare.tuning import tune
from l2o.errors import L2OError
from l2o.evaluate import BaselineRunner, LearnedRunner
from l2o.nets import build_net
from l2o.pretrained import path as pretrained_path
from l2o.serialization import save_optimizer
from l2o.tasks import get_task

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
SPEC = importlib.util.spec_from_file_location(
    "select_validated", ROOT / "scripts/select_validated.py"
)
script = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(script)

QUADRATIC = [("quadratic", "quadratic", {}, 0)]  # small and fast: the quadratic at 20 and 50 steps
STEPS = (20, 50)


def _validated(run: Path, iteration: int, net: torch.nn.Module) -> None:
    save_optimizer(net, run / "validated" / f"{iteration:06d}", {"iteration": iteration})


def test_the_network_with_the_lowest_worst_ratio_is_kept(tmp_path, monkeypatch) -> None:
    run, out = tmp_path / "run", tmp_path / "out"
    trained = l2o.load("quadratic")
    _validated(run, 20, build_net({"optimizer": "lstm"}, seed=0))  # untrained
    _validated(run, 40, trained)
    result = script.select(run, out, n=4, families=QUADRATIC, steps=STEPS)
    assert result["chosen"] == 40
    rows = result["candidates"]
    assert rows["20"]["worst"] > rows["40"]["worst"]
    assert set(rows["40"]["ratios"]) == {"quadratic-20", "quadratic-50"}
    kept = l2o.load(out)
    for name, tensor in trained.state_dict().items():
        torch.testing.assert_close(kept.state_dict()[name], tensor)
    info = json.loads((out / "config.json").read_text())
    assert info["selection"]["iteration"] == 40
    assert json.loads((out / "selection.json").read_text())["chosen"] == 40

    # a rerun scores only what is new: a third network, and the kept one changes only if it wins
    _validated(run, 60, build_net({"optimizer": "lstm"}, seed=1))
    scored = []
    real_score = script.score
    monkeypatch.setattr(
        script, "score", lambda net, *a, **k: scored.append(1) or real_score(net, *a, **k)
    )
    assert script.select(run, out, n=4, families=QUADRATIC, steps=STEPS)["chosen"] == 40
    assert len(scored) == 1


def test_candidates_are_scored_with_the_bounds_they_ship_with(tmp_path) -> None:
    run, out = tmp_path / "run", tmp_path / "out"
    (run / "validated" / "000020").mkdir(parents=True)
    for suffix, name in ((".safetensors", "optimizer.safetensors"), (".json", "config.json")):
        shutil.copyfile(
            pretrained_path("general").with_suffix(suffix), run / "validated/000020" / name
        )
    bounds = {"min_log_step": -12.0, "max_log_step": None}  # general ships -16
    script.select(run, out, n=2, bounds=bounds, families=QUADRATIC, steps=STEPS)
    info = json.loads((out / "config.json").read_text())
    assert l2o.load(out).spec.min_log_step == -12.0
    assert info["post_training"]["min_log_step"] == {"from": -16.0, "to": -12.0}
    assert info["selection"]["iteration"] == 20


def test_a_run_without_validated_networks_is_one_clear_error(tmp_path) -> None:
    (tmp_path / "run").mkdir()
    with pytest.raises(L2OError, match="holds no validated network"):
        script.select(tmp_path / "run", tmp_path / "out", families=QUADRATIC, steps=STEPS)


def test_the_goal_ratio_holds_the_network_to_adam_and_to_the_best_baseline() -> None:
    references = {
        "adam": {"q": {"median": 2.0}},
        "rmsprop": {"q": {"median": 0.5}},  # the best tuned baseline on q
        "momentum": {},  # every rate diverged somewhere: no entry, it cannot be the best
    }
    # 0.9 is 0.45x Adam but 1.2x (1.5 x 0.5): the best baseline's bound is the binding one
    assert script.goal_ratio(0.9, references, "q") == pytest.approx(0.9 / 0.75)
    # with Adam the best, the plain ratio to Adam
    assert script.goal_ratio(1.0, {"adam": {"q": {"median": 2.0}}}, "q") == pytest.approx(0.5)


def test_a_final_loss_of_exactly_zero_ranks_first_and_only_divergence_ranks_last() -> None:
    # the wide MLP at 1,000 steps can reach a loss of exactly 0: the best result there is,
    # which an earlier ranking scored inf, as if the network had diverged
    zero = {"q-100": 0.5, "q-1000": 0.0}
    positive = {"q-100": 0.5, "q-1000": 1e-3}
    diverged = {"q-100": 0.1, "q-1000": math.inf}
    rows = {
        str(i): {"ratios": ratios, "worst": math.inf}  # worst as an earlier version saved it
        for i, ratios in ((20, diverged), (40, positive), (60, zero))
    }
    ranked = script._ranking(rows, 0)
    assert [i for _, _, i in ranked] == [60, 40, 20]
    assert ranked[0][:2] == (0.5, pytest.approx(math.sqrt(0.5 * script.RATIO_FLOOR)))
    assert ranked[-1][:2] == (math.inf, math.inf)
    assert [i for _, _, i in script._ranking(rows, 30)] == [60, 40]
    # a reference of exactly 0 is matched only by a 0
    references = {"adam": {"q": {"median": 0.0}}}
    assert script.goal_ratio(0.0, references, "q") == 1.0
    assert script.goal_ratio(1e-9, references, "q") == math.inf


def test_several_baselines_are_tuned_recorded_and_shared(tmp_path) -> None:
    run, out, shared = tmp_path / "run", tmp_path / "out", tmp_path / "reference.json"
    _validated(run, 20, l2o.load("quadratic"))
    result = script.select(
        run, out, n=4, families=QUADRATIC, steps=STEPS, reference_file=shared,
        baselines=("momentum",),
    )  # fmt: skip
    assert list(result["references"]) == ["adam", "momentum"]  # Adam always, first
    momentum = result["references"]["momentum"]["quadratic-50"]
    assert momentum["lr"] in script.learning_rates("momentum")
    # each recorded ratio is the goal ratio of the network's own median on those instances
    losses = script._losses_at(LearnedRunner(l2o.load("quadratic")), QUADRATIC[0], 4, STEPS)
    for key, finals in losses.items():
        expected = script.goal_ratio(float(finals.median()), result["references"], key)
        assert result["candidates"]["20"]["ratios"][key] == pytest.approx(expected)
    info = json.loads((out / "config.json").read_text())
    assert info["selection"]["baselines"] == ["adam", "momentum"]
    assert json.loads(shared.read_text())["setup"]["baselines"] == ["adam", "momentum"]
    # the grid is recorded with the references: one cached with another grid is measured again
    setup = json.loads(shared.read_text())["setup"]
    assert setup["lr_grid"]["adam"] == list(script.learning_rates("adam"))
    stale = {**setup, "lr_grid": {"adam": [1e-3], "momentum": [1e-3]}}
    shared.write_text(json.dumps({"setup": stale, "references": {"adam": {}, "momentum": {}}}))
    again = script.select(
        run, tmp_path / "again", n=4, families=QUADRATIC, steps=STEPS, reference_file=shared,
        baselines=("momentum",),
    )  # fmt: skip
    assert again["references"] == result["references"]


def test_the_learning_rate_grid_reaches_the_top_of_the_search_range() -> None:
    """Half a decade apart, then the range's top where the grid stops short of it: Adam's range
    ends at 3, so its grid tries 1 and 3 (a best rate at 1 is then not the grid's edge)."""
    adam = script.learning_rates("adam")
    assert adam[0] == pytest.approx(1e-4) and adam[-2:] == pytest.approx((1.0, 3.0))
    assert all(b / a < 3.17 for a, b in itertools.pairwise(adam))
    assert script.learning_rates("sgd")[-2:] == pytest.approx((10.0, 30.0))  # SGD: to 30


def test_an_unknown_baseline_is_one_clear_error_before_any_work(tmp_path) -> None:
    with pytest.raises(L2OError, match="nope"):
        script.select(tmp_path / "missing", tmp_path / "out", baselines=("nope",))


def test_suite_tuning_tunes_every_hyperparameter_as_the_suite_does(tmp_path) -> None:
    run, out, shared = tmp_path / "run", tmp_path / "out", tmp_path / "reference.json"
    _validated(run, 20, l2o.load("quadratic"))
    result = script.select(
        run, out, n=4, families=QUADRATIC, steps=STEPS, reference_file=shared,
        baselines=("rmsprop",), tuning="suite",
    )  # fmt: skip
    assert (tmp_path / "tuning.db").is_file()  # the studies sit beside the shared references
    rmsprop = result["references"]["rmsprop"]["quadratic-50"]
    assert set(rmsprop["hyperparameters"]) == {"lr", "alpha"}  # not the learning rate alone
    # the suite's own tuning call (same storage) returns the recorded study's best
    family = get_task("quadratic", {})
    storage = f"sqlite:///{tmp_path / 'tuning.db'}"
    tuned = tune(family, "rmsprop", 50, script.SUITE_TRIALS, script.SUITE_TUNE_INSTANCES, storage)
    assert tuned.new_trials == 0
    assert tuned.hyperparameters == rmsprop["hyperparameters"]
    # the recorded median is that tuned baseline's on the n validation instances
    runner = BaselineRunner(get_baseline("rmsprop"), tuned.hyperparameters)
    finals = script._losses_at(runner, QUADRATIC[0], 4, (50,))["quadratic-50"]
    assert rmsprop["median"] == pytest.approx(float(finals.median()))
    assert json.loads((out / "config.json").read_text())["selection"]["tuning"] == "suite"
    assert json.loads(shared.read_text())["setup"]["tuning"]["trials"] == script.SUITE_TRIALS


def test_all_baselines_means_those_the_suite_tunes_and_a_bad_tuning_is_refused(tmp_path) -> None:
    with pytest.raises(L2OError, match="--tuning must be one of grid, suite"):
        script.select(tmp_path / "missing", tmp_path / "out", tuning="optuna")
    with pytest.raises(L2OError, match="holds no validated network"):  # "all" is known
        script.select(tmp_path / "missing", tmp_path / "out", baselines=("all",))
    with pytest.raises(L2OError, match="nope"):  # and does not hide an unknown name beside it
        script.select(tmp_path / "missing", tmp_path / "out", baselines=("all", "nope"))


def test_the_best_few_are_scored_again_on_more_instances_which_decide(tmp_path) -> None:
    run, out, shared = tmp_path / "run", tmp_path / "out", tmp_path / "reference.json"
    _validated(run, 20, build_net({"optimizer": "lstm"}, seed=0))  # untrained
    _validated(run, 40, l2o.load("quadratic"))
    _validated(run, 60, build_net({"optimizer": "lstm"}, seed=1))
    result = script.select(
        run, out, n=2, families=QUADRATIC, steps=STEPS, reference_file=shared,
        confirm=2, confirm_instances=6,
    )  # fmt: skip
    first = script._ranking(result["candidates"], 0)
    confirmed = result["confirmed"]
    assert confirmed["instances"] == 6
    assert set(confirmed["candidates"]) == {str(i) for _, _, i in first[:2]}  # the best two
    # the confirming references were measured on 6 instances and kept beside the shared file
    kept = json.loads((tmp_path / "reference-6.json").read_text())
    assert kept["setup"]["instances"] == 6 and kept["references"] == confirmed["references"]
    assert json.loads(shared.read_text())["setup"]["instances"] == 2
    adam_50 = confirmed["references"]["adam"]["quadratic-50"]
    runner = BaselineRunner(get_baseline("adam"), {"lr": adam_50["lr"]})
    finals = script._losses_at(runner, QUADRATIC[0], 6, (50,))["quadratic-50"]
    assert adam_50["median"] == pytest.approx(float(finals.median()))
    # each confirmed ratio is that network's median on the 6 instances against them
    best = first[0][2]
    net = l2o.load(run / "validated" / f"{best:06d}")
    for key, finals in script._losses_at(LearnedRunner(net), QUADRATIC[0], 6, STEPS).items():
        expected = script.goal_ratio(float(finals.median()), confirmed["references"], key)
        assert confirmed["candidates"][str(best)]["ratios"][key] == pytest.approx(expected)
    info = json.loads((out / "config.json").read_text())
    assert info["selection"]["confirm"] == {"top": 2, "instances": 6}


def _weights_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    other = b.state_dict()
    return all(torch.equal(t, other[k]) for k, t in a.state_dict().items())


def test_the_confirming_scores_overrule_the_first_ranking(tmp_path, monkeypatch) -> None:
    run, out = tmp_path / "run", tmp_path / "out"
    for iteration, seed in ((20, 0), (40, 1), (60, 2)):
        _validated(run, iteration, build_net({"optimizer": "lstm"}, seed=seed))
    # on 2 instances 20 < 40 < 60; on 6, 40 is better than 20 (60 is not among the best two)
    worst = {(2, 0): 0.5, (2, 1): 0.7, (2, 2): 0.9, (6, 0): 3.0, (6, 1): 0.8, (6, 2): 0.1}

    def fake(net, references, count, families, steps):  # which seed's network, by its weights
        seed = next(
            s for s in (0, 1, 2) if _weights_equal(net, build_net({"optimizer": "lstm"}, seed=s))
        )
        return {"quadratic-20": worst[(count, seed)], "quadratic-50": worst[(count, seed)]}

    monkeypatch.setattr(script, "score", fake)
    monkeypatch.setattr(script, "tuned_reference", lambda count, *a, **k: {"count": count})
    result = script.select(run, out, n=2, families=QUADRATIC, steps=STEPS, confirm=2,
                           confirm_instances=6)  # fmt: skip
    assert set(result["confirmed"]["candidates"]) == {"20", "40"}
    assert result["chosen"] == 40
    assert json.loads((out / "config.json").read_text())["selection"]["iteration"] == 40
    # without the second scoring the first ranking keeps 20
    assert (
        script.select(run, tmp_path / "plain", n=2, families=QUADRATIC, steps=STEPS)["chosen"] == 20
    )


def test_a_confirmation_without_more_instances_is_refused(tmp_path) -> None:
    with pytest.raises(L2OError, match="--confirm must be >= 0"):
        script.select(tmp_path / "missing", tmp_path / "out", confirm=-1)
    with pytest.raises(L2OError, match=r"--confirm-instances \(8\) must exceed --instances \(8\)"):
        script.select(tmp_path / "missing", tmp_path / "out", confirm=2, confirm_instances=8)
