"""Meta-training curves drawn from ``metrics.csv``."""

from __future__ import annotations

import math
from pathlib import Path

from l2o.records import read_metrics


def plot_training(metrics: Path, out: Path, title: str) -> Path:
    """Meta-loss per iteration and validation loss (log scale) → ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics.parent)
    it = [r["iteration"] for r in rows]
    meta = [r["meta_loss"] for r in rows]
    val = [(r["iteration"], r["val_loss"]) for r in rows if math.isfinite(r["val_loss"])]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    ax.plot(it, meta, color="#1f77b4", lw=1, alpha=0.8, label="meta-loss (mean loss per step)")
    if val:
        ax.plot(*zip(*val), "o-", color="#d62728", ms=3, label="validation final loss")
    ax.set_yscale("log")
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
