"""scripts/median_spread.py: the network and Adam run on the same instances, and the spread
it prints is that of the medians over disjoint sets."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import l2o
from l2o.baselines import get_baseline
from l2o.evaluate import BaselineRunner
from l2o.tasks import get_task

ROOT = Path(__file__).resolve().parent.parent
SPEC = importlib.util.spec_from_file_location("median_spread", ROOT / "scripts/median_spread.py")
median_spread = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(median_spread)


def test_adams_losses_are_those_of_adam_on_the_same_instances() -> None:
    learned, adam = median_spread.final_losses(l2o.load("general"), "quadratic", "test", 6, 20, 0.1)
    batch = get_task("quadratic", {}).sample("test", list(range(6)))
    with torch.no_grad():
        *_, theta = BaselineRunner(get_baseline("adam"), {"lr": 0.1}).trajectory(batch, 20)
        expected = batch.eval_loss(theta).double()
    torch.testing.assert_close(adam, expected)
    assert learned.shape == (6,) and bool(torch.isfinite(learned).all())
    start = batch.eval_loss(batch.init_params())
    assert bool((learned < start).all())  # 20 learned steps lower every loss


def test_it_prints_the_spread_over_disjoint_sets(monkeypatch, capsys) -> None:
    learned = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0], dtype=torch.float64)
    adam = torch.full((8,), 10.0, dtype=torch.float64)
    monkeypatch.setattr(median_spread, "final_losses", lambda *a: (learned, adam))
    argv = ["median_spread.py", "general", "--instances", "8", "--chunk", "4"]
    monkeypatch.setattr(sys, "argv", argv)
    median_spread.main()
    out = capsys.readouterr().out
    # torch's median of an even count is the lower middle value: 2 and 20 over Adam's 10
    assert "2 sets of 4: 0.200 to 2.000" in out
    assert "halves: 0.200, 2.000" in out


def test_too_few_instances_for_two_sets_is_a_usage_error(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["median_spread.py", "general", "--instances", "100"])
    with pytest.raises(SystemExit):
        median_spread.main()
    assert "at least two --chunk sets" in capsys.readouterr().err
