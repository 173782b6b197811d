"""``l2o evaluate OPTIMIZER TASK``: run an optimizer on test instances, write results."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from l2o import checks
from l2o.cli.common import add_common, add_device, add_force, add_key_values, say
from l2o.config import apply_overrides
from l2o.devices import on_device, place_runners, resolve_device
from l2o.evaluate import evaluate, resolve_optimizer, write_evaluation
from l2o.records import fmt_number as _num
from l2o.runfolder import open_run
from l2o.tasks import get_task


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("evaluate", help="run an optimizer on a task's test instances")
    parser.add_argument(
        "optimizer",
        nargs="+",
        help="run folder, .safetensors, pretrained name, or NAME[:k=v,...]; several may be given",
    )
    parser.add_argument("task", help="task name (see `l2o list`)")
    parser.add_argument("--steps", type=int, default=100, help="optimizee steps (default 100)")
    parser.add_argument("--instances", type=int, default=100, help="test instances (default 100)")
    add_key_values(
        parser, "--task-option", "task_options", "task option, e.g. hidden=[40] (repeatable)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    add_device(parser)
    add_common(parser)
    add_force(parser)
    parser.set_defaults(run=run, on_interrupt="rerun the same command")


def run(args: argparse.Namespace) -> int:
    checks.threads("--threads", args.threads)
    checks.integer("--steps", args.steps, 1, checks.MAX_SIZE)
    checks.integer("--instances", args.instances, 1, checks.MAX_SIZE)
    if args.seed is not None:
        checks.seed("--seed", args.seed)
    torch.set_num_threads(args.threads)
    options = apply_overrides({}, args.task_options)
    device = resolve_device(args.device)
    family = on_device(get_task(args.task, options), device)
    checks.instances_memory(family.name, args.instances, family.dim)
    runners = [resolve_optimizer(spec) for spec in args.optimizer]
    place_runners(runners, device)
    names = [r.name for r in runners]
    for spec, r in zip(args.optimizer, runners):
        if names.count(r.name) > 1:  # e.g. a learning-rate grid: name each by its spec
            r.name = spec
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(names))[:60]
    out = args.out or Path("runs") / f"evaluate-{args.task}-{slug}"
    with open_run(out, "evaluate", force=args.force) as folder:
        result = evaluate(family, runners, steps=args.steps, instances=args.instances)
        results = write_evaluation(out, result)
        folder.finish()
    for name, stats in results["optimizers"].items():
        say(
            f"{name:>16}: final loss mean {_num(stats['final_loss_mean'])}, median "
            f"{_num(stats['final_loss_median'])} [{_num(stats['final_loss_q25'])}, "
            f"{_num(stats['final_loss_q75'])}], {stats['ms_per_step']:.3f} ms/step"
        )
    say(f"wrote {out}/results.json, curves.csv")
    return 0
