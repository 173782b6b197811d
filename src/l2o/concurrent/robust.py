"""The robust study: every aggregator against its worst Byzantine attack, on held-out instances.

    results = run_robust(load_robust_config(None, [], "digits-mlp"), "runs/robust")

1. K sources of a base task (digits: K + 1 disjoint shards, the last one only fltrust's clean
   reference; the quadratic: K + 1 noisy least-squares targets), f of them Byzantine, their slots
   drawn per instance (:mod:`~l2o.concurrent.attacks`);
2. every aggregator is followed by the same optimizer, Adam at the learning rate tuned for the
   oracle (the mean of the honest sources, f = 0) on validation instances, so the study compares
   aggregation alone (:mod:`~l2o.concurrent.aggregators`); the rate is tuned as ``l2o compare``
   and ``l2o concurrent`` tune their baselines (:func:`l2o.compare.tuning.tune`, an Optuna study
   in ``OUT/tuning.db`` that a rerun reuses);
3. the learned aggregator (:mod:`~l2o.concurrent.scoring`) has its gates fitted to the honest
   sources along the oracle's runs, then is meta-trained by the core loop, both on a mix of the
   *training* attacks and every f (the meta-trained weights replace the fitted ones only if
   they do better on validation); it is scored on all attacks: the others are held out;
4. for each aggregator and f, the clean-task loss after ``steps`` steps (median over the test
   instances) under each attack, and its worst case over the attacks (``robust.json``,
   ``robust.png``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from l2o import checks
from l2o.compare.comparison import tuning_storage
from l2o.compare.tuning import OBJECTIVES, TrialCallback, Tuned, redact, tune
from l2o.concurrent.aggregators import Context, aggregate, check_name
from l2o.concurrent.attacks import AttackBatch, AttackSet, attack_names, check_attacks, honest_base
from l2o.concurrent.baselines import MeanGradientFamily
from l2o.concurrent.initializers import ConcurrentBatch, ConcurrentSet
from l2o.concurrent.problem import ConcurrentProblem
from l2o.concurrent.scoring import LearnedAggregator, adam_step, fit_gates, source_statistics
from l2o.config import TrainConfig, apply_overrides, config_from_dict, read_toml
from l2o.errors import L2OError
from l2o.meta.train import meta_train
from l2o.serialization import atomic_write_text, save_optimizer
from l2o.tasks import get_task

logger = logging.getLogger(__name__)

LEARNED = "learned"
HAND_RULES = (
    "mean",
    "median",
    "trimmed-mean",
    "krum",
    "multi-krum",
    "geomed",
    "cclip",
    "nnm+trimmed-mean",
    "fltrust",
)
ADVANTAGES = {"fltrust": "sees a clean reference gradient (one extra honest source) every step"}

# Per task: settings that keep the default study within ~15 minutes on 2 cores (see README).
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits-mlp": {
        "task_options": {"batch_size": 32},  # each source's minibatch (a client's step)
        "steps": 50,
        "instances": 10,
        "train": {
            "batch_size": 8,
            "iterations": 50,
            # a fine-tune of the fitted gates: at 0.03 it undid the fit (f = 1: 1.9x the oracle)
            "meta_lr": 0.003,
            "val_every": 20,
            "val_instances": 12,
        },
    },
    "quadratic": {
        "steps": 50,
        "instances": 64,
        "train": {"batch_size": 32, "iterations": 150, "val_every": 25, "val_instances": 64},
    },
}


@dataclass(frozen=True)
class RobustConfig:
    """A robust study. ``train`` is the learned aggregator's meta-training config."""

    task: str = "digits-mlp"
    task_options: Mapping[str, Any] = field(default_factory=dict)
    k: int = 10  # sources
    f: tuple[int, ...] = (1, 2, 3, 4)  # Byzantine sources, each a column of the table
    attacks: tuple[str, ...] = ("signflip", "ipm", "alie", "gaussian", "inf")
    held_out: tuple[str, ...] = ("ipm", "inf")  # attacks kept out of meta-training
    aggregators: tuple[str, ...] = HAND_RULES
    learned: bool = True  # meta-train and score the learned aggregator
    alpha: float | None = None  # digits shards: Dirichlet(α) sizes (heterogeneity); None: equal
    sigma: float = 1.0  # the quadratic's noise on each source's targets
    steps: int = 50  # optimizee steps per run (and the meta-training horizon)
    instances: int = 16  # test instances
    # Adam's rate, tuned for the oracle as `l2o compare` tunes a baseline (same keys)
    trials: int = 20  # Optuna trials the study should reach (a rerun adds only missing ones)
    tune_instances: int = 16  # validation instances per trial
    objective: str = "median"  # of the final clean validation losses, as the study scores
    storage: str | None = None  # Optuna URL; unset: OUT/tuning.db, a throw-away file without OUT
    # the learned aggregator's gates are first fitted to the honest sources (scoring.fit_gates)
    fit_instances: int = 8  # training instances per (training attack, f) run with the oracle
    fit_iterations: int = 2000  # full-batch Adam steps of that fit; 0: meta-training alone
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        for name in ("f", "attacks", "held_out", "aggregators"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "task_options", dict(self.task_options))
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 3:
            raise L2OError(f"k (sources) must be an integer >= 3, got {self.k!r}")
        if not self.f or any(isinstance(x, bool) or not isinstance(x, int) for x in self.f):
            raise L2OError(f"f must be a non-empty list of integers, got {list(self.f)}")
        if any(x < 1 or 2 * x >= self.k for x in self.f):
            top = (self.k - 1) // 2
            raise L2OError(f"every f must be in [1, {top}] (2f < K = {self.k}), got {list(self.f)}")
        check_attacks(self.attacks)
        if not self.attacks:
            raise L2OError("attacks must name at least one attack")
        extra = [a for a in self.held_out if a not in self.attacks]
        if extra:
            raise L2OError(f"held_out attacks {', '.join(extra)} are not among attacks")
        if self.learned and not self.training_attacks:
            raise L2OError("every attack is held out: leave at least one to meta-train on")
        for name in self.aggregators:
            check_name(name)
            if name == "oracle" or name == LEARNED:
                raise L2OError(f"{name} is always in the study; drop it from aggregators")
        if self.train.second_order:
            raise L2OError("second_order = true does not apply to the robust study; drop it")
        if self.steps < 1 or self.instances < 1:
            raise L2OError("steps and instances must be >= 1")
        for name in ("fit_instances", "fit_iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise L2OError(f"{name} must be an integer >= 0, got {value!r}")
        checks.integer("trials", self.trials, 1)
        checks.integer("tune_instances", self.tune_instances, 1, checks.MAX_SIZE)
        checks.text("objective", self.objective, OBJECTIVES)
        if self.storage is not None:
            checks.text("storage", self.storage)

    @property
    def training_attacks(self) -> tuple[str, ...]:
        return tuple(a for a in self.attacks if a not in self.held_out)

    def to_dict(self) -> dict[str, Any]:
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "train"}
        own = {k: list(v) if isinstance(v, tuple) else v for k, v in own.items()}
        own["storage"] = None if self.storage is None else redact(self.storage)  # no password
        return {**own, "train": self.train.to_dict()}


