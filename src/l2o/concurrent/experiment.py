"""A concurrent experiment end to end: train a combiner, record λ, test it against references.

    results = run_experiment(load_concurrent_config(None, ["combiner=softmax"], "noise"), "runs/c")

1. build K optimizees with an initializer and put the clean one in a random slot (per run, or
   per instance for ``attention``);
2. meta-train the combiner with the core loop on the clean objective, recording λ every
   meta-iteration (``lambdas.csv``, drawn as ``lambdas.png``);
3. meta-train each reference (``mean``, ``median``, ``trimmed-mean``, ``oracle``: the
   single-gradient LSTM on one combined gradient) with the same config and seed, and tune each
   baseline (``adam``, ``momentum``, ...: on the mean gradient) with ``l2o compare``'s Optuna
   tuning on validation instances (:mod:`l2o.concurrent.baselines`; the study in ``tuning.db``);
4. run everything on the same test instances, scored on clean held-out data (``results.json``,
   ``curves.csv``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from l2o import checks, interrupts
from l2o.baselines import BASELINES
from l2o.compare.comparison import DEFAULT_BASELINES, Outcome, tuning_storage
from l2o.compare.tuning import OBJECTIVES, redact
from l2o.concurrent.attacks import AttackSet
from l2o.concurrent.baselines import compare_baselines
from l2o.concurrent.combiners import COMBINERS, ConcurrentNet, build_combiner
from l2o.concurrent.initializers import ConcurrentSet, build_set, default_task
from l2o.concurrent.plots import plot_lambdas
from l2o.concurrent.problem import SLOT_MODES, ConcurrentProblem
from l2o.config import TrainConfig, apply_overrides, config_from_dict, read_toml
from l2o.errors import L2OError
from l2o.evaluate import Evaluation, best_ms_per_step, write_evaluation
from l2o.meta.health import check_memory
from l2o.meta.train import meta_train
from l2o.meta.unroll import run_learned
from l2o.records import (
    LAMBDA_DIGITS,
    LAMBDAS_FILE,
    append_lambda_rows,
    read_lambda_rows,
    write_json,
    write_lambda_rows,
)
from l2o.serialization import save_optimizer
from l2o.tasks import task_train_defaults

log = logging.getLogger(__name__)

REFERENCES = ("mean", "median", "trimmed-mean", "oracle")


@dataclass(frozen=True)
class ConcurrentConfig:
    """A concurrent experiment. Keys not listed here go to the training config (``train``)."""

    initializer: str = "noise"  # how the K optimizees are built (see `l2o list`)
    options: Mapping[str, Any] = field(default_factory=dict)  # the initializer's, e.g. levels
    combiner: str = "softmax"  # the concurrent net trained and recorded
    logit_scale: float = 10.0  # softmax: λ = softmax(logit_scale · w), how fast λ may move
    clean_slot: int = -1  # -1: random per run (from the seed); i: force slot i (fixed mode)
    slot_mode: str = "auto"  # fixed | shuffle (per instance) | auto (shuffle for attention)
    references: tuple[str, ...] = REFERENCES  # meta-trained and tested beside the combiner
    eval_instances: int = 64  # test instances
    eval_steps: int = 0  # optimizee steps at test time (0: the training horizon)
    # hand-designed baselines on the mean gradient, tuned as `l2o compare` tunes them (same keys)
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    trials: int = 20  # Optuna trials each baseline's study should reach
    tune_instances: int = 32  # validation instances per trial
    objective: str = "mean"  # what tuning minimises: the mean or median final clean loss
    storage: str | None = None  # Optuna storage URL; unset: OUT/tuning.db (in memory without OUT)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.options, Mapping):
            raise L2OError(f"options must be a table of initializer options, got {self.options!r}")
        if not isinstance(self.train, TrainConfig):
            raise L2OError(f"train must be a TrainConfig, got {type(self.train).__name__}")
        object.__setattr__(self, "options", dict(self.options))
        checks.fields(
            self,
            {
                "clean_slot": (-1, 1000),
                "eval_instances": (1, checks.MAX_SIZE),
                "trials": (1, checks.MAX_SIZE),
                "tune_instances": (1, checks.MAX_SIZE),
            },
        )
        moved = [r for r in _as_list(self.references) if r in BASELINES]
        if moved:  # `adam` was a reference before the baselines went through l2o compare
            raise L2OError(
                f"{', '.join(moved)} in references: hand-designed optimizers are tuned "
                "baselines now; list them in baselines (e.g. baselines=['adam', 'momentum'])"
            )
        refs = checks.names("references", self.references, REFERENCES) if self.references else ()
        object.__setattr__(self, "references", refs)
        known = tuple(BASELINES)
        names = checks.names("baselines", self.baselines, known) if self.baselines else ()
        object.__setattr__(self, "baselines", tuple(dict.fromkeys(names)))
        checks.text("objective", self.objective, OBJECTIVES)
        if self.storage is not None:
            checks.text("storage", self.storage)
        default_task(self.initializer)  # validates the name
        if self.combiner not in COMBINERS:
            raise L2OError(f"unknown combiner {self.combiner!r}; known: {', '.join(COMBINERS)}")
        if self.slot_mode not in (*SLOT_MODES, "auto"):
            raise L2OError(f"slot_mode must be fixed, shuffle or auto, got {self.slot_mode!r}")
        if not self.logit_scale > 0:
            raise L2OError(f"logit_scale must be > 0, got {self.logit_scale}")
        if self.eval_instances < 1 or self.eval_steps < 0:
            raise L2OError("eval_instances must be >= 1 and eval_steps >= 0 (0: the horizon)")
        if self.train.second_order:
            raise L2OError(
                "second_order = true does not apply to the concurrent framework: the meta-loss "
                "is the clean objective, which the combiner never differentiates through; "
                "set second_order = false"
            )

    @property
    def mode(self) -> str:
        if self.slot_mode != "auto":
            return self.slot_mode
        return "shuffle" if self.combiner == "attention" else "fixed"

    @property
    def steps(self) -> int:
        return self.eval_steps or self.train.horizon

    def to_dict(self) -> dict[str, Any]:
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "train"}
        return {
            **own,
            "references": list(self.references),
            "baselines": list(self.baselines),
            "storage": None if self.storage is None else redact(self.storage),  # no password
            "train": self.train.to_dict(),
        }


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",")]
    return list(value) if isinstance(value, (list, tuple)) else []


_OWN_KEYS = {f.name for f in dataclasses.fields(ConcurrentConfig)} - {"train"}

# Per base task, what `l2o concurrent INITIALIZER` uses unless told otherwise, so that the
# defaults (a combiner and four references meta-trained, the baselines tuned) finish within 5
# minutes on a shared 2-core machine: the quadratic's are configs/concurrent-noise.toml's; digits
# get 15 of the 40 iterations of configs/concurrent-poison.toml (softmax λ ≈ 0.98 on the clean
# slot there).
CONCURRENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "quadratic": {
        "batch_size": 32,
        "horizon": 100,
        "truncation": 20,
        "iterations": 100,
        "val_every": 5,
        "val_instances": 32,
        "checkpoint_every": 25,
    },
    "digits-mlp": {
        "batch_size": 4,
        "horizon": 40,
        "truncation": 10,
        "iterations": 15,
        "val_every": 15,
        "val_instances": 8,
        "checkpoint_every": 5,
        "eval_instances": 16,
        "tune_instances": 16,
    },
}


def load_concurrent_config(
    path: str | Path | None,
    overrides: Iterable[str] = (),
    initializer: str | None = None,
    task: str | None = None,
    combiner: str | None = None,
    seed: int | None = None,
) -> ConcurrentConfig:
    """TOML file (optional) + ``key=value`` overrides + the CLI's positional choices.

    Example:
        >>> cfg = load_concurrent_config(None, ["horizon=20", "options.levels=[0.1, 1]"], "noise")
        >>> cfg.options, cfg.train.horizon, cfg.train.task
        ({'levels': [0.1, 1]}, 20, 'quadratic')
    """
    values = read_toml(path) if path is not None else {}
    values = apply_overrides(values, overrides)
    if "adam_lrs" in values:
        raise L2OError(
            "adam_lrs is gone: Adam and the other baselines are tuned with Optuna as in "
            "`l2o compare`; drop adam_lrs and set trials=N (and baselines=[...]) instead"
        )
    if initializer is not None:
        values["initializer"] = initializer
    if combiner is not None:
        values["combiner"] = combiner
    if task is not None:
        if values.get("task", task) != task:
            raise L2OError(
                f"task={values['task']!r} contradicts --task {task!r}; give the task once"
            )
        values["task"] = task
    if seed is not None:
        values["seed"] = seed
    own = {k: v for k, v in values.items() if k in _OWN_KEYS}
    rest = {k: v for k, v in values.items() if k not in _OWN_KEYS}
    rest.setdefault("task", default_task(own.get("initializer", "noise")))
    # the rule of l2o.config.load_config: the task's recommended settings first (digits: 8
    # instances per meta-iteration, not 128), then the concurrent ones (K nets of K gradients
    # each: smaller still), then the file, then the overrides
    task = str(rest["task"])
    smaller = CONCURRENT_DEFAULTS.get(task, {})
    own = {k: v for k, v in smaller.items() if k in _OWN_KEYS} | own
    rest = {
        **task_train_defaults(task),
        **{k: v for k, v in smaller.items() if k not in _OWN_KEYS},
        **rest,
    }
    try:
        return ConcurrentConfig(**own, train=config_from_dict(rest))
    except TypeError as exc:
        raise L2OError(f"invalid concurrent config: {exc}") from None


def check_experiment(config: ConcurrentConfig) -> ConcurrentSet:
    """Build the experiment's optimizee set, refusing what cannot run (before anything runs)."""
    train = config.train
    cset = build_set(config.initializer, train.task, train.task_options, config.options)
    has_oracle = cset.clean is not None or isinstance(cset, AttackSet)
    if config.combiner == "oracle" and not has_oracle:
        raise L2OError(
            f"combiner oracle needs a clean optimizee, and {config.initializer} has none; "
            "pick another combiner"
        )
    check_memory(train, cset.family.dim, cset.k)
    if config.clean_slot >= cset.k:
        raise L2OError(
            f"clean_slot must be -1 (random) or a slot in 0..{cset.k - 1}, got {config.clean_slot}"
        )
    return cset


