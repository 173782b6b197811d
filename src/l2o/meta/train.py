"""The outer loop of meta-training: unroll, backpropagate each truncation window, step Adam.

    net, history = l2o.meta_train(TrainConfig(task="quadratic"), out_dir="runs/quadratic")

Each meta-iteration draws ``batch_size`` fresh training instances, runs the learned optimizer on
them for ``horizon`` steps, and after every ``truncation`` steps backpropagates the window's
meta-loss into the LSTM weights and takes one Adam step (the paper's truncated BPTT). Validation
on held-out instances keeps the best weights; checkpoints make the run resumable.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from l2o import interrupts
from l2o.config import VAL_METRICS, TrainConfig
from l2o.devices import on_device, resolve_device
from l2o.errors import L2OError
from l2o.meta import distributed
from l2o.meta.checkpoint import (
    RESUMABLE,
    VALIDATED_DIR,
    TrainingState,
    load_checkpoint,
    save_checkpoint,
    stop_if_interrupted,
)
from l2o.meta.health import check_iteration
from l2o.meta.horizons import HorizonSchedule
from l2o.meta.pes import pes_unroll_and_step
from l2o.meta.unroll import (
    Observe,
    run_learned,
    start_unroll,
    task_observer,
    truncation_window,
)
from l2o.nets import build_net
from l2o.records import append_metrics, atomic_write_text, read_metrics, write_metrics
from l2o.serialization import CONFIG_FILE, save_optimizer
from l2o.tasks import TaskBatch, TaskFamily, get_task, index_groups

log = logging.getLogger(__name__)


@dataclass
class MetaProblem:
    """What the loop trains on: how to draw a batch and how to observe it.

    The default (:func:`task_problem`) is a task family; the concurrent framework supplies its own
    (K optimizees per θ, clean loss as the objective) and reuses this loop unchanged.
    """

    sample: Callable[[str, list[int]], tuple[torch.Tensor, Observe, TaskBatch | None]]
    # evaluate(net, split, indices, steps) → mean final loss, for validation; when None, the
    # mean observed loss at the last step of an unroll of ``sample(split, indices)``.
    evaluate: Callable[..., float] | None = None
    # evaluate accepts metric="log_mean" (the task problem's does; the concurrent one's not)
    metrics: tuple[str, ...] = ("mean",)

    def final_loss(
        self, net: nn.Module, split: str, indices: list[int], steps: int, metric: str = "mean"
    ) -> float:
        if metric not in self.metrics:
            raise L2OError(
                f"val_metric = {metric!r} is not available here (only {', '.join(self.metrics)})"
            )
        if self.evaluate is not None:
            if metric == "mean":
                return self.evaluate(net, split, indices, steps)
            return self.evaluate(net, split, indices, steps, metric=metric)
        theta0, observe, _ = self.sample(split, indices)
        curve, _ = run_learned(net, theta0, observe, steps)  # concurrent: one tensor per θ
        return reduce_finals(curve[-1], metric)


def reduce_finals(finals: torch.Tensor, metric: str) -> float:
    """The validation score of final losses: their mean, or with ``log_mean`` their geometric
    mean (every factor of improvement counts alike, as with ``meta_loss = "log"``: a mean of
    losses spread over ten orders of magnitude is the few worst instances' and nothing else)."""
    if metric == "log_mean":
        return float(finals.double().clamp_min(1e-45).log().mean().exp())
    return float(finals.mean())


def task_problem(family: TaskFamily) -> MetaProblem:
    def sample(split: str, indices: list[int]):
        batch = family.sample(split, indices)
        return batch.init_params(), task_observer(batch), batch

    def evaluate(
        net: nn.Module, split: str, indices: list[int], steps: int, metric: str = "mean"
    ) -> float:
        finals = []
        for group in index_groups(family, indices):  # one group unless the family says so
            batch = family.sample(split, group)
            _, theta = run_learned(
                net, batch.init_params(), task_observer(batch), steps, layout=batch.layout
            )
            finals.append(batch.eval_loss(theta))
        return reduce_finals(torch.cat(finals), metric)

    return MetaProblem(sample, evaluate, metrics=VAL_METRICS)


@dataclass
class History:
    rows: list[dict[str, float]] = field(default_factory=list)
    best_val: float = math.inf
    best_iteration: int = -1
    skipped: int = 0


IterationCallback = Callable[[dict[str, float]], None]


def build_from_config(config: TrainConfig) -> nn.Module:
    """A freshly initialised learned optimizer for ``config`` (seeded by ``config.seed``)."""
    return build_net(config.net, seed=config.seed)


@interrupts.safe_points()  # Ctrl-C/SIGTERM stop after an iteration, with a checkpoint
def meta_train(
    config: TrainConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    callback: IterationCallback | None = None,
    problem: MetaProblem | None = None,
    net: nn.Module | None = None,
) -> tuple[nn.Module, History]:
    """Meta-train a learned optimizer; return the best network (on validation) and the history.

    Args:
        config: the run's configuration.
        out_dir: where ``config.json``, ``metrics.csv``, ``checkpoint/`` and
            ``optimizer.safetensors`` go (nothing is written when ``None``).
        resume: continue from ``out_dir/checkpoint`` (same config, ``iterations`` may grow).
        callback: called with each iteration's metrics row (the CLI's progress bar), before
            that iteration's checkpoint is written.
        problem: what to train on; defaults to ``config.task`` with ``config.task_options``.
        net: the network to train; defaults to :func:`build_from_config`.

    Inside a ``torch.distributed`` process group, each rank unrolls its share of the meta-batch
    and the meta-gradients are averaged (see :mod:`l2o.meta.distributed`); rank 0 alone writes
    files and calls ``callback``.

    Example:
        >>> cfg = TrainConfig(iterations=2, batch_size=4, horizon=10, truncation=5)
        >>> net, history = meta_train(cfg)
        >>> len(history.rows)
        2
    """
    device = resolve_device(config.device)
    if problem is None:
        if config.net.k != 1 or config.optimizer.startswith("concurrent-"):
            raise L2OError(
                f"{config.optimizer} combines K gradients per coordinate; a task gives one: "
                f"meta-train it with `l2o concurrent INITIALIZER --combiner ...`"
            )
        problem = task_problem(on_device(get_task(config.task, config.task_options), device))
    if net is None:
        net = build_from_config(config)
    net = net.to(device)  # built on the CPU first: the same initial weights on every device
    rank, size = distributed.rank_and_size()
    if config.batch_size % size:
        raise L2OError(
            f"batch_size ({config.batch_size}) must be a multiple of the number of "
            f"workers ({size}), so every worker unrolls as many instances"
        )
    if size > 1:
        distributed.broadcast_weights(net)
    meta_opt = torch.optim.Adam(net.parameters(), lr=config.meta_lr)
    run_dir = Path(out_dir) if out_dir is not None else None
    writer = run_dir if rank == 0 else None  # rank 0 alone writes
    history = History()
    training = TrainingState(0, math.inf, -1, 0, 0.0, _copy_weights(net))
    if run_dir is not None and resume:
        training, saved = load_checkpoint(run_dir, net, meta_opt)
        _check_same_config(saved, config)
        history.rows = read_metrics(run_dir, upto=training.iteration)
    if writer is not None:
        writer.mkdir(parents=True, exist_ok=True)
        # The same layout as the final config.json that save_optimizer writes beside the weights.
        info = {"architecture": net.arch_config(), "train_config": config.to_dict()}
        atomic_write_text(writer / CONFIG_FILE, json.dumps(info, indent=2, sort_keys=True))
        write_metrics(writer, history.rows)
    schedule = HorizonSchedule(config)  # the horizon of each unroll (fixed: the paper's)
    schedule.replay(history.rows)
    if config.estimator == "pes" and size > 1:
        raise L2OError('estimator = "pes" runs on one worker; use "bptt" with several')
    if config.estimator == "pes" and device.type != "cpu":
        raise L2OError('estimator = "pes" runs on the CPU so far; use "bptt" on a GPU')
    val_indices = list(range(config.val_instances))[rank::size]
    started = time.perf_counter() - training.elapsed
    for iteration in range(training.iteration, config.iterations):
        batch = range(iteration * config.batch_size, (iteration + 1) * config.batch_size)
        horizon = schedule.horizon(iteration)
        for group in meta_opt.param_groups:  # a function of the iteration: resumes exactly
            group["lr"] = meta_lr_at(config, iteration)
        step = pes_unroll_and_step if config.estimator == "pes" else _unroll_and_step
        meta_loss, grad_norm, ok = step(
            net,
            meta_opt,
            problem,
            distributed.shard(batch, rank, size),
            config,
            schedule.weights(horizon),
            horizon,
            iteration,
        )
        meta_loss = distributed.all_mean(meta_loss)
        training.skipped += 0 if ok else 1
        training.iteration = iteration + 1
        check_iteration(
            net, training.iteration, training.skipped, config.iterations, config.meta_lr
        )
        val_loss = math.nan
        if training.iteration % config.val_every == 0 or training.iteration == config.iterations:
            val_loss = _validate(net, problem, val_indices, schedule.val_horizon, config.val_metric)
            schedule.observe(val_loss)
            if val_loss < training.best_val:
                training.best_val, training.best_iteration = val_loss, training.iteration
                training.best_weights = _copy_weights(net)
            if writer is not None and math.isfinite(val_loss):
                # Every validated network stays (a few kB each), so another rule can pick the
                # kept one afterwards without retraining (scripts/select_validated.py).
                save_optimizer(
                    net,
                    writer / VALIDATED_DIR / f"{training.iteration:06d}",
                    extra={
                        "train_config": config.to_dict(),
                        "iteration": training.iteration,
                        "val_loss": val_loss,
                    },
                )
        training.elapsed = time.perf_counter() - started
        row = {
            "iteration": training.iteration,
            "meta_loss": meta_loss,
            "val_loss": val_loss,
            "grad_norm": grad_norm,
            "skipped": training.skipped,
            "wall_time": training.elapsed,
        }
        history.rows.append(row)
        if writer is not None:
            append_metrics(writer, row)
        # Before the checkpoint: whatever a callback records for this iteration is on disk
        # before a checkpoint of it can be (a kill in between leaves records ahead, never behind).
        if callback is not None and rank == 0:  # also without out_dir (in-memory runs)
            callback(row)
        saved = False
        if writer is not None and (
            training.iteration % config.checkpoint_every == 0
            or training.iteration == config.iterations
        ):
            save_checkpoint(writer, net, meta_opt, training, config.to_dict())
            saved = True
        # Every rank stops at the same iteration, whichever got the signal (or its launcher).
        stop = distributed.agree_on_stop(interrupts.pending())
        done = saved or writer is None  # rank 0 alone writes; every rank names the checkpoint
        stop_if_interrupted(run_dir, net, meta_opt, training, config.to_dict(), done, stop)
    history.best_val, history.best_iteration = training.best_val, training.best_iteration
    history.skipped = training.skipped
    if training.best_iteration >= 0:
        net.load_state_dict(training.best_weights)
    if writer is not None:
        save_optimizer(
            net,
            writer,
            extra={
                "train_config": config.to_dict(),
                "best_val_loss": training.best_val,
                "best_iteration": training.best_iteration,
                "iterations": training.iteration,
                "skipped": training.skipped,
                "train_seconds": training.elapsed,
            },
        )
    return net, history


def meta_lr_at(config: TrainConfig, iteration: int) -> float:
    """The meta-learning rate of meta-iteration ``iteration`` (from 0).

    ``"cosine"`` decays it from ``meta_lr`` to ``meta_lr / 10`` at the last iteration, so the
    late checkpoints that validation picks from move less from one to the next.
    """
    if config.meta_lr_schedule == "constant" or config.iterations <= 1:
        return config.meta_lr
    progress = iteration / (config.iterations - 1)
    final = config.meta_lr / 10
    return final + (config.meta_lr - final) * 0.5 * (1 + math.cos(math.pi * progress))


def _unroll_and_step(
    net: nn.Module,
    meta_opt: torch.optim.Optimizer,
    problem: MetaProblem,
    indices: list[int],
    config: TrainConfig,
    weights: torch.Tensor,
    horizon: int,
    iteration: int,
) -> tuple[float, float, bool]:
    """One meta-iteration: a full unroll of ``horizon`` steps, one Adam step per window.

    (``iteration`` is unused here: the signature is :func:`~l2o.meta.pes.pes_unroll_and_step`'s,
    which seeds its perturbations with it.)

    Returns the mean loss per step over the unroll, the last window's meta-gradient norm, and
    whether every window was finite (a non-finite window is skipped and ends the unroll).
    """
    theta0, observe, batch = problem.sample("train", indices)
    state = start_unroll(net, theta0, observe, batch.layout if batch is not None else None)
    total, count, grad_norm = 0.0, 0, 0.0
    while state.step < horizon:
        steps = min(config.truncation, horizon - state.step)
        objective, losses, end = truncation_window(
            net,
            state,
            observe,
            steps,
            weights,
            batch,
            config.second_order,
            config.meta_loss == "log",
            config.meta_loss_floor,
        )
        meta_opt.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(objective)) and bool(torch.isfinite(losses).all())
        if finite:
            objective.backward()
        if distributed.rank_and_size()[1] > 1:  # every rank must take the same decision
            finite = distributed.average_gradients(net, finite)
        if not finite:
            meta_opt.zero_grad(set_to_none=True)
            return _mean(total, count), math.nan, False
        params = [p for p in net.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip or math.inf)
        if not torch.isfinite(norm):
            meta_opt.zero_grad(set_to_none=True)
            return _mean(total, count), math.nan, False
        meta_opt.step()
        grad_norm = float(norm)
        total += float(losses.mean(1).sum())
        count += steps
        state = end.detach()
    return _mean(total, count), grad_norm, True


