"""``l2o compare TASK --optimizer OPT``: tuned baselines vs a learned optimizer, on test.

l2o compare quadratic --optimizer runs/quadratic --out runs/compare-quadratic
l2o compare digits-mlp --optimizer runs/digits-mlp --steps 200 --out runs/compare-digits
l2o compare digits-mlp --optimizer runs/digits-mlp --generalization all --out runs/gen
l2o compare quadratic --optimizer runs/quadratic --out runs/compare-quadratic --replot
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from l2o import checks
from l2o.cli.common import (
    add_common,
    add_device,
    add_force,
    add_key_values,
    progress,
    quiet_optuna,
    say,
)
from l2o.compare.comparison import (
    DEFAULT_BASELINES,
    Outcome,
    best_baseline,
    check_baselines,
    compare,
    default_storage,
    write_outcome,
)
from l2o.compare.generalization import (
    GROUPS,
    SETTINGS,
    Setting,
    read_rows,
    run_study,
    select_settings,
    write_table,
)
from l2o.compare.plots import replot
from l2o.config import apply_overrides
from l2o.devices import on_device, place_runners, resolve_device
from l2o.errors import L2OError
from l2o.evaluate import Runner, resolve_optimizer
from l2o.records import fmt_number as _num
from l2o.runfolder import open_run
from l2o.tasks import get_task


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "compare",
        help="tune the baselines on validation, then compare them with an optimizer on test",
        description="Tune every baseline with Optuna on the task's validation instances (stored "
        "in tuning.db and reused on reruns), then run the baselines and OPTIMIZER on the same "
        "test instances; write results.json, curves.csv and comparison.png.",
    )
    parser.add_argument("task", help="task name (see `l2o list`)")
    parser.add_argument(
        "--optimizer",
        required=False,
        help="the optimizer to compare: run folder, .safetensors, pretrained name, or "
        "NAME[:k=v,...] (required unless --replot)",
    )
    parser.add_argument(
        "--baselines",
        default=",".join(DEFAULT_BASELINES),
        help=f"comma-separated baselines to tune (default {','.join(DEFAULT_BASELINES)})",
    )
    parser.add_argument("--steps", type=int, default=100, help="optimizee steps (default 100)")
    parser.add_argument("--instances", type=int, default=100, help="test instances (default 100)")
    parser.add_argument(
        "--trials", type=int, default=100, help="Optuna trials per baseline study (default 100)"
    )
    parser.add_argument(
        "--tune-instances",
        type=int,
        default=64,
        help="validation instances per tuning trial (default 64)",
    )
    parser.add_argument(
        "--objective",
        choices=("mean", "median"),
        default="mean",
        help="what tuning minimises over the validation instances: the mean (default) or the "
        "median final loss",
    )
    parser.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL (default sqlite:///OUT/tuning.db; postgresql://... works too)",
    )
    parser.add_argument(
        "--generalization",
        default=None,
        metavar="LIST",
        help="also run the generalisation study: comma-separated settings or groups from "
        f"{', '.join([*GROUPS, *SETTINGS])} (horizon-Nx: N × the training horizon; "
        "suite: issue 10's generalisation suite)",
    )
    parser.add_argument(
        "--replot", action="store_true", help="redraw the figures from the files in --out only"
    )
    add_key_values(
        parser, "--task-option", "task_options", "task option, e.g. hidden=[40] (repeatable)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1; 2 cores are shared)"
    )
    add_device(parser)
    add_common(parser)
    add_force(parser)
    parser.set_defaults(
        run=run,
        on_interrupt="rerun the same command to continue (finished trials are kept in tuning.db)",
    )


def run(args: argparse.Namespace) -> int:
    out = args.out or Path("runs") / f"compare-{args.task}"
    settings = _settings(args)
    if args.replot:
        return _replot(out, settings)
    if not args.optimizer:
        raise L2OError("--optimizer is required (a run folder, pretrained name or baseline)")
    for flag in ("steps", "instances", "trials", "tune_instances"):
        checks.integer(f"--{flag.replace('_', '-')}", getattr(args, flag), 1, checks.MAX_SIZE)
    checks.threads("--threads", args.threads)
    if args.seed is not None:
        checks.seed("--seed", args.seed)
    torch.set_num_threads(args.threads)
    quiet_optuna()
    options = apply_overrides({}, args.task_options)
    device = resolve_device(args.device)
    family = on_device(get_task(args.task, options), device)  # validates the task first
    checks.instances_memory(family.name, max(args.instances, args.tune_instances), family.dim)
    learned = resolve_optimizer(args.optimizer)
    place_runners([learned], device)
    baselines = check_baselines(learned, args.baselines.split(","))
    seed = 0 if args.seed is None else args.seed
    with open_run(out, "compare", force=args.force) as run_folder:
        storage = args.storage or default_storage(out)
        _compare_all(
            args, family, options, learned, baselines, settings, out, storage, seed, device
        )
        run_folder.finish()
    return 0


def _compare_all(
    args: argparse.Namespace,
    family: Any,
    options: dict[str, Any],
    learned: Runner,
    baselines: list[str],
    settings: list[Setting],
    out: Path,
    storage: str,
    seed: int,
    device: torch.device,
) -> None:
    started = time.perf_counter()
    outcome = _compare(args, family, learned, baselines, args.steps, out, storage, seed)
    _report(outcome, write_outcome(out, outcome), out)

    if settings:
        bar = _TuningBar(len(baselines) * args.trials)

        def on_setting(setting: Setting, steps: int) -> None:
            say(f"== {setting.name}: {setting.description}, {steps} steps")
            bar.open(f"tuning {setting.name}")

        def on_result(setting: Setting, results: dict[str, Any], folder: Path) -> None:
            bar.close()
            _report(None, results, folder, draw=False)

        try:
            run_study(
                args.task,
                options,
                learned,
                baselines,
                settings,
                out,
                base_steps=args.steps,
                instances=args.instances,
                trials=args.trials,
                tune_instances=args.tune_instances,
                storage=storage,
                seed=seed,
                objective=args.objective,
                label=args.optimizer,
                device=device,
                on_setting=on_setting,
                on_result=on_result,
                on_trial=bar.on_trial,
                on_stage=bar.on_stage,
            )
        finally:
            bar.close()
        table = out / "generalization.md"
        say(table.read_text().rstrip())
        say(f"wrote {table} and generalization.json")
    say(f"done in {time.perf_counter() - started:.0f} s")


def _compare(
    args: argparse.Namespace,
    family: Any,
    learned: Runner,
    baselines: list[str],
    steps: int,
    out: Path,
    storage: str,
    seed: int,
) -> Outcome:
    bar = _TuningBar(len(baselines) * args.trials)
    bar.open(f"tuning {family.name}")
    try:
        outcome = compare(
            family,
            learned,
            baselines,
            steps=steps,
            instances=args.instances,
            trials=args.trials,
            tune_instances=args.tune_instances,
            storage=storage,
            seed=seed,
            on_trial=bar.on_trial,
            on_stage=bar.on_stage,
            objective=args.objective,
        )
    finally:
        bar.close()
    outcome.settings["optimizer"] = args.optimizer
    return outcome


class _TuningBar:
    """One progress bar per comparison, fed by the tuning callbacks."""

    def __init__(self, total: int) -> None:
        self.total, self.bar, self.counted = total, None, {}

    def open(self, description: str) -> None:
        self.close()
        self.bar, self.counted = progress(self.total, description, unit="trial"), {}

    def on_trial(self, baseline: str, finished: int, target: int) -> None:
        # Trials a reused study already had count as done when its first new trial ends.
        if self.bar is not None:
            self.bar.update(min(finished, target) - self.counted.get(baseline, 0))
        self.counted[baseline] = min(finished, target)

    def on_stage(self, stage: str) -> None:
        if self.bar is not None:
            self.bar.set_description(stage)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _report(
    outcome: Outcome | None, results: dict[str, Any], out: Path, draw: bool = True
) -> dict[str, Any]:
    """Draw comparison.png from the files just written (unless done) and print the summary."""
    if draw:
        replot(out)
    learned = results.get("learned")
    for name, stats in results["optimizers"].items():
        tuning = results["tuning"].get(name)
        note = " (learned)" if name == learned else ""
        if tuning:
            hp = ", ".join(f"{k}={_num(v)}" for k, v in sorted(stats["hyperparameters"].items()))
            note = f" [{hp}; {tuning['trials']} trials, {tuning['new_trials']} new]"
        say(
            f"{name:>10}: median final loss {_num(stats['final_loss_median'])} "
            f"[{_num(stats['final_loss_q25'])}, {_num(stats['final_loss_q75'])}], "
            f"mean {_num(stats['final_loss_mean'])}, {stats['ms_per_step']:.3f} ms/step{note}"
        )
    best = best_baseline(results)
    if learned in results["optimizers"] and best:
        mine = results["optimizers"][learned]["final_loss_median"]
        theirs = results["optimizers"][best]["final_loss_median"]
        if mine is not None and theirs:
            say(
                f"{learned} / best tuned baseline ({best}): {mine / theirs:.3g} (median final loss)"
            )
    say(f"wrote {out}/results.json, curves.csv, comparison.png")
    return results


def _replot(out: Path, settings: list[Setting]) -> int:
    say(f"wrote {replot(out)}")
    if settings:
        for setting in settings:
            replot(out / "generalization" / setting.name)
        table = write_table(out, read_rows(out, settings))
        say(table.read_text().rstrip())
        say(f"wrote {table} and the figures of {len(settings)} settings")
    return 0


def _settings(args: argparse.Namespace) -> list[Setting]:
    if not args.generalization:
        return []
    return select_settings(args.generalization.split(","), args.task)
