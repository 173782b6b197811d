"""Heavier end-to-end checks (marked slow; .ci/run runs them)."""

from __future__ import annotations

import numpy as np
import pytest

from l2o.baselines import get_baseline
from l2o.config import TrainConfig
from l2o.evaluate import BaselineRunner, LearnedRunner, evaluate
from l2o.meta import meta_train
from l2o.tasks import get_task

pytestmark = pytest.mark.slow


def test_meta_trained_quadratic_optimizer_beats_adam_at_its_best_learning_rate():
    net, history = meta_train(TrainConfig(iterations=150, val_every=50))
    assert history.skipped == 0
    runners = [LearnedRunner(net)] + [
        BaselineRunner(get_baseline("adam"), {"lr": lr}, name=f"adam-{lr}")
        for lr in (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
    ]
    result = evaluate(get_task("quadratic"), runners, steps=100, instances=100, timing_steps=2)
    final = {name: float(np.mean(curve[-1])) for name, curve in result.curves.items()}
    best_adam = min(v for k, v in final.items() if k.startswith("adam"))
    assert final["l2o"] < best_adam, final


def test_quick_reproduce_writes_the_whole_report(tmp_path):
    from l2o.cli.main import main

    assert main(["reproduce", "--quick", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "REPORT.md").read_text()
    for title in (
        "Meta-training on the quadratic",
        "Quadratic: learned vs tuned baselines",
        "Digits MLP: learned vs tuned baselines (100 steps)",
        "(200 steps)",
        "Generalisation on the digits MLP",
        "noisy least squares",
        "rotated digits",
        "poisoned labels, softmax",
        "poisoned labels, attention",
    ):
        assert title in report, title
    assert report.count("![") >= 9