def _mean(total: float, count: int) -> float:
    return total / count if count else math.nan


def _validate(
    net: nn.Module, problem: MetaProblem, indices: list[int], steps: int, metric: str = "mean"
) -> float:
    """Final loss on validation instances, reduced by ``metric`` (this rank's share, averaged
    over ranks: for ``log_mean`` the logs are averaged, so any world size gives one score)."""
    value = problem.final_loss(net, "validation", indices, steps, metric) if indices else 0.0
    if metric == "log_mean" and indices:
        value = math.log(value) if value > 0 else -math.inf
        value = distributed.all_mean(value if not math.isnan(value) else math.inf, len(indices))
        value = math.exp(value) if value < math.inf else math.inf
    else:
        value = distributed.all_mean(value if math.isfinite(value) else math.inf, len(indices))
    return value if math.isfinite(value) else math.inf


def _copy_weights(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _check_same_config(saved: dict[str, Any], config: TrainConfig) -> None:
    current = json.loads(config.to_json())
    # a key newer than the checkpoint was at its default there (what the run did)
    defaults = json.loads(TrainConfig().to_json())
    saved = {**{k: v for k, v in defaults.items() if k not in saved}, **saved}
    keys = (set(saved) | set(current)) - set(RESUMABLE)
    differ = sorted(k for k in keys if saved.get(k) != current.get(k))
    if differ:
        raise L2OError(
            f"the checkpoint was written with a different config ({', '.join(differ)} differ); "
            "resume with the same config (only iterations and device may change) or use a new --out"
        )
