"""The command line: real runs end to end, and the error convention for bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from l2o.cli.main import main

TINY = [
    "--set",
    "iterations=3",
    "--set",
    "batch_size=4",
    "--set",
    "horizon=10",
    "--set",
    "truncation=5",
    "--set",
    "val_instances=4",
    "--set",
    "val_every=3",
]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "l2o.cli.main", *args], capture_output=True, text=True, timeout=300
    )


def test_train_then_evaluate_writes_the_documented_files(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "quadratic", "--out", str(run), *TINY]) == 0
    for name in (
        "config.json",
        "optimizer.safetensors",
        "metrics.csv",
        "checkpoint/state.safetensors",
    ):
        assert (run / name).is_file(), name
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    assert {"iteration", "meta_loss", "val_loss", "grad_norm", "skipped", "wall_time"} <= set(
        rows[0]
    )
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                str(run),
                "adam:lr=0.1",
                "quadratic",
                "--steps",
                "7",
                "--instances",
                "5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 7 and results["instances"] == 5
    assert set(results["optimizers"]) == {"l2o", "adam"}
    for stats in results["optimizers"].values():
        assert {
            "final_loss_mean",
            "final_loss_median",
            "final_loss_q25",
            "final_loss_q75",
            "hyperparameters",
            "ms_per_step",
        } <= set(stats)
    assert results["optimizers"]["adam"]["hyperparameters"] == {"lr": 0.1}
    with open(out / "curves.csv") as f:
        curves = list(csv.DictReader(f))
    assert len(curves) == 2 * 5 * 8
    assert str(out) in capsys.readouterr().out


def test_resume_continues(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "quadratic", "--out", str(run), *TINY]) == 0
    assert (
        main(["train", "quadratic", "--out", str(run), *TINY, "--set", "iterations=5", "--resume"])
        == 0
    )
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + 5


def foreign_file(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    return path


def corrupt_file(tmp_path):
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(b"not a safetensors file at all")
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "no-such-task"], "unknown task"),
        (["train", "quadratic", "--set", "horizon=0"], "horizon must be >= 1"),
        (["train", "quadratic", "--set", "meta_lr=-1"], "meta_lr must be > 0"),
        (["train", "quadratic", "--set", "task_options.dim=0"], "dim must be"),
        (["train", "quadratic", "--config", "missing.toml"], "does not exist"),
        (["evaluate", "{tmp}/no-run", "quadratic"], "unknown optimizer"),
        (["evaluate", "{tmp}", "quadratic"], "has no optimizer.safetensors"),
        (["evaluate", "adam:lr=-1", "quadratic"], "Invalid learning rate"),
        (["evaluate", "adam:beta=3", "quadratic"], "unknown hyperparameter"),
        (["evaluate", "{foreign}", "quadratic"], "not an l2o optimizer"),
        (["evaluate", "{corrupt}", "quadratic"], "not a readable safetensors"),
        (["evaluate", "adam", "quadratic", "--steps", "0"], "--steps must be >= 1"),
        (["train", "quadratic", "--resume", "--out", "{tmp}/missing-run"], "nothing to resume"),
        (["train"], "required"),
        (["evaluate", "adam", "quadratic", "--steps", "x"], "invalid int value"),
    ],
)
def test_bad_input_exits_2_with_one_error_line(tmp_path, capsys, args, message):
    subs = {"tmp": tmp_path, "foreign": foreign_file(tmp_path), "corrupt": corrupt_file(tmp_path)}
    args = [a.format(**subs) for a in args]
    if "--out" not in args and len(args) > 1:
        args += ["--out", str(tmp_path / "out")]
    try:
        status = main(args)
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    assert status == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]


def test_a_real_process_prints_no_traceback(tmp_path):
    result = run_cli("evaluate", str(tmp_path), "quadratic")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_list_shows_tasks_and_baselines():
    result = run_cli("list")
    assert result.returncode == 0
    for name in ("quadratic", "digits-mlp", "adam", "sgd", "nesterov", "rmsprop", "adagrad"):
        assert name in result.stdout
