"""The paper's generalisation study: the learned optimizer off its training distribution.

Each :class:`Setting` changes one thing against the set-up the optimizer was trained on: the
horizon (1×, 2×, 10× the training horizon: does it diverge past it?) or, for the digits MLP, the
architecture (40 hidden units, two hidden layers, ReLU), always with the *same* learned optimizer.
Every setting is a full comparison (:func:`l2o.compare.comparison.compare`): the baselines are
tuned again for that setting, on its validation instances, which is the fair reference.

The ``suite`` group (issue 10) is the one table a general-purpose optimizer answers to: the
quadratic at 1×, 10× and 100× its training horizon, and the digits MLP with sigmoid, ReLU and
tanh, wider ([64]) and deeper ([20, 20, 20]), each at 100 and 1,000 steps (fixed step counts);
the table flags any diverged instance.

Example:
    >>> [s.name for s in select_settings(["mlp"], "digits-mlp")]
    ['wider', 'deeper', 'relu']
    >>> [s.steps_for(100) for s in select_settings(["suite"], "quadratic")]
    [100, 1000, 10000]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from l2o.compare.comparison import best_baseline
from l2o.compare.tuning import TrialCallback
from l2o.devices import on_device
from l2o.errors import L2OError
from l2o.evaluate import Runner
from l2o.records import atomic_write_text, fmt_number, read_json_object, write_json


@dataclass(frozen=True)
class Setting:
    """One generalisation experiment: a change of horizon and/or of task options."""

    name: str
    description: str
    horizon: int = 1  # steps = horizon × the optimizer's training horizon
    task_options: Mapping[str, Any] = field(default_factory=dict)  # over the trained-on ones
    tasks: tuple[str, ...] = ()  # the tasks it applies to; () means every task
    steps: int | None = None  # a fixed number of steps instead (the suite's 100 and 1,000)

    def applies_to(self, task: str) -> bool:
        return not self.tasks or task in self.tasks

    def steps_for(self, training_horizon: int) -> int:
        """The optimizee steps of this setting for an optimizer trained at that horizon."""
        return self.steps if self.steps is not None else self.horizon * training_horizon


def _suite_mlp(name: str, description: str, options: Mapping[str, Any]) -> list[Setting]:
    """One digits-MLP variant of the generalisation suite at 100 and at 1,000 steps."""
    return [
        Setting(f"{name}-{steps}", f"{description}, {steps} steps", task_options=options,
                tasks=("digits-mlp",), steps=steps)
        for steps in (100, 1000)
    ]  # fmt: skip


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in [
        Setting("horizon-1x", "the training horizon", horizon=1),
        Setting("horizon-2x", "twice the training horizon", horizon=2),
        Setting("horizon-10x", "ten times the training horizon", horizon=10),
        Setting("wider", "MLP with 40 hidden units", task_options={"hidden": [40]},
                tasks=("digits-mlp",)),
        Setting("deeper", "MLP with two hidden layers of 20", task_options={"hidden": [20, 20]},
                tasks=("digits-mlp",)),
        Setting("relu", "MLP with ReLU instead of sigmoid", task_options={"activation": "relu"},
                tasks=("digits-mlp",)),
        # --- the generalisation suite of issue 10 (group "suite") ---
        Setting("horizon-100x", "a hundred times the training horizon", horizon=100),
        *_suite_mlp("sigmoid", "MLP 64-20-10, sigmoid", {"activation": "sigmoid"}),
        *_suite_mlp("relu", "MLP 64-20-10, ReLU", {"activation": "relu"}),
        *_suite_mlp("tanh", "MLP 64-20-10, tanh", {"activation": "tanh"}),
        *_suite_mlp("wide", "MLP 64-64-10, sigmoid", {"hidden": [64], "activation": "sigmoid"}),
        *_suite_mlp("deep", "MLP 64-20-20-20-10, sigmoid",
                    {"hidden": [20, 20, 20], "activation": "sigmoid"}),
    ]
}  # fmt: skip
GROUPS = {
    "horizon": ["horizon-1x", "horizon-2x", "horizon-10x"],
    "mlp": ["wider", "deeper", "relu"],
    # the paper's study (what `l2o reproduce` runs for the task-specific optimizers)
    "all": ["horizon-1x", "horizon-2x", "horizon-10x", "wider", "deeper", "relu"],
}
# Issue 10's suite (group "suite"): five digits MLPs at 100 and 1,000 steps (sigmoid is the
# training task, the others change one thing each); any other task at 1×, 10×, 100× its horizon.
SUITE_MLP = [f"{m}-{n}" for m in ("sigmoid", "relu", "tanh", "wide", "deep") for n in (100, 1000)]
SUITE_HORIZONS = ["horizon-1x", "horizon-10x", "horizon-100x"]
GROUPS["suite"] = [*SUITE_HORIZONS, *SUITE_MLP]


def _group(name: str, task: str) -> list[str]:
    if name == "suite":
        return SUITE_MLP if task == "digits-mlp" else SUITE_HORIZONS
    return GROUPS[name]


def select_settings(names: Sequence[str], task: str) -> list[Setting]:
    """Settings by name or group (``horizon``, ``mlp``, ``all``), those that apply to ``task``."""
    chosen: list[str] = []
    for raw in names:
        name = raw.strip().lower()
        if not name:
            continue
        if name in GROUPS:
            chosen += _group(name, task)
        elif name in SETTINGS:
            if not SETTINGS[name].applies_to(task):
                raise L2OError(
                    f"generalisation setting {name!r} applies to {', '.join(SETTINGS[name].tasks)}"
                    f" only, not to {task}"
                )
            chosen.append(name)
        else:
            raise L2OError(
                f"unknown generalisation setting {name!r}; known: {', '.join([*GROUPS, *SETTINGS])}"
            )
    return [SETTINGS[n] for n in dict.fromkeys(chosen) if SETTINGS[n].applies_to(task)]


def training_horizon(info: Mapping[str, Any] | None, fallback: int) -> int:
    """The horizon the learned optimizer was trained at (from its saved config), else fallback."""
    try:
        return int(info["train_config"]["horizon"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        return fallback


def table_row(setting: Setting, results: Mapping[str, Any]) -> dict[str, Any]:
    """One line of the table: the learned optimizer against the best tuned baseline."""
    learned = results.get("learned", "")
    if learned not in results["optimizers"]:
        raise L2OError(f"the results of {setting.name} hold no learned optimizer")
    mine = results["optimizers"][learned]
    best = best_baseline(results)
    theirs = results["optimizers"][best] if best else {}
    ratio = None
    if mine.get("final_loss_median") is not None and theirs.get("final_loss_median"):
        ratio = mine["final_loss_median"] / theirs["final_loss_median"]
    return {
        "setting": setting.name,
        "description": setting.description,
        "task_options": results.get("task_options", {}),
        "steps": results["steps"],
        "learned": learned,
        "learned_median": mine.get("final_loss_median"),
        "learned_q25": mine.get("final_loss_q25"),
        "learned_q75": mine.get("final_loss_q75"),
        "learned_diverged": mine.get("diverged", 0),
        "best_baseline": best,
        "best_baseline_hyperparameters": theirs.get("hyperparameters", {}),
        "best_baseline_median": theirs.get("final_loss_median"),
        "ratio": ratio,
    }


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The table as Markdown (learned vs best tuned baseline, median final test loss)."""
    lines = [
        "| setting | steps | learned median [q25, q75] | diverged | best tuned baseline | "
        "its median | learned / best |",
        "| --- | ---: | --- | ---: | --- | ---: | ---: |",
    ]
    for r in rows:
        hp = ", ".join(
            f"{k}={v:.3g}" for k, v in sorted(r["best_baseline_hyperparameters"].items())
        )
        lines.append(
            f"| {r['setting']} ({r['description']}) | {r['steps']} | {_num(r['learned_median'])} "
            f"[{_num(r['learned_q25'])}, {_num(r['learned_q75'])}] | {r['learned_diverged']} | "
            f"{r['best_baseline']} ({hp}) | {_num(r['best_baseline_median'])} | "
            f"{_ratio(r['ratio'])} |"
        )
    return "\n".join(lines) + "\n"


