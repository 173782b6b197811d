"""``REPORT.md``: for each experiment the exact command, its figure and its numbers.

Everything here is read back from the files the steps wrote (results.json, metrics.csv,
lambdas.csv, ...), never from live objects, so the report can be rebuilt at any time.
"""

from __future__ import annotations

import os
import platform
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from l2o.records import atomic_write_text, fmt_number, read_json, read_metrics
from l2o.reproduce.plan import Step
from l2o.reproduce.runner import step_dir


def environment() -> dict[str, str]:
    import numpy
    import optuna
    import sklearn
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__,
        "optuna": optuna.__version__,
        "platform": platform.platform(),
        "cpu": f"{cpu} ({os.cpu_count()} cores)",
        "torch threads": "1 per process (l2o's default)",
    }


_num = fmt_number


def _hyper(h: Mapping[str, Any]) -> str:
    if "optimizer" in h:  # a learned optimizer's architecture: too long for a table cell
        return f"learned ({h.get('optimizer')})"
    return ", ".join(f"{k}={_num(v)}" for k, v in h.items()) or "defaults"


def optimizer_table(results: Mapping[str, Any]) -> str:
    rows = sorted(
        results["optimizers"].items(),
        key=lambda kv: (
            kv[1].get("final_loss_median") is None,
            kv[1].get("final_loss_median") or 0.0,
        ),
    )
    lines = [
        "| optimizer | median final loss | 25 % | 75 % | mean | hyperparameters | ms/step |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for name, s in rows:
        lines.append(
            f"| {name} | {_num(s.get('final_loss_median'))} | {_num(s.get('final_loss_q25'))} "
            f"| {_num(s.get('final_loss_q75'))} | {_num(s.get('final_loss_mean'))} "
            f"| {_hyper(s.get('hyperparameters', {}))} | {_num(s.get('ms_per_step'))} |"
        )
    return "\n".join(lines)


def lambda_table(results: Mapping[str, Any]) -> str:
    slots = results.get("slots") or []
    final = results.get("lambda_final") or []
    clean = results.get("clean_slot")
    shuffled = clean is None and any(isinstance(s, Mapping) and s.get("clean") for s in slots)
    head = "optimizee (slot shuffled per instance)" if shuffled else "slot | optimizee"
    lines = [
        f"| {head} | final λ | clean |",
        "| --- | ---: | :---: |" if shuffled else "| ---: | --- | ---: | :---: |",
    ]
    for i, slot in enumerate(slots):
        info = slot if isinstance(slot, Mapping) else {"label": str(slot)}
        lam = _num(final[i]) if i < len(final) else ""
        is_clean = info.get("clean", i == clean)
        where = "" if shuffled else f"{info.get('slot', i)} | "
        lines.append(f"| {where}{info.get('label', i)} | {lam} | {'✓' if is_clean else ''} |")
    tested = results.get("lambda_test") or {}
    for name, stats in tested.items():
        if isinstance(stats, Mapping) and "clean_final_step_mean" in stats:
            lines += [
                "",
                f"On test instances, {name} puts λ = "
                f"{_num(stats['clean_final_step_mean'])} on the clean optimizee at the last "
                f"step (mean over instances; lowest instance "
                f"{_num(stats.get('clean_final_step_min'))}; over all steps "
                f"{_num(stats.get('clean_all_steps_mean'))}).",
            ]
    return "\n".join(lines)


def training_summary(folder: Path) -> str:
    info_path = folder / "config.json"
    info = read_json(info_path, "a run config") if info_path.is_file() else {}
    rows = read_metrics(folder)
    last: dict[str, Any] = rows[-1] if rows else {}
    cfg = info.get("train_config", {})
    return "\n".join(
        [
            "| iterations | batch | horizon | truncation | best validation loss | at iteration "
            "| skipped | training time |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| {info.get('iterations', len(rows))} | {cfg.get('batch_size', '')} "
            f"| {cfg.get('horizon', '')} | {cfg.get('truncation', '')} "
            f"| {_num(info.get('best_val_loss'))} | {info.get('best_iteration', '')} "
            f"| {last.get('skipped', '')} | {float(last.get('wall_time', 0.0)):.0f} s |",
        ]
    )


def _figure(folder: Path, out: Path, name: str, alt: str) -> str:
    path = folder / name
    return f"![{alt}]({path.relative_to(out)})\n" if path.is_file() else ""


def section(step: Step, out: Path, record: Mapping[str, Any]) -> str:
    folder = step_dir(out, step)
    command = "l2o " + " ".join(shlex.quote(a) for a in record["command"])
    parts = [
        f"## {step.title}",
        "",
        f"```sh\n{command}\n```",
        "",
        f"Wall time: {record.get('wall_seconds', 0.0):.0f} s"
        + (" (reused from an earlier run)" if record.get("reused") else "")
        + ".",
        "",
    ]
    if step.notes:
        parts += [step.notes, ""]
    results_path = folder / "results.json"
    results = read_json(results_path, "an l2o results file") if results_path.is_file() else None
    if step.kind == "train":
        from l2o.reproduce.plots import plot_training

        figure = plot_training(folder / "metrics.csv", folder / "training.png", step.title)
        parts += [
            f"![meta-training curves]({figure.relative_to(out)})",
            "",
            training_summary(folder),
            "",
            f"Resolved config: `{(folder / 'config.json').relative_to(out)}`.",
            "",
        ]
    if step.kind == "compare" and results:
        parts += [
            _figure(folder, out, "comparison.png", "loss vs step"),
            f"{results.get('instances')} test instances, {results.get('steps')} steps; "
            "final loss over instances (baselines tuned on validation instances):",
            "",
            optimizer_table(results),
            "",
        ]
    if (folder / "generalization.md").is_file():
        parts += [
            "Generalisation (learned vs best tuned baseline, median final loss; each "
            "setting's baselines are tuned again for it):",
            "",
            (folder / "generalization.md").read_text().strip(),
            "",
        ]
        figures = sorted((folder / "generalization").glob("*/comparison.png"))
        if step.kind == "generalization" and figures:
            links = ", ".join(f"[{p.parent.name}]({p.relative_to(out)})" for p in figures)
            shown = [p for p in figures if p.parent.name in ("horizon-10x", "relu")]
            parts += [f"Figures: {links}.", ""]
            parts += [f"![{p.parent.name}]({p.relative_to(out)})" for p in shown] + [""]
    if step.kind == "concurrent" and results:
        parts += [
            _figure(folder, out, "lambdas.png", "λ per optimizee vs meta-iteration"),
            lambda_table(results),
            "",
            f"Test on clean held-out data, {results.get('instances')} instances, "
            f"{results.get('steps')} steps:",
            "",
            optimizer_table(results),
            "",
        ]
    return "\n".join(parts)


def write_report(
    out: Path,
    steps: list[Step],
    records: Mapping[str, Mapping[str, Any]],
    quick: bool,
    total_seconds: float,
    invocation: str,
) -> Path:
    env = environment()
    lines = [
        "# l2o: reproduction report",
        "",
        f"Produced by `{invocation}` ({'quick settings' if quick else 'full settings'}): "
        f"{total_seconds / 60:.1f} minutes of wall time for this invocation"
        + (
            f"; the steps took {sum(r.get('wall_seconds', 0.0) for r in records.values()) / 60:.1f}"
            " minutes in all, some in an earlier invocation (reused)"
            if any(r.get("reused") for r in records.values())
            else ""
        )
        + ". Every number below is read from the files in this folder; every figure can be "
        "redrawn from them (`l2o compare ... --replot`).",
        "",
        "Losses are final losses (at the last step) over test instances never used in "
        "meta-training or tuning; baselines were tuned with Optuna on validation instances.",
        "",
        "## Environment",
        "",
        *[f"- {k}: {v}" for k, v in env.items()],
        "",
    ]
    for step in steps:
        if step.name in records:
            lines.append(section(step, out, records[step.name]))
    path = out / "REPORT.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
