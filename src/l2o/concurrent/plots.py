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
