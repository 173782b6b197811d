"""The paper's generalisation study: the learned optimizer off its training distribution.

Each :class:`Setting` changes one thing against the set-up the optimizer was trained on: the
horizon (1×, 2×, 10× the training horizon: does it diverge past it?) or, for the digits MLP, the
architecture (40 hidden units, two hidden layers, ReLU), always with the *same* learned optimizer.
Every setting is a full comparison (:func:`l2o.compare.comparison.compare`): the baselines are
tuned again for that setting, on its validation instances, which is the fair reference.

Example:
    >>> [s.name for s in select_settings(["mlp"], "digits-mlp")]
    ['wider', 'deeper', 'relu']
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from l2o.compare.comparison import best_baseline
from l2o.errors import L2OError
from l2o.serialization import atomic_write_text


@dataclass(frozen=True)
class Setting:
    """One generalisation experiment: a change of horizon and/or of task options."""

    name: str
    description: str
    horizon: int = 1  # steps = horizon × the optimizer's training horizon
    task_options: Mapping[str, Any] = field(default_factory=dict)  # over the trained-on ones
    tasks: tuple[str, ...] = ()  # the tasks it applies to; () means every task

    def applies_to(self, task: str) -> bool:
        return not self.tasks or task in self.tasks


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
    ]
}  # fmt: skip
GROUPS = {
    "horizon": ["horizon-1x", "horizon-2x", "horizon-10x"],
    "mlp": ["wider", "deeper", "relu"],
    "all": list(SETTINGS),
}


def select_settings(names: Sequence[str], task: str) -> list[Setting]:
    """Settings by name or group (``horizon``, ``mlp``, ``all``), those that apply to ``task``."""
    chosen: list[str] = []
    for raw in names:
        name = raw.strip().lower()
        if not name:
            continue
        if name in GROUPS:
            chosen += GROUPS[name]
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
    atomic_write_text(out / "generalization.json", json.dumps(list(rows), indent=2) + "\n")
    atomic_write_text(out / "generalization.md", markdown_table(rows))
    return out / "generalization.md"


def read_rows(out: str | Path, settings: Sequence[Setting]) -> list[dict[str, Any]]:
    """The table rebuilt from each setting's ``results.json`` (for ``--replot``)."""
    rows = []
    for setting in settings:
        path = Path(out) / "generalization" / setting.name / "results.json"
        if not path.is_file():
            raise L2OError(f"{path} does not exist; run the generalisation study without --replot")
        rows.append(table_row(setting, json.loads(path.read_text())))
    return rows


def _num(x: float | None) -> str:
    return "diverged" if x is None else f"{x:.3g}"


def _ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"