Progress = Callable[[str, int, int, dict[str, float]], None]  # (stage, done, total, row)


def run_experiment(
    config: ConcurrentConfig,
    out_dir: str | Path | None = None,
    progress: Progress | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train, record λ, test against the references; write everything into ``out_dir``.

    With ``resume``, the combiner's meta-training continues from ``out_dir/checkpoint`` (same
    config; ``iterations`` may grow) and ends with the weights of an uninterrupted run; the
    references, trained without checkpoints, are trained again from their seed.

    Returns the ``results.json`` dictionary.
    """
    train = config.train
    cset = check_experiment(config)
    out = Path(out_dir) if out_dir is not None else None
    previous: list[dict[str, Any]] = []
    if resume:
        previous = _resumable(config, out)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "concurrent.json", config.to_dict())
    nets: dict[str, ConcurrentNet] = {}
    problems: dict[str, ConcurrentProblem] = {}
    train_seconds: dict[str, float] = {}
    lambda_rows: list[dict[str, Any]] = []

    names = [config.combiner] + [r for r in config.references if r != config.combiner]
    has_oracle = cset.clean is not None or isinstance(cset, AttackSet)
    if not has_oracle and "oracle" in names:
        names.remove("oracle")  # no clean optimizee (e.g. shards): nothing to be an oracle of
    for name in names:
        main = name == config.combiner
        net = build_combiner(name, cset.k, seed=train.seed, **_arch(train, config))
        mode = config.mode if main else "fixed"
        clean_slot = None if config.clean_slot < 0 else config.clean_slot
        problem = ConcurrentProblem(cset, net, train.seed, mode, clean_slot)
        recorder = LambdaRecorder(cset, problem, net) if main else None
        if recorder is not None:
            lambda_rows.extend(previous or recorder.initial())
            if out is not None:
                write_lambdas(out, lambda_rows)  # drops rows after the checkpoint resumed from

        def on_row(row: dict[str, float], name: str = name, recorder=recorder) -> None:
            if recorder is not None:
                rows = recorder.record(int(row["iteration"]))
                lambda_rows.extend(rows)
                if out is not None:  # before the iteration's checkpoint, as metrics.csv is
                    append_lambda_rows(out / LAMBDAS_FILE, rows)
            if progress is not None:
                progress(f"train {name}", int(row["iteration"]), train.iterations, row)

        net, history = meta_train(
            train,
            out_dir=out if main else None,
            resume=resume and main,
            problem=problem.meta_problem(),
            net=net,
            callback=on_row,
        )
        nets[name], problems[name] = net, problem
        train_seconds[name] = history.rows[-1]["wall_time"] if history.rows else 0.0
        if main and out is not None:
            save_optimizer(
                net,
                out,
                extra={
                    "train_config": train.to_dict(),
                    "concurrent": config.to_dict(),
                    "labels": cset.labels,
                    "slot_order": problem.fixed.tolist(),
                    "best_val_loss": history.best_val,
                    "best_iteration": history.best_iteration,
                    "train_seconds": train_seconds[name],
                },
            )

    interrupts.stop_if_requested("stopped after training; nothing is resumed")
    outcome = tune_and_test_baselines(config, cset, out, progress)

    if progress is not None:
        progress("test", 0, 1, {})
    evaluation, lambda_test = test_all(cset, nets, problems, config.eval_instances, config.steps)
    baselines_extra: dict[str, Any] = {"adam_lr": None}
    if outcome is not None:  # the baselines ran on the same test instances: one table
        for key in ("curves", "hyperparameters", "ms_per_step"):
            getattr(evaluation, key).update(getattr(outcome.evaluation, key))
        adam = outcome.tuning.get("adam")
        baselines_extra = {
            "comparison": outcome.settings,
            "tuning": {name: t.record() for name, t in outcome.tuning.items()},
            "adam_lr": None if adam is None else adam.hyperparameters["lr"],  # as before
        }
    main_problem = problems[config.combiner]
    results_extra = {
        "initializer": config.initializer,
        "initializer_options": cset.options(),
        "combiner": config.combiner,
        "slot_mode": config.mode,
        "clean_variant": cset.clean,
        "clean_slot": main_problem.clean_slot if config.mode == "fixed" else None,
        "slots": _slots(cset, main_problem, config.mode),
        "lambda_final": _final_lambda(lambda_rows, cset, main_problem, config.mode),
        "lambda_test": lambda_test,
        "train_seconds": train_seconds,
        "train_iterations": train.iterations,
        "k": cset.k,
        **baselines_extra,
    }
    if out is None:
        from l2o.evaluate import results_dict

        return results_dict(evaluation, results_extra)
    results = write_evaluation(out, evaluation, results_extra)
    write_lambdas(out, lambda_rows)
    plot_lambdas(out, title=f"{config.initializer} on {train.task}: {config.combiner} λ")
    return results


def tune_and_test_baselines(
    config: ConcurrentConfig,
    cset: ConcurrentSet,
    out: Path | None,
    progress: Progress | None = None,
) -> Outcome | None:
    """Tune the config's baselines on the mean gradient (validation), run them on test.

    The study lives in ``config.storage`` (default ``out/tuning.db``): a rerun, or ``--resume``,
    reuses its finished trials and only adds the missing ones, as ``l2o compare`` does.
    """
    if not config.baselines:
        return None
    with tuning_storage(config.storage, out) as storage:
        return _tune_and_test(config, cset, storage, progress)


def _tune_and_test(
    config: ConcurrentConfig, cset: ConcurrentSet, storage: str, progress: Progress | None
) -> Outcome:
    def on_trial(name: str, done: int, total: int) -> None:
        if progress is not None:
            progress(f"tune {name}", done, total, {})

    def on_stage(stage: str) -> None:
        if progress is not None and not stage.startswith("tuning "):  # on_trial draws those
            progress(stage, 0, 1, {})

    return compare_baselines(
        cset,
        config.baselines,
        steps=config.steps,
        instances=config.eval_instances,
        trials=config.trials,
        tune_instances=config.tune_instances,
        storage=storage,
        seed=config.train.seed,
        objective=config.objective,
        on_trial=on_trial,
        on_stage=on_stage,
    )


def _resumable(config: ConcurrentConfig, out: Path | None) -> list[dict[str, Any]]:
    """Check that ``out`` holds a checkpoint of this experiment; its λ record up to it."""
    from safetensors import safe_open

    from l2o.meta.checkpoint import checkpoint_path

    if out is None or not checkpoint_path(out).is_file():
        raise L2OError(f"nothing to resume: {out} has no checkpoint/ (run without --resume)")
    saved = json.loads((out / "concurrent.json").read_text())
    current = config.to_dict()
    differ = sorted(
        k
        for k in set(saved) | set(current)
        if k != "train" and json.dumps(saved.get(k)) != json.dumps(current.get(k))
    )
    if differ:
        raise L2OError(
            f"{out} holds a concurrent run with another config ({', '.join(differ)} differ); "
            "resume with the same one or use a new --out"
        )
    with safe_open(str(checkpoint_path(out)), framework="pt") as f:
        upto = int(json.loads((f.metadata() or {})["state"])["iteration"])
    return [r for r in _read_lambdas(out) if int(r["iteration"]) <= upto]


def _read_lambdas(out: Path) -> list[dict[str, Any]]:
    if not (out / LAMBDAS_FILE).is_file():
        return []
    return read_lambda_rows(out / LAMBDAS_FILE, strict_lines=False)


def _arch(train: TrainConfig, config: ConcurrentConfig) -> dict[str, Any]:
    return {
        "hidden_size": train.hidden_size,
        "layers": train.layers,
        "output_scale": train.output_scale,
        "preprocess": train.preprocess,
        "preprocess_p": train.preprocess_p,
        "logit_scale": config.logit_scale,
    }


class LambdaRecorder:
    """λ per variant after every meta-iteration (the net's mixing weights, unshuffled).

    Fixed-slot nets have one λ; attention's is per instance and step: the record is its λ at
    the latest step, averaged over the instances of the latest unroll (training or validation).
    """

    def __init__(self, cset: ConcurrentSet, problem: ConcurrentProblem, net: ConcurrentNet):
        self.cset, self.problem, self.net = cset, problem, net

    def lambdas(self) -> Tensor | None:
        """λ per canonical variant ``(K,)``, or None for nets without mixing weights."""
        with torch.no_grad():
            fixed = self.net.mixing()
            if fixed is not None:
                lam = torch.empty_like(fixed)
                lam[self.problem.fixed] = fixed  # slot s holds variant fixed[s]
                return lam
            rows = getattr(self.net, "last_mixing", None)
            perm = self.problem.last_perm
            if rows is None or perm is None:
                return None
            per_instance = rows.view(len(perm), -1, self.cset.k)[:, 0]
            return per_instance.gather(1, perm.argsort(1)).mean(0)

    def rows(self, iteration: int, lam: Tensor) -> list[dict[str, Any]]:
        slot_of = self.problem.fixed.argsort().tolist()
        shuffled = self.problem.mode == "shuffle"
        return [
            {
                "iteration": iteration,
                "slot": "*" if shuffled else slot_of[v],
                "variant": v,
                "label": label,
                "clean": int(v == self.cset.clean),
                # to the CSV's digits: a resumed run's record, read back, equals this one
                "lambda": float(f"{float(lam[v]):.{LAMBDA_DIGITS}g}"),
            }
            for v, label in enumerate(self.cset.labels)
        ]

    def initial(self) -> list[dict[str, Any]]:
        has = self.net.mixing() is not None or hasattr(self.net, "last_mixing")
        return self.rows(0, torch.full((self.cset.k,), 1.0 / self.cset.k)) if has else []

    def record(self, iteration: int) -> list[dict[str, Any]]:
        lam = self.lambdas()
        return [] if lam is None else self.rows(iteration, lam)


def write_lambdas(out: Path, rows: list[dict[str, Any]]) -> None:
    write_lambda_rows(out / LAMBDAS_FILE, rows)


def _slots(cset: ConcurrentSet, problem: ConcurrentProblem, mode: str) -> list[dict[str, Any]]:
    """In slot order (fixed mode), or variant order when slots are shuffled per instance."""
    order = problem.fixed.tolist() if mode == "fixed" else list(range(cset.k))
    return [
        {
            "slot": s if mode == "fixed" else None,
            "variant": v,
            "label": cset.labels[v],
            "clean": v == cset.clean,
        }
        for s, v in enumerate(order)
    ]


def _final_lambda(
    rows: list[dict[str, Any]], cset: ConcurrentSet, problem: ConcurrentProblem, mode: str
) -> list[float] | None:
    """The last recorded λ, per slot (fixed) or per variant (shuffle), like ``slots``."""
    if not rows:
        return None
    last = max(r["iteration"] for r in rows)
    by_variant = {r["variant"]: r["lambda"] for r in rows if r["iteration"] == last}
    order = problem.fixed.tolist() if mode == "fixed" else list(range(cset.k))
    return [by_variant[v] for v in order]


# --- test-time runs: every optimizer on the same instances, scored on clean held-out data ---


def test_all(
    cset: ConcurrentSet,
    nets: Mapping[str, ConcurrentNet],
    problems: Mapping[str, ConcurrentProblem],
    instances: int,
    steps: int,
    split: str = "test",
) -> tuple[Evaluation, dict[str, Any]]:
    """Curves of the clean loss for each net, and λ on the clean variant."""
    family = cset.family
    evaluation = Evaluation(family.name, family.options(), split, steps, instances)
    indices = list(range(instances))
    lambda_test: dict[str, Any] = {}
    for name, net in nets.items():
        problem = problems[name]
        curve, lam = run_concurrent(net, problem, split, indices, steps)
        evaluation.curves[name] = curve.numpy().astype(np.float64)
        evaluation.hyperparameters[name] = net.arch_config()
        # one instance (the indices [0]) for 20 steps, timed as every ms_per_step of l2o is
        timed = functools.partial(run_concurrent, net, problem, split)
        evaluation.ms_per_step[name] = best_ms_per_step(lambda: [0], timed, 20)
        if lam is not None and cset.clean is not None:
            clean = lam[:, :, cset.clean]  # (steps, B): λ on the clean variant
            lambda_test[name] = {
                "clean_final_step_mean": float(clean[-1].mean()),
                "clean_all_steps_mean": float(clean.mean()),
                "clean_final_step_min": float(clean[-1].min()),
                "per_variant_final_step": lam[-1].mean(0).tolist(),
            }
    return evaluation, lambda_test


@torch.no_grad()
def run_concurrent(
    net: ConcurrentNet, problem: ConcurrentProblem, split: str, indices: list[int], steps: int
) -> tuple[Tensor, Tensor | None]:
    """Clean-loss curve ``(steps + 1, B)`` and, for mixing nets, λ per step and variant
    ``(steps, B, K)`` (unshuffled)."""
    batch = problem.cset.sample(split, indices)
    perm = problem.permutation(split, indices)
    observe = problem.observer(batch, perm, net)
    unshuffle = perm.argsort(1)
    trace: list[Tensor] = []

    def observe_and_trace(theta: Tensor, step: int) -> tuple[Tensor, Tensor, Tensor]:
        if step > 0:  # the λ of the update just made: fixed, or the net's latest (attention's)
            lam = net.mixing()
            lam = getattr(net, "last_mixing", None) if lam is None else lam
            if lam is not None:
                trace.append(lam.expand(len(indices), -1).gather(1, unshuffle))
        return observe(theta, step)

    curve, _ = run_learned(
        net, batch.init_params(), observe_and_trace, steps, record=batch.eval_loss
    )
    return curve, (torch.stack(trace) if trace else None)
