"""Honest comparisons: baselines tuned on validation, all optimizers run on the same test set.

- :mod:`l2o.compare.tuning`: one Optuna study per (task, baseline, steps), in any Optuna storage.
- :mod:`l2o.compare.comparison`: tune what is not tuned yet, evaluate on test, write the records.
- :mod:`l2o.compare.plots`: figures drawn from the records (``results.json``, ``curves.csv``).
- :mod:`l2o.compare.generalization`: the paper's study (longer horizons, other MLPs).
"""

from __future__ import annotations

from l2o.compare.comparison import DEFAULT_BASELINES, Outcome, best_baseline, compare, write_outcome
from l2o.compare.generalization import SETTINGS, Setting, select_settings
from l2o.compare.plots import plot_comparison, read_records, replot
from l2o.compare.tuning import Tuned, tune

__all__ = [
    "DEFAULT_BASELINES",
    "SETTINGS",
    "Outcome",
    "Setting",
    "Tuned",
    "best_baseline",
    "compare",
    "plot_comparison",
    "read_records",
    "replot",
    "select_settings",
    "tune",
    "write_outcome",
]
