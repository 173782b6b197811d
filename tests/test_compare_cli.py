"""`l2o compare`: records, figures redrawn from files alone, storages, generalisation, errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import l2o.cli.compare as cli_compare
from l2o.cli.main import main
from l2o.compare.generalization import (
    SETTINGS,
    markdown_table,
    select_settings,
    table_row,
    training_horizon,
)
from l2o.compare.plots import optimizer_color, quartiles, read_records
from l2o.devices import resolve_device
from l2o.errors import L2OError
from l2o.nets import build_net
from l2o.serialization import save_optimizer

TINY = ["--trials", "2", "--tune-instances", "3", "--instances", "4", "--steps", "6"]


@pytest.fixture(scope="module")
def learned_dir(tmp_path_factory):
    """An untrained LSTM optimizer saved like a run folder, trained (it says) at horizon 4."""
    folder = tmp_path_factory.mktemp("run")
    save_optimizer(
        build_net({"optimizer": "lstm"}, seed=0), folder, {"train_config": {"horizon": 4}}
    )
    return folder


@pytest.fixture(scope="module")
def compared(tmp_path_factory, learned_dir):
    out = tmp_path_factory.mktemp("compare")
    args = ["compare", "quadratic", "--optimizer", str(learned_dir), "--out", str(out)]
    assert main([*args, "--baselines", "adam,sgd", *TINY, "--seed", "1"]) == 0
    return out


def test_compare_writes_the_contract(compared):
    for name in ("results.json", "curves.csv", "comparison.png", "tuning.db"):
        assert (compared / name).is_file(), name
    results = json.loads((compared / "results.json").read_text())
    assert results["task"] == "quadratic" and results["steps"] == 6 and results["instances"] == 4
    assert set(results["optimizers"]) == {"l2o", "adam", "sgd"}
    assert results["learned"] == "l2o"
    for name in ("adam", "sgd"):
        stats = results["optimizers"][name]
        assert set(stats["hyperparameters"]) == {"lr"}
        assert stats["ms_per_step"] > 0 and stats["final_loss_median"] > 0
        assert results["tuning"][name]["split"] == "validation"
        assert results["tuning"][name]["trials"] == 2
    assert results["comparison"]["tune_split"] == "validation"
    records = read_records(compared)
    assert records.curves["adam"].shape == (7, 4)
    q25, median, q75 = quartiles(records.curves["adam"])
    assert median[-1] == pytest.approx(results["optimizers"]["adam"]["final_loss_median"], 1e-6)
    assert np.all(q25 <= median) and np.all(median <= q75)


def test_rerun_reuses_tuning(compared, learned_dir, capsys):
    args = ["compare", "quadratic", "--optimizer", str(learned_dir), "--out", str(compared)]
    assert main([*args, "--baselines", "adam,sgd", *TINY, "--seed", "1"]) == 0
    assert "2 trials, 0 new" in capsys.readouterr().out
    results = json.loads((compared / "results.json").read_text())
    assert all(t["new_trials"] == 0 for t in results["tuning"].values())


def test_replot_needs_only_the_records(compared, tmp_path, monkeypatch):
    for name in ("results.json", "curves.csv"):
        shutil.copy(compared / name, tmp_path / name)

    def forbidden(*args, **kwargs):
        raise AssertionError("--replot must not run anything")

    monkeypatch.setattr(cli_compare, "compare", forbidden)
    monkeypatch.setattr(cli_compare, "resolve_optimizer", forbidden)
    assert main(["compare", "quadratic", "--replot", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "comparison.png").stat().st_size > 10_000


def test_replot_without_records_is_one_error_line(tmp_path, capsys):
    assert main(["compare", "quadratic", "--replot", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "results.json" in err


def test_storage_url_points_elsewhere(tmp_path, learned_dir):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    out = tmp_path / "out"
    args = ["compare", "quadratic", "--optimizer", str(learned_dir), "--out", str(out)]
    assert main([*args, "--baselines", "sgd", *TINY, "--storage", url]) == 0
    assert (tmp_path / "shared.db").is_file() and not (out / "tuning.db").exists()
    assert json.loads((out / "results.json").read_text())["comparison"]["storage"] == url


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--baselines", "adam,lion"], "unknown baseline"),
        (["--steps", "0"], "--steps"),
        (["--generalization", "wider"], "digits-mlp"),
        (["--generalization", "longer"], "unknown generalisation setting"),
        (["--task-option", "dim=0"], "dim"),
    ],
)
def test_bad_input_is_one_error_line(tmp_path, learned_dir, capsys, extra, message):
    args = ["compare", "quadratic", "--optimizer", str(learned_dir), "--out", str(tmp_path)]
    assert main([*args, *TINY, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and message in err


@pytest.mark.slow
def test_generalization_study_and_its_replot(tmp_path, learned_dir, capsys):
    out = tmp_path / "gen"
    args = ["compare", "quadratic", "--optimizer", str(learned_dir), "--out", str(out)]
    assert main([*args, "--baselines", "adam", *TINY, "--generalization", "horizon"]) == 0
    rows = json.loads((out / "generalization.json").read_text())
    assert [r["setting"] for r in rows] == ["horizon-1x", "horizon-2x", "horizon-10x"]
    assert [r["steps"] for r in rows] == [4, 8, 40]  # multiples of the training horizon
    assert all(r["best_baseline"] == "adam" for r in rows)
    for r in rows:
        assert (out / "generalization" / r["setting"] / "comparison.png").is_file()
    (out / "generalization.md").unlink()
    assert (
        main(["compare", "quadratic", "--replot", "--generalization", "horizon", "--out", str(out)])
        == 0
    )
    assert (out / "generalization.md").read_text() == markdown_table(rows)


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
        ),
    ],
)
def test_generalization_study_runs_on_the_device_asked(
    tmp_path, learned_dir, capsys, monkeypatch, device
):
    import l2o.compare.generalization as generalization

    asked = []
    real = generalization.on_device

    def spy(family, where):
        asked.append(str(where))
        return real(family, where)

    monkeypatch.setattr(generalization, "on_device", spy)
    out = tmp_path / "gen"
    args = ["compare", "quadratic", "--optimizer", str(learned_dir), "--out", str(out)]
    study = ["--baselines", "adam", *TINY, "--generalization", "horizon-2x"]
    assert main([*args, *study, "--device", device]) == 0
    expect = str(resolve_device(device))
    assert asked == [expect]  # the study's task is placed where the comparison's is
    for folder in (out, out / "generalization" / "horizon-2x"):
        assert json.loads((folder / "results.json").read_text())["comparison"]["device"] == expect


def test_settings_and_table():
    assert [s.name for s in select_settings(["all"], "quadratic")] == [
        "horizon-1x",
        "horizon-2x",
        "horizon-10x",
    ]
    assert [s.name for s in select_settings(["mlp", "relu"], "digits-mlp")] == [
        "wider",
        "deeper",
        "relu",
    ]
    assert training_horizon({"train_config": {"horizon": 50}}, 100) == 50
    assert training_horizon(None, 100) == 100
    results = {
        "task_options": {},
        "steps": 10,
        "learned": "l2o",
        "optimizers": {
            "l2o": {"final_loss_median": 1.0, "diverged": 0, "hyperparameters": {}},
            "adam": {"final_loss_median": 4.0, "hyperparameters": {"lr": 0.1}},
            "sgd": {"final_loss_median": 2.0, "hyperparameters": {"lr": 0.01}},
        },
    }
    row = table_row(SETTINGS["wider"], results)
    assert row["best_baseline"] == "sgd" and row["ratio"] == 0.5
    assert "sgd (lr=0.01)" in markdown_table([row])
    results["learned"] = "missing"
    with pytest.raises(L2OError):
        table_row(SETTINGS["wider"], results)


def test_colours_are_fixed_per_optimizer():
    assert optimizer_color("adam") == optimizer_color("adam") != optimizer_color("sgd")
    assert optimizer_color("l2o") == optimizer_color("l2o-quadratic")
    assert optimizer_color("someone-else") == optimizer_color("someone-else")


def test_diverged_runs_count_as_worst_in_quartiles():
    curve = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 2.0, float("nan"), float("inf")]]).numpy()
    _, median, q75 = quartiles(curve)
    assert median[1] == np.inf and q75[1] == np.inf


def test_the_generalisation_suite():
    quad = select_settings(["suite"], "quadratic")
    assert [(s.name, s.steps_for(100)) for s in quad] == [
        ("horizon-1x", 100),
        ("horizon-10x", 1000),
        ("horizon-100x", 10000),
    ]
    digits = select_settings(["suite"], "digits-mlp")
    assert [s.steps_for(50) for s in digits] == [100, 1000] * 5
    by_name = {s.name: s for s in digits}
    assert list(by_name) == [
        f"{m}-{n}" for m in ("sigmoid", "relu", "tanh", "wide", "deep") for n in (100, 1000)
    ]
    assert by_name["deep-1000"].task_options == {"hidden": [20, 20, 20], "activation": "sigmoid"}
    assert by_name["wide-100"].steps_for(7) == 100
    # the paper's study ("all") is unchanged by the suite
    assert [s.name for s in select_settings(["all"], "digits-mlp")] == [
        "horizon-1x",
        "horizon-2x",
        "horizon-10x",
        "wider",
        "deeper",
        "relu",
    ]
