"""l2o reproduce: steps run into their own folders, finished ones are reused, the report reads
the files back."""

from __future__ import annotations

import functools
import json

import pytest

from l2o.cli.reproduce import run_command
from l2o.reproduce import Step, plan
from l2o.reproduce import run_steps as _run_steps
from l2o.reproduce.report import write_report
from l2o.reproduce.runner import DONE_FILE

# The library runs command lines through the dispatcher it is given (it never imports the CLI).
run_steps = functools.partial(_run_steps, execute=run_command)

STEPS = [
    Step(
        "eval-adam",
        "Adam on the quadratic",
        ("evaluate", "adam:lr=0.1", "sgd:lr=0.01", "quadratic", "--steps", "3", "--instances", "4"),
        "compare",
    ),
    Step(
        "train",
        "Tiny training",
        (
            "train",
            "quadratic",
            "--set",
            "iterations=2",
            "--set",
            "batch_size=2",
            "--set",
            "horizon=4",
            "--set",
            "truncation=2",
            "--set",
            "val_instances=2",
        ),
        "train",
    ),
]


def test_steps_run_once_and_are_reused(tmp_path):
    seen = []
    records = run_steps(STEPS, tmp_path, on_step=lambda s, status: seen.append((s.name, status)))
    assert seen == [
        ("eval-adam", "running"),
        ("eval-adam", "done"),
        ("train", "running"),
        ("train", "done"),
    ]
    assert (tmp_path / "eval-adam" / "results.json").is_file()
    assert records["train"]["command"][-2:] == ["--out", str(tmp_path / "train")]
    seen.clear()
    run_steps(STEPS, tmp_path, on_step=lambda s, status: seen.append((s.name, status)))
    assert seen == [("eval-adam", "reused"), ("train", "reused")]
    seen.clear()
    run_steps(STEPS[:1], tmp_path, force=True, on_step=lambda s, st: seen.append(st))
    assert seen == ["running", "done"]


def test_an_interrupted_step_is_started_over(tmp_path):
    run_steps(STEPS, tmp_path)
    (tmp_path / "train" / DONE_FILE).unlink()  # as if killed before it finished
    (tmp_path / "train" / "leftover.txt").write_text("partial")
    seen = []
    run_steps(STEPS, tmp_path, on_step=lambda s, status: seen.append((s.name, status)))
    assert seen == [("eval-adam", "reused"), ("train", "running"), ("train", "done")]
    assert not (tmp_path / "train" / "leftover.txt").exists()


def test_report_quotes_commands_and_numbers(tmp_path):
    records = run_steps(STEPS, tmp_path)
    report = write_report(
        tmp_path, STEPS, records, quick=True, total_seconds=5.0, invocation="l2o reproduce --quick"
    ).read_text()
    assert "l2o evaluate adam:lr=0.1 sgd:lr=0.01 quadratic --steps 3" in report
    results = json.loads((tmp_path / "eval-adam" / "results.json").read_text())
    median = results["optimizers"]["adam"]["final_loss_median"]
    assert f"| adam | {median:.4g} |" in report
    assert "![meta-training curves](train/training.png)" in report
    assert (tmp_path / "train" / "training.png").stat().st_size > 1000
    assert "torch" in report and "## Environment" in report


def test_failed_step_names_itself(tmp_path):
    from l2o.errors import L2OError

    bad = [Step("bad", "Bad", ("evaluate", "adam:lr=-1", "quadratic"), "compare")]
    with pytest.raises(L2OError, match="step bad"):
        run_steps(bad, tmp_path)
    assert not (tmp_path / "bad" / DONE_FILE).exists()


def test_the_plan_covers_every_experiment(tmp_path):
    names = [s.name for s in plan(tmp_path, quick=False)]
    for expected in (
        "train-quadratic",
        "train-digits-mlp",
        "compare-quadratic",
        "generalization-quadratic",
        "compare-digits-100",
        "compare-digits-200",
        "generalization",
        "concurrent-noise",
        "concurrent-rotation",
        "concurrent-poison-softmax",
        "concurrent-poison-attention",
    ):
        assert expected in names


def test_the_plan_runs_the_suite_when_general_is_shipped(tmp_path, monkeypatch):
    from l2o import pretrained

    names = pretrained.names()
    monkeypatch.setattr(pretrained, "names", lambda: [*names, "general"])
    steps = plan(tmp_path, quick=True)
    suite = [s for s in steps if s.name.startswith("suite-")]
    assert [s.name for s in suite] == ["suite-quadratic", "suite-digits-mlp"]
    assert all("general" in s.args and "--generalization" in s.args for s in suite)
    full = [s for s in plan(tmp_path, quick=False) if s.name.startswith("suite-")]
    assert all("suite" in s.args for s in full)  # the full run: every setting
    kinds = [s.kind for s in steps]
    assert kinds.index("concurrent") > max(steps.index(s) for s in suite)
