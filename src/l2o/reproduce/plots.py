"""Meta-training curves drawn from ``metrics.csv``."""

from __future__ import annotations

import csv
import math
from pathlib import Path


def plot_training(metrics: Path, out: Path, title: str) -> Path:
    """Meta-loss per iteration and validation loss (log scale) → ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(metrics) as f:
        rows = list(csv.DictReader(f))
    it = [int(r["iteration"]) for r in rows]
    meta = [float(r["meta_loss"]) for r in rows]
    val = [
        (int(r["iteration"]), float(r["val_loss"]))
        for r in rows
        if math.isfinite(float(r["val_loss"]))
    ]
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
