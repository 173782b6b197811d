"""Figures drawn from records (``results.json``, ``curves.csv``), never from live objects.

Every figure can therefore be redrawn without running anything (``l2o compare ... --replot``).
Each optimizer has one colour in every figure (:func:`optimizer_color`).

Example:
    >>> records = read_records("runs/compare-quadratic")  # doctest: +SKIP
    >>> plot_comparison(records, "runs/compare-quadratic/comparison.png")  # doctest: +SKIP
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only: no display, the same pixels everywhere

import matplotlib.pyplot as plt
import numpy as np

from l2o.errors import L2OError
from l2o.records import read_curve_rows, read_json_object

MAX_INDEX = 10_000_000  # a curves.csv index beyond this is damage, not data

LEARNED_COLOR = "#111111"
# Fixed, so "adam" is the same red in every figure of every run.
COLORS = {
    "sgd": "#1f77b4",
    "momentum": "#ff7f0e",
    "nesterov": "#2ca02c",
    "adam": "#d62728",
    "adamw": "#9467bd",
    "rmsprop": "#8c564b",
    "adagrad": "#e377c2",
}
# boxplot(vert=False) is deprecated from matplotlib 3.11; orientation= exists from 3.10.
HORIZONTAL = (
    {"orientation": "horizontal"}
    if tuple(int(p) for p in matplotlib.__version__.split(".")[:2]) >= (3, 10)
    else {"vert": False}
)
SPARE_COLORS = ["#17becf", "#bcbd22", "#7f7f7f", "#aec7e8", "#98df8a", "#ff9896", "#c5b0d5"]
HUGE = 1e300  # stands for a diverged run in quantiles (losses are float32: < 3.4e38)
FLOOR = 1e-12  # losses are clipped here for the log axis (an exact 0 would vanish)


@dataclass
class Records:
    """What a comparison folder holds: the results dictionary and the curves per optimizer."""

    results: dict[str, Any]
    curves: dict[str, np.ndarray]  # (steps + 1, instances) per optimizer
    folder: Path


def read_records(folder: str | Path) -> Records:
    """Read ``results.json`` and ``curves.csv`` of a comparison or evaluation folder."""
    folder = Path(folder)
    results_path, curves_path = folder / "results.json", folder / "curves.csv"
    for path in (results_path, curves_path):
        if not path.is_file():
            raise L2OError(
                f"{path} does not exist; run `l2o compare` (without --replot) into {folder} first"
            )
    results = read_json_object(results_path, "an l2o results file", ["optimizers"])
    if not isinstance(results["optimizers"], dict):
        raise L2OError(f"{results_path}: not an l2o results file (optimizers is not an object)")
    return Records(results, read_curves(curves_path), folder)


def read_curves(path: Path) -> dict[str, np.ndarray]:
    """Long-format ``optimizer,instance,step,loss`` → ``(steps + 1, instances)`` per optimizer."""
    rows: dict[str, list[tuple[int, int, float]]] = defaultdict(list)
    for row in read_curve_rows(path):
        if not (0 <= row["step"] <= MAX_INDEX and 0 <= row["instance"] <= MAX_INDEX):
            raise L2OError(f"{path}: step or instance out of range in {row}")
        rows[row["optimizer"]].append((row["step"], row["instance"], row["loss"]))
    curves = {}
    for name, items in rows.items():
        data = np.array(items, dtype=np.float64)
        steps, instances = int(data[:, 0].max()) + 1, int(data[:, 1].max()) + 1
        curve = np.full((steps, instances), np.nan)
        curve[data[:, 0].astype(int), data[:, 1].astype(int)] = data[:, 2]
        curves[name] = curve
    return curves


def optimizer_color(name: str) -> str:
    """One colour per optimizer name, the same in every figure (learned ones are black)."""
    if name.startswith("l2o"):
        return LEARNED_COLOR
    if name in COLORS:
        return COLORS[name]
    return SPARE_COLORS[zlib.crc32(name.encode()) % len(SPARE_COLORS)]


def legend_label(name: str, hyperparameters: Mapping[str, Any], learned: bool) -> str:
    """``adam lr=0.0123``: the name and its tuned hyperparameters (learned: its kind)."""
    if learned:
        kind = hyperparameters.get("optimizer", "")
        return f"{name} (learned{' ' + str(kind).upper() if kind else ''})"
    values = ", ".join(f"{k}={_short(v)}" for k, v in sorted(hyperparameters.items()))
    return f"{name} {values}" if values else f"{name} (defaults)"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def quartiles(curve: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """25 %, median and 75 % across instances per step; diverged runs count as +inf."""
    # A huge finite stand-in, not inf: interpolating between inf and a number gives nan. Any
    # quantile that draws on a diverged run is > 1e100, hence inf, as the maths says.
    values = np.where(np.isfinite(curve), curve.astype(np.float64), HUGE)
    q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75], axis=1)
    return tuple(np.where(q > 1e100, np.inf, q) for q in (q25, median, q75))  # type: ignore[return-value]


def plot_order(records: Records) -> list[str]:
    """The learned optimizer first, then the baselines from best to worst final median."""
    learned = records.results.get("learned", "")
    names = list(records.curves)

    def key(name: str) -> tuple[int, float]:
        median = records.results["optimizers"].get(name, {}).get("final_loss_median")
        return (name != learned, float("inf") if median is None else median)

    return sorted(names, key=key)


def describe_task(results: Mapping[str, Any]) -> str:
    options = {k: v for k, v in (results.get("task_options") or {}).items() if v is not None}
    shown = ", ".join(f"{k}={v}" for k, v in options.items())
    return f"{results.get('task', '?')}" + (f" ({shown})" if shown else "")


def plot_comparison(records: Records, path: str | Path) -> Path:
    """Loss vs step (median, 25–75 % band, log y) and the final-loss spread per optimizer."""
    results, learned = records.results, records.results.get("learned", "")
    names = plot_order(records)
    fig, (ax, box) = plt.subplots(
        1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [1.7, 1]}, constrained_layout=True
    )
    for name in names:
        curve = np.maximum(records.curves[name], FLOOR)
        q25, median, q75 = quartiles(curve)
        steps = np.arange(len(median))
        color, is_learned = optimizer_color(name), name == learned
        hparams = results["optimizers"].get(name, {}).get("hyperparameters", {})
        band = 0.22 if is_learned else 0.09  # eight overlapping bands must stay legible
        ax.fill_between(steps, q25, q75, color=color, alpha=band, linewidth=0)
        ax.plot(
            steps,
            median,
            color=color,
            linewidth=2.4 if is_learned else 1.4,
            zorder=3 if is_learned else 2,
            label=legend_label(name, hparams, is_learned),
        )
    ax.set_yscale("log")
    ax.set_xlabel("optimizee step")
    ax.set_ylabel("loss (log scale)")
    ax.set_title("median over test instances, band: 25–75 %", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.margins(x=0)
    ax.legend(fontsize=8, loc="best", framealpha=0.9, title="tuned on validation", title_fontsize=8)

    finals = [np.maximum(records.curves[n][-1], FLOOR) for n in names]
    finite = [np.where(np.isfinite(f), f, np.nan) for f in finals]
    parts = box.boxplot(
        [f[np.isfinite(f)] for f in finite],
        **HORIZONTAL,
        whis=(5, 95),
        showfliers=False,
        patch_artist=True,
        widths=0.6,
    )
    for patch, name in zip(parts["boxes"], names):
        patch.set_facecolor(optimizer_color(name))
        patch.set_alpha(0.35)
    for median_line in parts["medians"]:
        median_line.set_color("black")
    labels = []
    for name, f in zip(names, finite):
        diverged = int(np.isnan(f).sum())
        labels.append(name + (f"\n({diverged} diverged)" if diverged else ""))
    box.set_yticks(range(1, len(names) + 1), labels, fontsize=9)
    box.invert_yaxis()  # the learned optimizer on top, as in the legend
    box.set_xscale("log")
    # Under a decade of spread, matplotlib labels the minor ticks too and they collide.
    box.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    box.set_xlabel("final loss (log scale); box 25–75 %, whiskers 5–95 %")
    box.set_title(f"after {results.get('steps', '?')} steps", fontsize=10)
    box.grid(True, axis="x", which="major", alpha=0.3)

    settings, tuning = results.get("comparison", {}), results.get("tuning", {})
    subtitle = f"{results.get('instances', '?')} test instances"
    if tuning:
        # The studies' own counts: a reused study may hold more trials than this run asked for.
        counts = sorted({t.get("trials") for t in tuning.values()})
        trials = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
        subtitle += (
            f", baselines tuned with Optuna TPE: {trials} trials each on "
            f"{settings.get('tune_instances')} validation instances "
            f"({settings.get('tune_objective', 'mean')} final loss)"
        )
    fig.suptitle(f"{describe_task(results)}\n{subtitle}", fontsize=11)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def replot(folder: str | Path) -> Path:
    """Redraw ``comparison.png`` of a comparison folder from its records alone."""
    records = read_records(folder)
    return plot_comparison(records, Path(folder) / "comparison.png")
