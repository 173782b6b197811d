"""``l2o concurrent INITIALIZER``: meta-train a concurrent optimizer, record λ, test it.

l2o concurrent noise --out runs/noise                       # softmax λ on noisy least squares
l2o concurrent rotation --config configs/concurrent-rotation.toml --out runs/rotation
l2o concurrent poison --combiner attention --set options.rates=[0,0.3,0.6] --out runs/p
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from l2o.cli.common import (
    StageBars,
    add_common,
    add_device,
    add_force,
    add_key_values,
    quiet_optuna,
    say,
)
from l2o.concurrent.combiners import COMBINERS
from l2o.concurrent.experiment import check_experiment, load_concurrent_config, run_experiment
from l2o.devices import resolve_device
from l2o.errors import L2OError
from l2o.records import fmt_number as _num
from l2o.runfolder import open_run


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "concurrent", help="meta-train a concurrent optimizer on K optimizees, record λ"
    )
    parser.add_argument("initializer", help="noise, poison, shards, rotation or grid")
    parser.add_argument("--task", help="base task (default: quadratic for noise, else digits-mlp)")
    parser.add_argument(
        "--combiner", help=f"one of {', '.join(COMBINERS)} (default softmax)", default=None
    )
    parser.add_argument("--config", type=Path, help="TOML config file")
    add_key_values(
        parser,
        "--set",
        "overrides",
        "override a key: training (horizon=50), concurrent (clean_slot=2) "
        "or initializer option (options.levels=[0.01,0.5])",
    )
    add_device(parser)
    parser.add_argument(
        "--resume", action="store_true", help="continue from OUT/checkpoint after an interruption"
    )
    add_common(parser)
    add_force(parser)
    parser.set_defaults(
        run=run,
        on_interrupt="continue with the same command and --resume",
    )


def run(args: argparse.Namespace) -> int:
    if resolve_device(args.device).type != "cpu":
        # Its optimizee sets and slot permutations are built on the CPU (l2o.concurrent).
        raise L2OError(
            f"l2o concurrent runs on the CPU only so far, not {args.device}; use --device cpu"
        )
    config = load_concurrent_config(
        args.config, args.overrides, args.initializer, args.task, args.combiner, args.seed
    )
    out = args.out or Path("runs") / f"concurrent-{config.initializer}-{config.combiner}"
    check_experiment(config)  # bad options fail before --out is touched
    torch.set_num_threads(config.train.threads)
    quiet_optuna()  # the bars show the baselines' tuning trials
    bars = StageBars()

    def on_progress(stage: str, done: int, total: int, row: dict[str, float]) -> None:
        bars.update(stage, done, total, row.get("meta_loss"))

    with open_run(out, "concurrent", resume=args.resume, force=args.force) as folder:
        try:
            results = run_experiment(config, out, on_progress, resume=folder.mode == "resume")
        finally:
            bars.close()
        folder.finish()
    lam = results.get("lambda_final")
    if lam is not None:
        where = (
            f"clean slot {results['clean_slot']}"
            if results["clean_slot"] is not None
            else "slots shuffled per instance"
        )
        labels = [s["label"] for s in results["slots"]]
        say(
            f"{config.combiner} λ ({where}): "
            + ", ".join(f"{lbl}: {x:.3f}" for lbl, x in zip(labels, lam))
        )
    for name, stats in results["optimizers"].items():
        say(
            f"{name:>14}: clean test loss mean {_num(stats['final_loss_mean'])} "
            f"(median {_num(stats['final_loss_median'])})"
        )
    tuned = ", tuning.db" if results.get("tuning") and config.storage is None else ""
    say(
        f"wrote {out}/results.json, lambdas.csv, lambdas.png, optimizer.safetensors, "
        f"curves.csv{tuned}"
    )
    return 0