def write_table(out: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """``generalization.json`` and ``generalization.md`` in ``out``."""
    out = Path(out)
    write_json(out / "generalization.json", list(rows))
    atomic_write_text(out / "generalization.md", markdown_table(rows))
    return out / "generalization.md"


SettingCallback = Callable[[Setting, int], None]  # (setting, steps), before its comparison
ResultCallback = Callable[[Setting, dict[str, Any], Path], None]  # (setting, results, folder)


def run_study(
    task: str,
    options: Mapping[str, Any],
    learned: Runner,
    baselines: Sequence[str],
    settings: Sequence[Setting],
    out: str | Path,
    *,
    base_steps: int,
    instances: int = 100,
    trials: int = 100,
    tune_instances: int = 64,
    storage: str = "sqlite:///tuning.db",
    seed: int = 0,
    objective: str = "mean",
    label: str | None = None,
    device: str | torch.device | None = "cpu",
    on_setting: SettingCallback | None = None,
    on_result: ResultCallback | None = None,
    on_trial: TrialCallback | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """The generalisation study: one full comparison per setting (tuned baselines vs
    ``learned`` at that setting's task options and horizon), each written with its figure into
    ``out/generalization/NAME``, and the table into ``out/generalization.{md,json}``.

    Horizons are multiples of ``learned``'s training horizon (``base_steps`` when unknown);
    ``label`` names the learned optimizer in each ``results.json``. Every setting's task runs
    on ``device`` (``learned``'s network must be there already: see
    :func:`l2o.devices.place_runners`). Returns the table's rows.
    """
    from l2o.compare.comparison import compare, write_outcome
    from l2o.compare.plots import replot
    from l2o.tasks import get_task

    info = getattr(getattr(learned, "net", None), "info", None)
    horizon = training_horizon(info, base_steps)
    rows = []
    for setting in settings:
        folder = Path(out) / "generalization" / setting.name
        steps = setting.steps_for(horizon)
        if on_setting is not None:
            on_setting(setting, steps)
        family = on_device(get_task(task, {**options, **setting.task_options}), device)
        outcome = compare(
            family,
            learned,
            baselines,
            steps=steps,
            instances=instances,
            trials=trials,
            tune_instances=tune_instances,
            storage=storage,
            seed=seed,
            on_trial=on_trial,
            on_stage=on_stage,
            objective=objective,
        )
        if label is not None:
            outcome.settings["optimizer"] = label
        results = write_outcome(folder, outcome)
        replot(folder)
        if on_result is not None:
            on_result(setting, results, folder)
        rows.append(table_row(setting, results))
    write_table(out, rows)
    return rows


def read_rows(out: str | Path, settings: Sequence[Setting]) -> list[dict[str, Any]]:
    """The table rebuilt from each setting's ``results.json`` (for ``--replot``)."""
    rows = []
    for setting in settings:
        path = Path(out) / "generalization" / setting.name / "results.json"
        if not path.is_file():
            raise L2OError(f"{path} does not exist; run the generalisation study without --replot")
        rows.append(
            table_row(setting, read_json_object(path, "an l2o results file", ["optimizers"]))
        )
    return rows


def _num(x: float | None) -> str:
    return fmt_number(x, digits=3)


def _ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"
