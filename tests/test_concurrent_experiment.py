"""``l2o concurrent`` end to end on tiny settings: files, results keys, λ records, errors."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import pytest
import torch

import l2o
from l2o import interrupts
from l2o.cli.main import main
from l2o.concurrent.combiners import build_combiner
from l2o.concurrent.experiment import load_concurrent_config, run_concurrent, run_experiment
from l2o.concurrent.initializers import build_set
from l2o.concurrent.plots import plot_lambdas
from l2o.concurrent.problem import ConcurrentProblem
from l2o.errors import L2OError

TINY = [
    "iterations=2",
    "batch_size=2",
    "horizon=6",
    "truncation=3",
    "val_every=2",
    "val_instances=2",
    "eval_instances=3",
    "trials=2",
    "tune_instances=2",
    "baselines=[]",
    "options.levels=[0.01, 0.5, 1.0]",
]


def test_softmax_experiment_writes_the_contracted_files(tmp_path):
    config = load_concurrent_config(
        None, [*TINY, 'references=["mean", "oracle"]', 'baselines=["adam"]'], "noise", seed=3
    )
    results = run_experiment(config, tmp_path)
    for name in ("results.json", "lambdas.csv", "lambdas.png", "optimizer.safetensors"):
        assert (tmp_path / name).is_file(), name
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert set(results["optimizers"]) == {"softmax", "mean", "oracle", "adam"}
    clean = results["clean_slot"]
    assert [s["clean"] for s in results["slots"]].index(True) == clean
    assert results["slots"][clean]["label"] == "sigma=0.01"
    assert sum(results["lambda_final"]) == pytest.approx(1.0, abs=1e-5)
    for stats in results["optimizers"].values():
        assert {"final_loss_mean", "final_loss_median", "ms_per_step"} <= set(stats)
    with open(tmp_path / "lambdas.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 3  # iterations 0..2, K = 3
    last = [float(r["lambda"]) for r in rows if r["iteration"] == "2"]
    assert sorted(last) == pytest.approx(sorted(results["lambda_final"]), abs=1e-5)
    net = l2o.load(tmp_path)  # the trained combiner reloads from its metadata alone
    assert net.arch_config()["optimizer"] == "concurrent-softmax"
    (tmp_path / "lambdas.png").unlink()
    plot_lambdas(tmp_path)  # redrawn from the records only
    assert (tmp_path / "lambdas.png").stat().st_size > 0


def test_attention_shuffles_the_clean_slot_per_instance_and_reports_its_lambda(tmp_path):
    config = load_concurrent_config(
        None, [*TINY, "references=[]"], "noise", combiner="attention", seed=0
    )
    results = run_experiment(config, tmp_path)
    assert results["slot_mode"] == "shuffle" and results["clean_slot"] is None
    test_lambda = results["lambda_test"]["attention"]
    assert 0 <= test_lambda["clean_final_step_mean"] <= 1
    assert sum(test_lambda["per_variant_final_step"]) == pytest.approx(1.0, abs=1e-5)
    with open(tmp_path / "lambdas.csv") as f:
        assert {r["slot"] for r in csv.DictReader(f)} == {"*"}


def test_test_time_lambda_is_the_one_attention_mixed_with():
    """λ at test time is what the net used, its memory of the run included."""
    cset = build_set("noise", "quadratic", {}, {"levels": [0.01, 0.5, 1.0]})
    net = build_combiner("attention", cset.k, seed=0)
    with torch.no_grad():
        net.score_w2.normal_()
    problem = ConcurrentProblem(cset, net, seed=0, mode="shuffle")
    _, lam = run_concurrent(net, problem, "test", [0, 1], 4)
    assert lam.shape == (4, 2, cset.k)
    unshuffle = problem.permutation("test", [0, 1]).argsort(1)
    torch.testing.assert_close(lam[-1], net.last_mixing.gather(1, unshuffle))


def test_config_splits_concurrent_and_training_keys():
    config = load_concurrent_config(None, ["horizon=7", "truncation=7", "clean_slot=2"], "rotation")
    assert config.train.horizon == 7 and config.clean_slot == 2
    assert config.train.task == "digits-mlp"
    with pytest.raises(L2OError, match="unknown combiner"):
        load_concurrent_config(None, [], "noise", combiner="best")
    with pytest.raises(L2OError, match="unknown config key"):
        load_concurrent_config(None, ["horizn=7"], "noise")


def test_plain_noise_run_trains_as_the_noise_config():
    # `l2o concurrent noise` with no options is the README's noise row: the same meta-training
    # and the same checkpoint selection (val_every) as configs/concurrent-noise.toml
    path = Path(__file__).parents[1] / "configs" / "concurrent-noise.toml"
    plain = load_concurrent_config(None, [], "noise").train.to_dict()
    filed = load_concurrent_config(path, [], "noise").train.to_dict()
    keys = ("batch_size", "horizon", "truncation", "iterations", "val_every", "val_instances")
    assert {k: plain[k] for k in keys} == {k: filed[k] for k in keys}


def test_the_poison_config_chooses_among_eight_checkpoints():
    # over seeds 0-4 with `attention`, validating every 20 of 40 meta-iterations left the
    # combiner/oracle ratio at 0.82-1.48 (the kept checkpoint); every 5 gave 0.84-1.14 (README)
    path = Path(__file__).parents[1] / "configs" / "concurrent-poison.toml"
    train = load_concurrent_config(path, [], "poison").train
    assert train.iterations // train.val_every >= 8


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["concurrent", "nope"], "unknown initializer 'nope'"),
        (["concurrent", "poison", "--task", "quadratic"], "works on digits-mlp"),
        (["concurrent", "noise", "--set", "options.levels=[-1]"], "levels must be a number"),
        (["concurrent", "shards", "--combiner", "oracle"], "needs a clean optimizee"),
    ],
)
def test_cli_errors_are_one_line_exit_2(argv, message, tmp_path, capsys):
    assert main([*argv, "--set", "iterations=0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_list_shows_initializers(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "initializers:" in out and "rotation" in out


@pytest.mark.slow
def test_softmax_finds_the_clean_slot_on_noisy_least_squares():
    config = load_concurrent_config(
        None,
        ["iterations=60", "batch_size=32", "val_every=1000", "references=[]", "eval_instances=8"],
        "noise",
        seed=3,
    )
    results = run_experiment(config)
    assert results["clean_slot"] != 0
    assert results["lambda_final"][results["clean_slot"]] >= 0.9


@pytest.mark.slow
def test_attention_finds_the_shuffled_clean_slot_on_noisy_least_squares():
    config = load_concurrent_config(
        None,
        ["iterations=80", "batch_size=32", "val_every=1000", "references=[]", "eval_instances=32"],
        "noise",
        combiner="attention",
        seed=3,
    )
    results = run_experiment(config)
    # five slots: uniform λ would give 0.2 to the clean one
    assert results["lambda_test"]["attention"]["clean_final_step_mean"] >= 0.5


def test_resume_after_an_interruption_ends_with_the_same_weights(tmp_path):
    """Killed after the checkpoint of iteration 2 (of 4), resumed: the same weights and λ record
    as an uninterrupted run."""
    from safetensors.torch import load_file

    over = [*TINY, "iterations=4", "checkpoint_every=2", "references=[]"]
    config = load_concurrent_config(None, over, "noise")
    run_experiment(config, tmp_path / "whole")

    def stop_at_3(stage: str, done: int, total: int, row: dict) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, tmp_path / "cut", stop_at_3)
    assert not (tmp_path / "cut" / "optimizer.safetensors").exists()
    assert (
        main(
            [
                "concurrent",
                "noise",
                *[x for s in over for x in ("--set", s)],
                "--out",
                str(tmp_path / "cut"),
            ]
        )
        == 2
    )  # refused without --resume
    run_experiment(config, tmp_path / "cut", resume=True)
    whole = load_file(tmp_path / "whole" / "optimizer.safetensors")
    cut = load_file(tmp_path / "cut" / "optimizer.safetensors")
    assert whole.keys() == cut.keys()
    for key in whole:
        assert torch.equal(whole[key], cut[key]), key
    lam = [(tmp_path / d / "lambdas.csv").read_text() for d in ("whole", "cut")]
    assert lam[0] == lam[1]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_between_checkpoints_then_resume_gives_the_same_lambda_record(tmp_path, sig):
    """A real signal after iteration 3 (of 5, no periodic checkpoint before the end): the stop
    checkpoints iteration 3, and the λ record must reach it too, or the resumed record has a gap."""
    over = [*TINY, "iterations=5", "checkpoint_every=100", "references=[]"]
    config = load_concurrent_config(None, over, "noise", combiner="attention")
    run_experiment(config, tmp_path / "whole")

    def signal_at_3(stage: str, done: int, total: int, row: dict) -> None:
        if done == 3:
            os.kill(os.getpid(), sig)

    with interrupts.handle_signals(), pytest.raises(interrupts.Interrupted, match="iteration 3"):
        run_experiment(config, tmp_path / "cut", signal_at_3)
    run_experiment(config, tmp_path / "cut", resume=True)
    lam = [(tmp_path / d / "lambdas.csv").read_text() for d in ("whole", "cut")]
    assert lam[0].count("\n") == 1 + 6 * 3  # header, then iterations 0..5 of 3 variants
    assert lam[0] == lam[1]
    results = [json.loads((tmp_path / d / "results.json").read_text()) for d in ("whole", "cut")]
    assert results[0]["lambda_final"] == results[1]["lambda_final"]


def test_resume_needs_a_checkpoint_and_the_same_config(tmp_path):
    config = load_concurrent_config(None, [*TINY, "references=[]"], "noise")
    with pytest.raises(L2OError, match="nothing to resume"):
        run_experiment(config, tmp_path, resume=True)
    run_experiment(config, tmp_path)
    other = load_concurrent_config(None, [*TINY, "references=[]", "logit_scale=3"], "noise")
    with pytest.raises(L2OError, match="logit_scale"):
        run_experiment(other, tmp_path, resume=True)


def test_second_order_is_a_one_line_error(capsys):
    assert main(["concurrent", "noise", "--set", "second_order=true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: second_order") and err.count("\n") == 1


def test_an_attack_is_an_initializer_with_an_honest_mean_oracle(tmp_path):
    over = [
        "iterations=2",
        "batch_size=2",
        "horizon=4",
        "truncation=2",
        "val_every=2",
        "val_instances=2",
        "eval_instances=2",
        "trials=2",
        "tune_instances=2",
        "options.k=4",
        "options.f=1",
        "references=['oracle', 'median']",
        "baselines=['adam']",
    ]
    config = load_concurrent_config(None, over, "signflip", task="quadratic")
    results = run_experiment(config, tmp_path)
    assert set(results["optimizers"]) == {"softmax", "oracle", "median", "adam"}
    assert results["clean_slot"] is None and len(results["slots"]) == 4


def test_the_seed_spread_benchmark_runs_one_path_when_asked(tmp_path, monkeypatch, capsys):
    import runpy
    import sys

    script = Path(__file__).parent.parent / "benchmarks" / "concurrent_seed_spread.py"
    out = tmp_path / "rows.json"
    argv = ["spread", "noise", "--seeds", "0", "--paths", "eager", "--json", str(out)]
    monkeypatch.setattr(sys, "argv", argv + [x for kv in TINY for x in ("--set", kv)])
    threads = torch.get_num_threads()
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        torch.set_num_threads(threads)  # the script runs on one thread
    rows = json.loads(out.read_text())
    assert [(r["seed"], r["path"]) for r in rows] == [(0, "eager")]
    assert "eager: combiner/oracle median" in capsys.readouterr().out