_OWN = {f.name for f in dataclasses.fields(RobustConfig)} - {"train"}


def load_robust_config(
    path: str | Path | None,
    overrides: Iterable[str] = (),
    task: str | None = None,
    **choices: Any,
) -> RobustConfig:
    """Task defaults (:data:`TASK_DEFAULTS`) < TOML file < ``key=value`` overrides < ``choices``.

    Keys under ``train.`` (``train.iterations=10``) go to the meta-training config.

    Example:
        >>> cfg = load_robust_config(None, ["train.iterations=5"], "quadratic", f=[1, 2])
        >>> cfg.f, cfg.train.iterations, cfg.train.horizon
        ((1, 2), 5, 50)
    """
    values = read_toml(path) if path is not None else {}
    values = apply_overrides(values, overrides)
    if "lrs" in values:
        raise L2OError(
            "lrs is gone: Adam's rate is tuned with Optuna as in `l2o compare`; drop lrs and "
            "set trials=N (and tune_instances=N) instead"
        )
    values.update({k: v for k, v in choices.items() if v is not None})
    if task is not None:
        values["task"] = task
    name = str(values.get("task", RobustConfig.task))
    get_task(name)  # validates the name
    defaults = TASK_DEFAULTS.get(name, {})
    train = {"task": name, **defaults.get("train", {}), **dict(values.pop("train", {}) or {})}
    own = {**{k: v for k, v in defaults.items() if k != "train"}, **values}
    own["task_options"] = {**defaults.get("task_options", {}), **dict(own.get("task_options", {}))}
    unknown = sorted(set(own) - _OWN)
    if unknown:
        raise L2OError(
            f"unknown robust key(s) {', '.join(unknown)}; known: {', '.join(sorted(_OWN))} "
            "and train.KEY for meta-training"
        )
    if "held_out" not in own and "attacks" in own:
        # the default held-out attacks among those chosen, and at least one to train on
        held = [a for a in RobustConfig.held_out if a in own["attacks"]]
        own["held_out"] = held[1:] if len(held) == len(own["attacks"]) else held
    steps = own.get("steps", RobustConfig.steps)
    train.setdefault("horizon", steps)
    train.setdefault("truncation", min(25, int(train["horizon"])))
    train.setdefault("meta_lr", 0.01)
    train.setdefault("meta_loss", "log")
    train.setdefault("seed", own.get("seed", 0))
    train["task_options"] = own["task_options"]
    try:
        return RobustConfig(**own, train=config_from_dict(train))
    except TypeError as exc:
        raise L2OError(f"invalid robust config: {exc}") from None


