"""Tuning the baselines with Optuna, on validation instances only.

One Optuna study per (task and its options, baseline, steps, validation instances, search space),
kept in any Optuna storage: an SQLite file by default (``tuning.db`` in the output folder), a
PostgreSQL URL just as well. Running again reuses the study and only adds the missing trials, so
tuning is paid once and can be extended (``trials`` is the total a study should reach). Several
processes or machines pointed at one storage tune a study together, ``trials`` in all between them
(:mod:`l2o.compare.storage` holds the locking and heartbeats that keep the count exact).

The objective of a trial is the mean final loss (``eval_loss`` after ``steps`` steps) over the
validation instances ``0..instances-1``; the test split is never sampled here. A run that diverges
(a non-finite or absurdly large final loss) scores :data:`PENALTY` instead of crashing the study.

Example:
    >>> from l2o.tasks import get_task
    >>> tuned = tune(get_task("quadratic"), "adam", steps=20, trials=3, instances=8,
    ...              storage="sqlite:///:memory:")
    >>> sorted(tuned.hyperparameters)
    ['lr']
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import torch
from sqlalchemy.exc import SQLAlchemyError

from l2o import interrupts
from l2o.baselines import Baseline, get_baseline
from l2o.compare.storage import (
    CRASHED_MARK,
    OWNER_MARK,
    fail_as_crashed,
    fail_stale_trials,
    heartbeat,
    open_storage,
    owner,
    study_lock,
    wait_for,
)
from l2o.errors import L2OError
from l2o.evaluate import BaselineRunner
from l2o.tasks import TaskFamily

log = logging.getLogger(__name__)

PENALTY = 1e10  # the score of a diverged trial: finite, so TPE ranks it last instead of failing
OBJECTIVES = ("mean", "median")  # of the final validation losses
TUNING_SPLIT = "validation"  # never "test": every number we report comes from test
LIVE_MARK = "l2o_heartbeat"  # user attribute of trials whose process records heartbeats

# (baseline name, trials finished in this study, trials the study should reach)
TrialCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Tuned:
    """A baseline's tuned hyperparameters and where they came from."""

    baseline: str
    hyperparameters: dict[str, Any]
    validation_loss: float  # the best trial's objective (mean or median final validation loss)
    trials: int  # finished trials in the study
    new_trials: int  # of which run by this call (0: the study was already tuned)
    study_name: str
    objective: str = "mean"

    def record(self) -> dict[str, Any]:
        """What results.json keeps about this tuning (enough to find the study again)."""
        return {
            "study": self.study_name,
            "split": TUNING_SPLIT,
            "objective": f"{self.objective} final loss",
            "validation_objective": self.validation_loss,
            "trials": self.trials,
            "new_trials": self.new_trials,
        }


