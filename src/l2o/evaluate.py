"""Evaluation: run learned optimizers and baselines on the same test instances, record curves.

``OPTIMIZER`` strings name a run folder, a ``.safetensors`` file, a pretrained optimizer, or a
baseline ``NAME[:key=value,...]``; :func:`resolve_optimizer` turns one into a :class:`Runner`.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from l2o.baselines import BASELINES, Baseline, parse_baseline
from l2o.errors import L2OError
from l2o.meta.unroll import run_learned, task_observer
from l2o.records import CURVE_FIELDS, CURVES_FILE, RESULTS_FILE, write_csv, write_results
from l2o.resolve import load
from l2o.tasks import TaskBatch, TaskFamily


class Runner(ABC):
    """Something that optimizes a batch of task instances for a number of steps."""

    name: str
    hyperparameters: dict[str, Any]

    @abstractmethod
    def run(self, batch: TaskBatch, steps: int) -> Tensor:
        """``batch.eval_loss(θ_t)`` for t = 0..steps, shape ``(steps + 1, B)``."""


class LearnedRunner(Runner):
    def __init__(self, net: nn.Module, name: str = "l2o") -> None:
        self.net, self.name = net, name
        self.hyperparameters = dict(getattr(net, "arch_config", dict)())

    def run(self, batch: TaskBatch, steps: int) -> Tensor:
        curve, _ = run_learned(
            self.net,
            batch.init_params(),
            task_observer(batch),
            steps,
            record=batch.eval_loss,
            layout=batch.layout,
        )
        return curve


class BaselineRunner(Runner):
    def __init__(
        self, baseline: Baseline, hyperparameters: dict[str, Any], name: str | None = None
    ) -> None:
        self.baseline, self.hyperparameters = baseline, dict(hyperparameters)
        self.name = name or baseline.name

    def run(self, batch: TaskBatch, steps: int) -> Tensor:
        curve = [batch.eval_loss(theta) for theta in self.trajectory(batch, steps)]
        return torch.stack(curve)

    def final_loss(self, batch: TaskBatch, steps: int) -> Tensor:
        """``batch.eval_loss(θ_steps)``, shape ``(B,)``: what tuning needs, without the curve.

        Stops early once every instance has diverged (the result is then non-finite anyway).
        """
        theta = batch.init_params()
        for theta in self.trajectory(batch, steps):
            if (~torch.isfinite(theta)).any(dim=1).all():
                break
        return batch.eval_loss(theta)

    def trajectory(self, batch: TaskBatch, steps: int) -> Iterator[Tensor]:
        """θ_0, ..., θ_steps on the batch: one loop for curves and tuning.

        Each θ is a detached view of the live tensor, updated in place: use it before the next.
        """
        theta = batch.init_params().requires_grad_(True)
        opt = self.baseline.make([theta], self.hyperparameters)
        yield theta.detach()
        for step in range(steps):
            _, grad = batch.loss_and_grad(theta.detach(), step)
            theta.grad = grad
            opt.step()
            yield theta.detach()


def resolve_optimizer(spec: str) -> Runner:
    """A run folder, a ``.safetensors`` file, a pretrained name, or a baseline spec.

    The one resolver of OPTIMIZER strings: every command uses it, and its learned optimizers
    come from :func:`l2o.load` (an existing path wins over a pretrained name of the same text).
    """
    from l2o import pretrained

    if not isinstance(spec, str) or not spec.strip():
        raise L2OError(
            f"OPTIMIZER must be a run folder, file, pretrained name or baseline, got {spec!r}"
        )
    path = Path(spec)
    if path.exists() or spec.endswith(".safetensors") or spec in pretrained.names():
        net = load(spec)
        kind = str(getattr(net, "arch_config", dict)().get("optimizer", ""))
        if kind.startswith("concurrent"):
            raise L2OError(
                f"{spec} holds a concurrent optimizer ({kind}: K gradients per coordinate); "
                "it runs inside `l2o concurrent`, not as a single-task OPTIMIZER"
            )
        return LearnedRunner(net, name="l2o" if path.exists() else f"l2o-{spec}")
    if spec.partition(":")[0].lower() in BASELINES:
        baseline, hparams = parse_baseline(spec)
        return BaselineRunner(baseline, hparams)
    raise L2OError(
        f"unknown optimizer {spec!r}: give a run folder, a .safetensors file, a pretrained name "
        f"({', '.join(pretrained.names()) or 'none installed'}) or a baseline "
        f"NAME[:key=value,...] with NAME in {', '.join(BASELINES)}"
    )


@dataclass
class Evaluation:
    """Curves ``(steps + 1, instances)`` per optimizer, on the same instances."""

    task: str
    task_options: dict[str, Any]
    split: str
    steps: int
    instances: int
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    hyperparameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    ms_per_step: dict[str, float] = field(default_factory=dict)


def evaluate(
    family: TaskFamily,
    runners: list[Runner],
    steps: int = 100,
    instances: int = 100,
    split: str = "test",
    timing_steps: int = 20,
) -> Evaluation:
    """Run every runner on instances 0..instances-1 of ``split`` for ``steps`` steps.

    ``ms_per_step`` is wall time per optimizee step at batch size 1 (one instance), measured
    over ``timing_steps`` steps after a warm-up.
    """
    if steps < 1 or instances < 1:
        raise L2OError(f"steps and instances must be >= 1, got {steps} and {instances}")
    result = Evaluation(family.name, family.options(), split, steps, instances)
    indices = list(range(instances))
    for runner in runners:
        if runner.name in result.curves:
            raise L2OError(f"two optimizers are both named {runner.name!r}")
        with torch.no_grad():
            curve = runner.run(family.sample(split, indices), steps)
        result.curves[runner.name] = curve.cpu().numpy().astype(np.float64)
        result.hyperparameters[runner.name] = runner.hyperparameters
        result.ms_per_step[runner.name] = time_per_step(runner, family, split, timing_steps)
    return result


def time_per_step(
    runner: Runner, family: TaskFamily, split: str, steps: int, repeats: int = 3
) -> float:
    """Milliseconds per optimizee step on one instance (gradient + update + loss record).

    The fastest of ``repeats`` timed runs: on a shared machine other processes only ever add
    time, so the minimum is the least contaminated estimate.
    """
    return best_ms_per_step(lambda: family.sample(split, [0]), runner.run, steps, repeats)


def best_ms_per_step(
    prepare: Callable[[], Any], run: Callable[[Any, int], object], steps: int, repeats: int = 3
) -> float:
    """Milliseconds per step of ``run(prepare(), steps)`` (``prepare`` untimed), the fastest of
    ``repeats`` timed calls after a 2-step warm-up: what every ``ms_per_step`` of l2o reports,
    the concurrent nets' included."""
    best = math.inf
    with torch.no_grad():
        run(prepare(), 2)  # warm-up
        for _ in range(max(1, repeats)):
            batch = prepare()
            _sync_gpu()
            start = time.perf_counter()
            run(batch, steps)
            _sync_gpu()  # GPU kernels run asynchronously: time them to their end
            best = min(best, time.perf_counter() - start)
    return best * 1000.0 / steps