# --- the sets: one (attack, f), or a mix of them for meta-training ---


def attack_set(config: RobustConfig, attack: str, f: int) -> AttackSet:
    base = honest_base(config.task, config.task_options, config.k, config.alpha, config.sigma)
    return AttackSet(attack, base, config.k, f)


class MixedBatch(ConcurrentBatch):
    """Several attack batches side by side (one per (attack, f)), as one batch of instances."""

    def __init__(self, parts: list[AttackBatch]) -> None:
        self.parts = parts
        self.sizes = [p.size for p in parts]
        self.size, self.dim, self.k = sum(self.sizes), parts[0].dim, parts[0].k
        self.honest = torch.cat([p.honest for p in parts])

    def _split(self, theta: Tensor) -> tuple[Tensor, ...]:
        return theta.split(self.sizes)

    def init_params(self) -> Tensor:
        return torch.cat([p.init_params() for p in self.parts])

    def grads(self, theta: Tensor, step: int) -> tuple[Tensor, Tensor]:
        pairs = [p.grads(t, step) for p, t in zip(self.parts, self._split(theta))]
        return torch.cat([a for a, _ in pairs]), torch.cat([b for _, b in pairs])

    def clean_loss_and_grad(self, theta: Tensor, step: int) -> tuple[Tensor, Tensor]:
        pairs = [p.clean_loss_and_grad(t, step) for p, t in zip(self.parts, self._split(theta))]
        return torch.cat([a for a, _ in pairs]), torch.cat([b for _, b in pairs])

    def eval_loss(self, theta: Tensor) -> Tensor:
        return torch.cat([p.eval_loss(t) for p, t in zip(self.parts, self._split(theta))])


class MixedAttackSet(ConcurrentSet):
    """Instance i meets combination ``combos[i % len(combos)]`` of (attack, f)."""

    initializer = "robust-mix"

    def __init__(self, config: RobustConfig, combos: Sequence[tuple[str, int]]) -> None:
        self.sets = {(a, f): attack_set(config, a, f) for a, f in combos}
        self.combos = list(combos)
        first = next(iter(self.sets.values()))
        self.family, self.labels, self.clean = first.family, first.labels, None

    def sample(self, split: str, indices: Sequence[int]) -> MixedBatch:
        groups: dict[tuple[str, int], list[int]] = {}
        for i in indices:
            groups.setdefault(self.combos[i % len(self.combos)], []).append(i)
        return MixedBatch([self.sets[c].sample(split, idx) for c, idx in groups.items()])


# --- runs: an aggregation rule, then Adam, batched over instances ---

Combine = Callable[[Tensor, Context], Tensor]


@torch.no_grad()
def run_rule(batch: ConcurrentBatch, combine: Combine, f: int, lr: float, steps: int) -> Tensor:
    """Final clean loss ``(B,)`` after ``steps`` Adam steps on the aggregated gradient."""
    theta = batch.init_params()
    state = (torch.zeros_like(theta), torch.zeros_like(theta), torch.zeros(()))
    ctx = Context(f=f, honest=getattr(batch, "honest", None))
    for step in range(steps):
        _, grads = batch.grads(theta, step)
        ctx.reference = getattr(batch, "reference", None)
        update, state = adam_step(combine(grads, ctx), state, lr)
        theta = theta + update
    loss = batch.eval_loss(theta)
    return torch.where(torch.isfinite(loss), loss, torch.full_like(loss, math.inf))


def rule(name: str) -> Combine:
    return lambda grads, ctx: aggregate(name, grads, ctx)


