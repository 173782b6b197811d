"""scripts/heldout_check.py: the held-out datasets check runs end to end and measures spikes."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SPEC = importlib.util.spec_from_file_location("heldout_check", ROOT / "scripts/heldout_check.py")
heldout_check = importlib.util.module_from_spec(SPEC)
sys.modules["heldout_check"] = heldout_check  # dataclasses look their module up there
SPEC.loader.exec_module(heldout_check)


def test_largest_rise_counts_only_rises_after_the_loss_fell_tenfold() -> None:
    assert heldout_check.largest_rise([1.0, 0.5, 0.9, 0.2]) == 0.0  # never below 0.1
    assert heldout_check.largest_rise([1.0, 0.05, 0.3, 0.01, 0.02]) == 0.25
    assert heldout_check.largest_rise([1.0, 0.01, math.inf]) == math.inf


def test_the_check_runs_on_every_held_out_problem(tmp_path, capsys) -> None:
    out = tmp_path / "held.json"
    argv = ["general-fast", "--steps", "100", "--seeds", "1", "--json", str(out)]
    assert heldout_check.main(argv) == 0
    results = json.loads(out.read_text())
    assert set(results) == {p.name for p in heldout_check.PROBLEMS}
    for row in results.values():
        assert 0 < row["adam"]["100"] < math.inf
        learned = row["general-fast"]
        assert 0 <= learned["finals"]["100"] < math.inf and learned["largest_rise"] >= 0
    assert "breast-cancer" in capsys.readouterr().out


def test_the_proxy_problems_have_the_held_out_shapes_and_no_real_data(tmp_path) -> None:
    """``--proxy``: synthetic sets with each held-out set's size, features and classes, so a
    choice between variants need not look at the held-out data."""
    for real, proxy in zip(heldout_check.PROBLEMS, heldout_check.PROXY_PROBLEMS, strict=True):
        (x, y), (px, py) = heldout_check.standardised(real), heldout_check.standardised(proxy)
        assert px.shape == x.shape and py.shape == y.shape and proxy.hidden == real.hidden
        if real.classification:
            assert set(py.tolist()) == set(y.tolist())
        assert not torch.allclose(px[:, : x.shape[1]], x)
    out = tmp_path / "proxy.json"
    argv = ["general-fast", "--steps", "100", "--seeds", "1", "--proxy", "--json", str(out)]
    assert heldout_check.main(argv) == 0
    assert set(json.loads(out.read_text())) == {p.name for p in heldout_check.PROXY_PROBLEMS}
