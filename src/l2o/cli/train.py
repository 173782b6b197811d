"""``l2o train TASK``: meta-train a learned optimizer on TASK's train split."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from l2o import checks
from l2o.cli.common import add_common, add_device, add_force, add_key_values, progress, say
from l2o.config import TrainConfig, load_config
from l2o.devices import backend_for, resolve_device
from l2o.errors import L2OError
from l2o.meta import distributed, meta_train
from l2o.meta.checkpoint import check_resumable
from l2o.meta.health import check_memory
from l2o.meta.watchdog import leave_without_teardown
from l2o.runfolder import open_run
from l2o.tasks import get_task


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="meta-train a learned optimizer on a task")
    parser.add_argument("task", help="task name (see `l2o list`)")
    parser.add_argument("--config", type=Path, help="TOML config file")
    add_key_values(parser, "--set", "overrides", "override a config key (repeatable)")
    parser.add_argument(
        "--resume", action="store_true", help="continue from OUT/checkpoint after an interruption"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="meta-train data-parallel over this many local processes "
        "(torch.distributed, gloo); batch_size must be a multiple",
    )
    parser.add_argument(
        "--worker-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --workers: stop the job when a worker makes no progress for this long while "
        f"the others wait (default ${distributed.TIMEOUT_ENV} or "
        f"{distributed.DEFAULT_TIMEOUT:.0f})",
    )
    add_device(parser, default=None)
    add_common(parser)
    add_force(parser)
    parser.set_defaults(
        run=run, on_interrupt="continue with the same command and --resume (OUT/checkpoint)"
    )


def run(args: argparse.Namespace) -> int:
    checks.integer("--workers", args.workers, 1, checks.max_threads())
    for item in args.overrides:
        key, _, value = item.partition("=")
        if key.strip() == "task" and value.strip().strip("\"'") != args.task:
            raise L2OError(
                f"--set {item} contradicts the task argument {args.task!r}; "
                "give the task once, as the argument"
            )
    overrides = [f"task={args.task!r}".replace("'", '"'), *args.overrides]
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.device is not None:
        overrides.append(f"device={json.dumps(args.device)}")
    config = load_config(args.config, overrides)
    family = get_task(config.task, config.task_options)  # fail early on a bad task or options
    check_memory(config, family.dim)
    backend = backend_for(resolve_device(config.device))  # and on a device this machine lacks
    out = args.out or Path("runs") / config.task
    if args.workers > 1 and config.batch_size % args.workers:
        raise L2OError(
            f"batch_size ({config.batch_size}) must be a multiple of --workers ({args.workers})"
        )
    if args.workers > 1:
        if backend == "nccl" and args.workers > torch.cuda.device_count():
            raise L2OError(
                f"--workers {args.workers} on {config.device}: one GPU per worker, and there are "
                f"{torch.cuda.device_count()}; use fewer workers or --device cpu"
            )
        if args.worker_timeout is not None and not args.worker_timeout > 0:
            raise L2OError(f"--worker-timeout must be > 0 seconds, got {args.worker_timeout}")
    with _run_folder(out, args) as folder:
        if folder.resume:
            check_resumable(out, config.to_dict())
        if args.workers > 1:
            distributed.spawn(
                args.workers,
                train_and_report,
                config,
                out,
                folder.resume,
                timeout=args.worker_timeout,
                backend=backend,
            )
        else:
            distributed.init_from_env(backend)  # a torchrun launch joins its process group here
            train_and_report(config, out, folder.resume)
        folder.finish()
    if args.workers <= 1 and torch.distributed.is_initialized():
        # A torchrun rank leaves as the workers of --workers do: gloo's teardown can abort it.
        torch.distributed.barrier()
        leave_without_teardown(0)
    return 0


def train_and_report(config: TrainConfig, out: Path, resume: bool) -> None:
    """Meta-train with a progress bar and a summary (on rank 0 of a distributed run)."""
    torch.set_num_threads(config.threads)  # here, in every worker process: an entry point
    rank, _ = distributed.rank_and_size()
    bar = progress(config.iterations, f"train {config.task}", disable=rank != 0)

    def on_iteration(row: dict[str, float]) -> None:
        postfix = {"meta_loss": f"{row['meta_loss']:.4g}"}
        if not math.isnan(row["val_loss"]):
            postfix["val_loss"] = f"{row['val_loss']:.4g}"
        bar.n = row["iteration"]
        bar.set_postfix(postfix, refresh=False)
        bar.update(0)

    _, history = meta_train(config, out_dir=out, resume=resume, callback=on_iteration)
    bar.close()
    if rank != 0:
        return
    wall = history.rows[-1]["wall_time"] if history.rows else 0.0
    say(
        f"trained {config.task}: best validation loss {history.best_val:.4g} at iteration "
        f"{history.best_iteration}, {history.skipped} skipped steps, {wall:.0f} s"
    )
    say(f"wrote {out}/optimizer.safetensors, config.json, metrics.csv, checkpoint/")


class _Follower:
    """The run folder as a torchrun rank other than 0 sees it: rank 0 locks and marks it."""

    def __init__(self, resume: bool) -> None:
        self.resume = resume

    def finish(self) -> None:
        pass


def _run_folder(out: Path, args: argparse.Namespace) -> Any:
    """``open_run`` on rank 0; the other ranks of a torchrun launch (any node) only follow."""
    if int(os.environ.get("RANK", "0")) > 0:
        return contextlib.nullcontext(_Follower(args.resume))
    return open_run(out, "train", resume=args.resume, force=args.force)