def oracle_family(config: RobustConfig) -> MeanGradientFamily:
    """The K sources with none Byzantine, as a task family whose gradient is their mean: the
    oracle's (f = 0), the task Adam's rate is tuned on."""
    # at f = 0 no attack is ever called: one fixed name keeps the study whatever `attacks` is
    return MeanGradientFamily(attack_set(config, attack_names()[0], 0), "oracle")


def tune_lr(config: RobustConfig, storage: str, on_trial: TrialCallback | None = None) -> Tuned:
    """Tune Adam for the oracle with no attack on validation instances, as ``l2o compare`` does.

    The study lives in ``storage``; a rerun with the same settings adds no trials. Its Adam is
    ``torch.optim.Adam``, the same steps as :func:`~l2o.concurrent.scoring.adam_step`.
    """
    return tune(
        oracle_family(config),
        "adam",
        steps=config.steps,
        trials=config.trials,
        instances=config.tune_instances,
        storage=storage,
        seed=config.seed,
        on_trial=on_trial,
        objective=config.objective,
    )


def aggregation_ms(combine: Combine, config: RobustConfig, f: int) -> float:
    """Milliseconds per step of the aggregation alone, one instance of K sources."""
    batch = attack_set(config, config.attacks[0], f).sample("test", [0])
    _, grads = batch.grads(batch.init_params(), 0)
    ctx = Context(f=f, honest=batch.honest, reference=batch.reference)
    combine(grads, ctx)
    start, n = time.perf_counter(), 20
    for _ in range(n):
        combine(grads, ctx)
    return (time.perf_counter() - start) * 1000 / n


# --- the study ---

Progress = Callable[[str, int, int], None]


