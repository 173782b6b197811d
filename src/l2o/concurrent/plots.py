"""Figures of the concurrent framework, drawn from records (``lambdas.csv``), never live objects.

python -c "from l2o.concurrent.plots import plot_lambdas; plot_lambdas('runs/x')"
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from l2o.records import LAMBDAS_FILE, read_lambda_rows


def plot_lambdas(run_dir: str | Path, title: str | None = None) -> Path:
    """Draw ``lambdas.png`` (λ per optimizee vs meta-iteration) from ``run_dir/lambdas.csv``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = read_lambda_rows(run_dir / LAMBDAS_FILE)
    series: dict[tuple[int, str, bool], list[tuple[int, float]]] = defaultdict(list)
    for r in rows:
        key = (r["variant"], r["label"], r["clean"] == 1)
        series[key].append((r["iteration"], r["lambda"]))
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for (variant, label, clean), points in sorted(series.items()):
        xs, ys = zip(*sorted(points))
        slot = next(r["slot"] for r in rows if r["variant"] == variant)
        where = "slot shuffled per instance" if slot == "*" else f"slot {slot}"
        name = f"{label} ({where}{', clean' if clean else ''})"
        ax.plot(xs, ys, lw=2.5 if clean else 1.2, ls="-" if clean else "--", label=name)
    if not series:
        ax.text(0.5, 0.5, "this combiner has no mixing weights λ", ha="center", va="center")
    else:
        ax.legend(fontsize=8)
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("λ")
    ax.set_ylim(0, 1)
    ax.set_title(title or "mixing weights λ per optimizee")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = run_dir / "lambdas.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_robust(run_dir: str | Path) -> Path:
    """Draw ``robust.png`` (worst-case clean loss against f, per aggregator) from ``robust.json``.

    Diverged points (null) are drawn at the top edge with an ×.
    """
    import json
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    data = json.loads((run_dir / "robust.json").read_text())
    fs = data["f"]
    finite = [
        v
        for a in data["aggregators"].values()
        for v in a["worst_case"].values()
        if v is not None and math.isfinite(v)
    ] + [v for v in data["oracle"].values() if v is not None]
    top = max(finite) * 1.5 if finite else 1.0
    fig, ax = plt.subplots(figsize=(7.0, 4.4))
    for name, agg in data["aggregators"].items():
        ys = [agg["worst_case"][str(f)] for f in fs]
        shown = [top if y is None else y for y in ys]
        label = f"{name} (learned)" if agg["learned"] and "learned" not in name else name
        label += " (clean reference)" if "advantage" in agg else ""
        (line,) = ax.plot(fs, shown, lw=2.8 if agg["learned"] else 1.2, marker="o", label=label)
        for f, y in zip(fs, ys):
            if y is None:
                ax.plot([f], [top], marker="x", ms=10, color=line.get_color())
    ax.plot(fs, [data["oracle"][str(f)] for f in fs], "k--", lw=1.5, label="oracle (honest mean)")
    ax.set_yscale("log")
    if any(v is None for a in data["aggregators"].values() for v in a["worst_case"].values()):
        ax.text(0.01, 0.99, "× at the top: diverged", transform=ax.transAxes, va="top", fontsize=7)
    ax.set_xticks(fs)
    ax.set_xlabel(f"f (Byzantine sources of K = {data['k']})")
    ax.set_ylabel("worst-case clean loss (median over test instances)")
    held = data.get("held_out_attacks") or []
    held_text = f"; held out of meta-training: {', '.join(held)}" if held else ""
    ax.set_title(
        f"{data['task']}: worst case over {', '.join(data['attacks'])}{held_text}", fontsize=9
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    out = run_dir / "robust.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