def _sync_gpu() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def summarize(final: np.ndarray) -> dict[str, float | int | None]:
    """Mean, median and quartiles of final losses; diverged (non-finite) runs count as +inf."""
    values = np.where(np.isfinite(final), final, np.inf)
    diverged = int((~np.isfinite(final)).sum())

    def num(x: float) -> float | None:
        return float(x) if math.isfinite(x) else None

    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf inside quantiles: diverged
        return {
            "final_loss_mean": num(values.mean()),
            "final_loss_median": num(np.median(values)),
            "final_loss_q25": num(np.quantile(values, 0.25)),
            "final_loss_q75": num(np.quantile(values, 0.75)),
            "diverged": diverged,
        }


def results_dict(evaluation: Evaluation, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    optimizers = {}
    for name, curve in evaluation.curves.items():
        optimizers[name] = {
            **summarize(curve[-1]),
            "hyperparameters": evaluation.hyperparameters[name],
            "ms_per_step": evaluation.ms_per_step[name],
        }
    return {
        "task": evaluation.task,
        "task_options": evaluation.task_options,
        "split": evaluation.split,
        "steps": evaluation.steps,
        "instances": evaluation.instances,
        "optimizers": optimizers,
        **(extra or {}),
    }


def write_evaluation(
    out_dir: str | Path, evaluation: Evaluation, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``results.json`` and long-format ``curves.csv`` (optimizer,instance,step,loss)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = results_dict(evaluation, extra)
    results = write_results(out / RESULTS_FILE, results)
    write_csv(out / CURVES_FILE, CURVE_FIELDS, curve_rows(evaluation.curves), digits=8)
    return results


def curve_rows(curves: dict[str, np.ndarray]) -> Iterator[dict[str, Any]]:
    """Long-format rows (optimizer, instance, step, loss) of ``(steps + 1, instances)`` curves."""
    for name, curve in curves.items():
        steps, instances = curve.shape
        for i in range(instances):
            for t in range(steps):
                yield {"optimizer": name, "instance": i, "step": t, "loss": float(curve[t, i])}