def gate_examples(
    config: RobustConfig, cset: MixedAttackSet, lr: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Source statistics along the oracle's runs on training instances of every combination.

    Returns ``stats (N, K, S)``, ``ok (N, K)`` and ``byzantine (N, K)`` for N = instances × steps:
    what :func:`~l2o.concurrent.scoring.fit_gates` fits the gates on.
    """
    batch = cset.sample("train", list(range(config.fit_instances * len(cset.combos))))
    stats, ok = [], []

    def recording_oracle(grads: Tensor, ctx: Context) -> Tensor:
        s, o = source_statistics(grads)
        stats.append(s)
        ok.append(o)
        return aggregate("oracle", grads, ctx)

    with torch.no_grad():
        run_rule(batch, recording_oracle, 0, lr, config.steps)
    return torch.cat(stats), torch.cat(ok), (~batch.honest).repeat(config.steps, 1)


def train_learned(
    config: RobustConfig, lr: float, out: Path | None, progress: Progress | None
) -> tuple[LearnedAggregator, dict[str, Any]]:
    """Fit the gates to the honest sources, then meta-train by the core loop (on the same mix
    of the training attacks and every f; ``train.iterations = 0`` skips it).

    Returns the aggregator and which weights it has: the meta-trained ones only where they
    beat the fitted gates on validation.

    The fit is what makes the aggregator robust: meta-training alone (50 iterations, the
    meta-gradient of the clean loss through Adam) left one Byzantine source of ten with more
    weight than an honest one (1.5-2x the oracle at f = 1 on digits).
    """
    combos = [(a, f) for f in config.f for a in config.training_attacks]
    cset = MixedAttackSet(config, combos)
    net = LearnedAggregator(k=config.k, lr=lr, seed=config.seed)
    if config.fit_iterations and config.fit_instances:
        if progress is not None:
            progress("fit gates", 0, 1)
        fit_gates(net, *gate_examples(config, cset, lr), iterations=config.fit_iterations)
        if progress is not None:
            progress("fit gates", 1, 1)
    if config.train.iterations == 0:
        return net, {"weights": "fitted gates"}
    problem = ConcurrentProblem(cset, net, config.seed, "fixed", None)
    # the core loop keeps its best validated weights, but validates only after training
    # iterations: the fitted gates are a candidate too (on noisy least squares every
    # fine-tune opened the gates again and lost to them on validation, and at f = 1 on test)
    val_indices = list(range(config.train.val_instances))
    horizon = config.train.val_horizon or config.train.horizon
    with torch.no_grad():
        fitted_val = problem.evaluate(net, "validation", val_indices, horizon)
    fitted = {k: v.detach().clone() for k, v in net.state_dict().items()}

    def on_row(row: dict[str, float]) -> None:
        if progress is not None:
            progress("train learned", int(row["iteration"]), config.train.iterations)

    trained, history = meta_train(
        config.train,
        out_dir=None if out is None else out / "learned",
        problem=problem.meta_problem(),
        net=net,
        callback=on_row,
    )
    kept = history.best_val < fitted_val
    if not kept:
        logger.info("meta-training did not beat the fitted gates on validation: kept them")
        trained.load_state_dict(fitted)
    selection = {
        "weights": "meta-trained" if kept else "fitted gates",
        "fitted_val_loss": fitted_val,
        "meta_trained_val_loss": history.best_val,
    }
    return trained, selection  # type: ignore[return-value]


def run_robust(
    config: RobustConfig, out_dir: str | Path | None = None, progress: Progress | None = None
) -> dict[str, Any]:
    """Run the study; write ``robust.json`` and ``robust.png`` into ``out_dir``; return the dict."""
    torch.set_num_threads(config.train.threads)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "robust-config.json", json.dumps(config.to_dict(), indent=2))
    started = time.perf_counter()

    def on_trial(name: str, done: int, total: int) -> None:
        if progress is not None:
            progress(f"tune {name}", done, total)

    with tuning_storage(config.storage, out) as storage:
        tuned = tune_lr(config, storage, on_trial)
    lr = float(tuned.hyperparameters["lr"])
    combines: dict[str, Combine] = {name: rule(name) for name in config.aggregators}
    selection = None
    if config.learned:
        net, selection = train_learned(config, lr, out, progress)
        net.eval()
        combines[LEARNED] = lambda grads, ctx: net.combine(grads, ctx.state)
        if out is not None:
            extra = {"robust": config.to_dict(), "adam_lr": lr, "selection": selection}
            save_optimizer(net, out, extra=extra)
    indices = list(range(config.instances))
    total = len(config.f) * (1 + len(combines) * len(config.attacks))
    done = 0
    oracle: dict[str, float | None] = {}
    table: dict[str, dict[str, dict[str, float | None]]] = {n: {} for n in combines}
    for f in config.f:
        sets = {a: attack_set(config, a, f) for a in config.attacks}
        final = run_rule(
            sets[config.attacks[0]].sample("test", indices), rule("oracle"), f, lr, config.steps
        )
        oracle[str(f)] = _median(final)
        done += 1
        for attack, cset in sets.items():
            for name, combine in combines.items():
                final = run_rule(cset.sample("test", indices), combine, f, lr, config.steps)
                table[name].setdefault(attack, {})[str(f)] = _median(final)
                done += 1
                if progress is not None:
                    progress("test", done, total)
    aggregators = {}
    for name, by_attack in table.items():
        worst = {str(f): _worst([by_attack[a][str(f)] for a in config.attacks]) for f in config.f}
        aggregators[name] = {
            "learned": name == LEARNED,
            "worst_case": worst,
            "by_attack": by_attack,
            "ms_per_step": aggregation_ms(combines[name], config, config.f[-1]),
            **({"advantage": ADVANTAGES[name]} if name in ADVANTAGES else {}),
        }
    results = {
        "task": config.task,
        "k": config.k,
        "f": list(config.f),
        "attacks": list(config.attacks),
        "held_out_attacks": list(config.held_out) if config.learned else [],
        "oracle": oracle,
        "aggregators": aggregators,
        "settings": {
            "optimizer": f"Adam (torch defaults) at lr={lr:g}, tuned for the oracle at f=0",
            "adam_lr": lr,
            # Adam's tuning, as `l2o compare` records it (study, trials, validation objective)
            "tuning": tuned.record(),
            "steps": config.steps,
            "test_instances": config.instances,
            "task_options": dict(config.task_options),
            "alpha": config.alpha,
            "sigma": config.sigma if config.task == "quadratic" else None,
            "loss": "median over test instances of the clean-task loss after the last step; "
            "null: diverged",
            "mean_ms_per_step": aggregators.get("mean", {}).get("ms_per_step"),
            # which weights the learned aggregator ran with, and their validation losses
            "learned_weights": selection,
            "seconds": time.perf_counter() - started,
        },
    }
    if out is not None:
        from l2o.concurrent.plots import plot_robust

        atomic_write_text(out / "robust.json", json.dumps(results, indent=2) + "\n")
        plot_robust(out)
    return results


def _median(final: Tensor) -> float | None:
    value = float(final.median())
    return value if math.isfinite(value) else None


def _worst(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else max(values)  # type: ignore[type-var]