def study_name(
    family: TaskFamily, baseline: Baseline, steps: int, instances: int, objective: str = "mean"
) -> str:
    """A readable name, plus a hash of everything that makes two studies incomparable.

    Task options and the search space are hashed in: a study tuned for ``hidden=[40]`` or for an
    older search space is never silently extended with trials of another.
    """
    space = {k: [r.low, r.high, r.log] for k, r in sorted(baseline.search_space.items())}
    key = json.dumps(
        {"task": family.name, "options": family.options(), "space": space, "fixed": baseline.fixed},
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha1(key.encode()).hexdigest()[:8]
    kind = "" if objective == "mean" else f"/{objective}"  # mean: the names of older studies
    return f"{family.name}/{baseline.name}/steps={steps}/val={instances}{kind}/{digest}"


def objective_value(final: torch.Tensor, objective: str = "mean") -> float:
    """Mean (or median) final loss; :data:`PENALTY` if it is non-finite or huge.

    With the mean, one diverged instance is enough for the penalty; the median tolerates
    divergence on fewer than half of the instances (and counts it as +inf, i.e. worst).
    """
    final = final.double()
    if objective == "median":
        value = float(torch.where(torch.isfinite(final), final, math.inf).median())
    else:
        value = float(final.mean())
    return value if math.isfinite(value) and value < PENALTY else PENALTY


def validation_loss(
    family: TaskFamily,
    baseline: Baseline,
    hyperparameters: dict[str, Any],
    steps: int,
    instances: int,
    objective: str = "mean",
) -> float:
    """The tuning objective of one set of hyperparameters (fresh validation batch each call)."""
    batch = family.sample(TUNING_SPLIT, list(range(instances)))
    with torch.no_grad():
        final = BaselineRunner(baseline, hyperparameters).final_loss(batch, steps)
    return objective_value(final, objective)


def suggest(trial: optuna.Trial, baseline: Baseline) -> dict[str, Any]:
    return {
        name: trial.suggest_float(name, r.low, r.high, log=r.log)
        for name, r in sorted(baseline.search_space.items())
    }


def tune(
    family: TaskFamily,
    baseline: str | Baseline,
    steps: int,
    trials: int,
    instances: int,
    storage: str,
    seed: int = 0,
    on_trial: TrialCallback | None = None,
    objective: str = "mean",
) -> Tuned:
    """Tune one baseline on ``family``'s validation instances until its study has ``trials``.

    Args:
        family: the task family (its options are part of the study's identity).
        baseline: a name from :data:`l2o.baselines.BASELINES` or the baseline itself.
        steps: optimizee steps per run; the final loss after them is the objective.
        trials: the number of finished trials the study should have; only the missing ones run.
            Processes sharing the study (same storage and settings) run them between them.
        instances: validation instances ``0..instances-1`` in every trial.
        storage: an Optuna storage URL (``sqlite:///out/tuning.db``, ``postgresql://...``).
        seed: seeds the TPE sampler, reseeded before each trial from (seed, trials so far), so
            an interrupted and resumed study draws what an uninterrupted one would, and an
            extended or shared study explores new points instead of replaying its first ones.
        on_trial: called after every trial with (baseline, finished, target).
        objective: ``mean`` (the default) or ``median`` final validation loss.

    Returns:
        The best hyperparameters found so far and the study's bookkeeping.
    """
    if trials < 1 or steps < 1 or instances < 1:
        raise L2OError(
            f"trials, steps and tuning instances must be >= 1, got {trials}, {steps}, {instances}"
        )
    if objective not in OBJECTIVES:
        raise L2OError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    base = get_baseline(baseline) if isinstance(baseline, str) else baseline
    name = study_name(family, base, steps, instances, objective)
    try:
        rdb = open_storage(storage)
        study = optuna.create_study(
            study_name=name, storage=rdb, direction="minimize", load_if_exists=True
        )
    except (
        ValueError,
        ImportError,
        SQLAlchemyError,
        optuna.exceptions.StorageInternalError,
    ) as exc:
        if isinstance(exc, L2OError):
            raise
        raise L2OError(
            f"cannot open the Optuna storage {redact(storage)!r}: {_first_line(exc)}; give a "
            "valid --storage URL (e.g. sqlite:///tuning.db or postgresql://user@host/db)"
        ) from None
    new = 0
    if _finished(study) < trials:
        study.set_user_attr("task", family.name)
        study.set_user_attr("task_options", family.options())
        study.set_user_attr("baseline", base.name)
        study.set_user_attr("steps", steps)
        study.set_user_attr("instances", instances)
        study.set_user_attr("split", TUNING_SPLIT)
        study.set_user_attr("objective", objective)

        def run_trial(trial: optuna.Trial) -> float:
            hparams = suggest(trial, base)
            value = validation_loss(family, base, hparams, steps, instances, objective)
            trial.set_user_attr("diverged", value >= PENALTY)
            return value

        def report() -> None:
            if on_trial is not None:
                on_trial(base.name, _finished(study), trials)

        with interrupts.safe_points():  # Ctrl-C/SIGTERM stop between trials
            while _finished(study) < trials:
                new += _top_up(study, rdb, storage, trials, seed, run_trial, report)
                # Other processes' last trials belong to the study too: choose from all of
                # them. A dead process's trial fails once its heartbeat is stale; it is made up.
                wait_for(lambda: not _running(study), timeout=math.inf)
        log.info("tuned %s: %d new trial(s) in study %s", base.name, new, name)
    if not base.search_space:  # nothing to tune: the defaults are the answer
        best: dict[str, Any] = {}
    else:
        best = dict(study.best_trial.params)
    return Tuned(
        baseline=base.name,
        hyperparameters=best,
        validation_loss=float(study.best_value),
        trials=_finished(study),
        new_trials=new,
        study_name=name,
        objective=objective,
    )


def _top_up(
    study: optuna.Study,
    rdb: optuna.storages.RDBStorage,
    url: str,
    trials: int,
    seed: int,
    run_trial: Callable[[optuna.Trial], float],
    report: Callable[[], None],
) -> int:
    """Run trials until the study holds ``trials`` live ones (COMPLETE or RUNNING) in all.

    Counting and asking happen under :func:`study_lock`, so processes sharing the study never
    start more than ``trials`` between them. Returns how many this process ran.
    """
    new = 0
    while True:
        with study_lock(rdb, url, study.study_name):
            fail_stale_trials(study)
            _fail_unowned_trials(study)
            every = study.get_trials(deepcopy=False)
            if _live(every) >= trials:
                return new
            # Reseeded per trial from (seed, trials so far): trial n draws the same point whether
            # the study ran in one go or was resumed, and processes sharing the study (whose
            # trials have distinct numbers) never draw the same one.
            # (a trial whose process was killed does not count: the rerun replays its draw)
            drawn = sum(not t.user_attrs.get(CRASHED_MARK) for t in every)
            study.sampler = optuna.samplers.TPESampler(seed=_trial_seed(seed, drawn))
            with warnings.catch_warnings():  # "heartbeat is meant for optimize()": we beat here
                warnings.simplefilter("ignore", UserWarning)
                trial = study.ask()
            trial_id = trial._trial_id  # Optuna's storage key (no public accessor)
            trial.set_user_attr(LIVE_MARK, True)  # counted by others from now on
            trial.set_user_attr(OWNER_MARK, owner())
        earlier = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number]
        if _live(earlier) >= trials:  # a process without our lock got there first
            trial.set_user_attr("surplus", True)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return new
        try:
            with heartbeat(rdb, trial_id):
                value = run_trial(trial)
        except BaseException:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        study.tell(trial, value)
        new += 1
        report()
        interrupts.stop_if_requested(
            f"tuning stopped after {_finished(study)} finished trials of {study.study_name}"
        )


