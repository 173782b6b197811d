"""One honest comparison: tune the baselines on validation, then run everything on test.

Every optimizer, learned or hand-designed, runs on the same test instances (same θ₀, same
minibatches); each baseline's hyperparameters come from its Optuna study on the validation split
(:mod:`l2o.compare.tuning`), at the same number of steps as the evaluation. The records written
(``results.json``, ``curves.csv``) are enough to redraw every figure (:mod:`l2o.compare.plots`).

Example:
    >>> from l2o.tasks import get_task
    >>> from l2o.evaluate import resolve_optimizer
    >>> outcome = compare(get_task("quadratic"), resolve_optimizer("sgd:lr=0.01"), ["adam"],
    ...                   steps=10, instances=4, trials=2, tune_instances=4,
    ...                   storage="sqlite:///:memory:")
    >>> sorted(outcome.evaluation.curves)
    ['adam', 'sgd']
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from l2o.baselines import get_baseline
from l2o.compare.tuning import TrialCallback, Tuned, redact, tune
from l2o.errors import L2OError
from l2o.evaluate import BaselineRunner, Evaluation, Runner, evaluate, write_evaluation
from l2o.tasks import TaskFamily

log = logging.getLogger(__name__)

DEFAULT_BASELINES = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad")
TUNING_DB = "tuning.db"


def default_storage(out: str | Path) -> str:
    """The embedded default: an SQLite file ``tuning.db`` in the output folder."""
    path = Path(out) / TUNING_DB
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"


@contextmanager
def tuning_storage(storage: str | None, out: str | Path | None) -> Iterator[str]:
    """The study's storage URL: ``storage`` if given, else ``out/tuning.db``, else a throw-away
    file deleted on exit. Not an in-memory SQLite: Optuna's heartbeat thread opens its own
    connection, and each connection to ":memory:" is a new, empty database."""
    if storage is not None:
        yield storage
    elif out is not None:
        yield default_storage(out)
    else:
        with tempfile.TemporaryDirectory(prefix="l2o-tuning-") as scratch:
            yield default_storage(scratch)


@dataclass
class Outcome:
    """The evaluation on test and the tuning behind each baseline."""

    evaluation: Evaluation
    tuning: dict[str, Tuned] = field(default_factory=dict)
    learned: str = "l2o"  # the name of the learned optimizer among the curves
    settings: dict[str, Any] = field(default_factory=dict)

    def extra(self) -> dict[str, Any]:
        """What results.json adds to the evaluation: how the baselines were tuned."""
        return {
            "learned": self.learned,
            "comparison": self.settings,
            "tuning": {name: t.record() for name, t in self.tuning.items()},
        }


def compare(
    family: TaskFamily,
    learned: Runner | None,
    baselines: Sequence[str] = DEFAULT_BASELINES,
    steps: int = 100,
    instances: int = 100,
    trials: int = 100,
    tune_instances: int = 64,
    storage: str = "sqlite:///tuning.db",
    seed: int = 0,
    on_trial: TrialCallback | None = None,
    on_stage: Callable[[str], None] | None = None,
    objective: str = "mean",
) -> Outcome:
    """Tune each baseline (what is not tuned yet), then evaluate all on the test split.

    Args:
        family: the task family.
        learned: the learned optimizer's runner (or another runner to compare against); None
            compares the tuned baselines alone.
        baselines: names from :data:`l2o.baselines.BASELINES`.
        steps: optimizee steps, for tuning and for the test runs alike.
        instances: test instances ``0..instances-1``.
        trials: finished trials each baseline's study should reach.
        tune_instances: validation instances in every trial.
        storage: an Optuna storage URL.
        seed: seeds the TPE samplers.
        on_trial: progress callback of the tuning (baseline, finished, target).
        on_stage: called with a short description before each stage (for progress output).
        objective: what tuning minimises, the ``mean`` (default) or ``median`` final loss.

    Returns:
        The test evaluation (tuned hyperparameters included) and the tuning records.
    """
    names = check_baselines(learned, baselines)
    tuned: dict[str, Tuned] = {}
    for name in names:
        if on_stage:
            on_stage(f"tuning {name}")
        tuned[name] = tune(
            family, name, steps, trials, tune_instances, storage, seed, on_trial, objective
        )
        log.info("%s tuned: %s", name, tuned[name].hyperparameters)
    runners: list[Runner] = [] if learned is None else [learned]
    runners += [BaselineRunner(get_baseline(n), tuned[n].hyperparameters) for n in names]
    if on_stage:
        on_stage(f"evaluating {len(runners)} optimizers on {instances} test instances")
    evaluation = evaluate(family, runners, steps=steps, instances=instances, split="test")
    settings = {
        "trials": trials,
        "tune_instances": tune_instances,
        "tune_split": "validation",
        "tune_objective": objective,
        "storage": redact(storage),
        "seed": seed,
        "device": str(getattr(family, "device", "cpu")),  # l2o.devices.FamilyOnDevice's
    }
    return Outcome(evaluation, tuned, learned.name if learned else "", settings)


def check_baselines(learned: Runner | None, baselines: Sequence[str]) -> list[str]:
    """The baseline names, lower-cased and deduplicated; unknown names and a clash with the
    compared optimizer's name are errors (raised before any tuning or writing)."""
    names = list(dict.fromkeys(b.strip().lower() for b in baselines))
    if not names or not all(names):
        raise L2OError(f"baselines must be a non-empty list of names, got {','.join(baselines)!r}")
    for name in names:
        get_baseline(name)
    if learned is not None and learned.name in names:
        raise L2OError(
            f"the compared optimizer is named {learned.name!r} like a baseline; drop "
            f"{learned.name} from --baselines (it is tuned there anyway)"
        )
    return names


def write_outcome(out: str | Path, outcome: Outcome, extra: dict[str, Any] | None = None) -> dict:
    """``results.json`` and ``curves.csv`` in ``out``; returns the results dictionary."""
    return write_evaluation(out, outcome.evaluation, {**outcome.extra(), **(extra or {})})


def best_baseline(results: dict[str, Any]) -> str | None:
    """The baseline with the lowest median final test loss in a results dictionary.

    Picking the best on test favours the baselines (a selection the learned optimizer does not
    get), which is the conservative direction for our claim.
    """
    learned = results.get("learned")
    candidates = {
        name: stats["final_loss_median"]
        for name, stats in results["optimizers"].items()
        if name != learned and stats.get("final_loss_median") is not None
    }
    return min(candidates, key=candidates.__getitem__) if candidates else None