def _fail_unowned_trials(study: optuna.Study) -> None:
    """Fail the RUNNING trials without an owner (call under :func:`study_lock`).

    A trial is asked for and gets both marks under the lock, so one without its owner belongs
    to a process killed in between: no pid to check and no heartbeat yet, so nothing else would
    ever fail it. Marked live, waiting for it would never end; unmarked, it would still count
    as a draw, and the rerun would draw a new point instead of this one. Marked crashed, its
    draw is replayed. (A RUNNING trial without marks may also be an older version's crash:
    failing it replays that draw too.)
    """
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if OWNER_MARK not in trial.user_attrs:
            fail_as_crashed(study, trial)


def _trial_seed(seed: int, finished: int) -> int:
    """Independent seeds per (seed, trial count): seed 8 must not replay seed 7's later trials."""
    return int(np.random.SeedSequence([seed, finished]).generate_state(1)[0])


def _live(trials: list[optuna.trial.FrozenTrial]) -> int:
    """Trials that count towards the total: finished ones and those running with a heartbeat.

    A RUNNING trial without :data:`LIVE_MARK` is no one's: a process killed before marking it,
    or an older version's crash. It is ignored here, and failed under the lock before the next
    draw (:func:`_fail_unowned_trials`).
    """
    complete = optuna.trial.TrialState.COMPLETE
    return sum(t.state == complete or _running_with_heartbeat(t) for t in trials)


def _running(study: optuna.Study) -> bool:
    fail_stale_trials(study)
    return any(_running_with_heartbeat(t) for t in study.get_trials(deepcopy=False))


def _running_with_heartbeat(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.state == optuna.trial.TrialState.RUNNING and bool(trial.user_attrs.get(LIVE_MARK))


def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def _first_line(exc: BaseException) -> str:
    """The driver's own message, first line only (SQLAlchemy appends lines of its own)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def redact(url: str) -> str:
    """A storage URL without its password (it goes into results.json and error messages)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
