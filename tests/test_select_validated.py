"""scripts/select_validated.py: the kept network chosen by its worst ratio to tuned Adam."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

import l2o
from l2o.errors import L2OError
from l2o.nets import build_net
from l2o.pretrained import path as pretrained_path
from l2o.serialization import save_optimizer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
SPEC = importlib.util.spec_from_file_location(
    "select_validated", ROOT / "scripts/select_validated.py"
)
script = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(script)

QUADRATIC = [("quadratic", "quadratic", {}, 0)]  # small and fast: the quadratic at 20 and 50 steps
STEPS = (20, 50)


def _validated(run: Path, iteration: int, net: torch.nn.Module) -> None:
    save_optimizer(net, run / "validated" / f"{iteration:06d}", {"iteration": iteration})


def test_the_network_with_the_lowest_worst_ratio_is_kept(tmp_path, monkeypatch) -> None:
    run, out = tmp_path / "run", tmp_path / "out"
    trained = l2o.load("quadratic")
    _validated(run, 20, build_net({"optimizer": "lstm"}, seed=0))  # untrained
    _validated(run, 40, trained)
    result = script.select(run, out, n=4, families=QUADRATIC, steps=STEPS)
    assert result["chosen"] == 40
    rows = result["candidates"]
    assert rows["20"]["worst"] > rows["40"]["worst"]
    assert set(rows["40"]["ratios"]) == {"quadratic-20", "quadratic-50"}
    kept = l2o.load(out)
    for name, tensor in trained.state_dict().items():
        torch.testing.assert_close(kept.state_dict()[name], tensor)
    info = json.loads((out / "config.json").read_text())
    assert info["selection"]["iteration"] == 40
    assert json.loads((out / "selection.json").read_text())["chosen"] == 40

    # a rerun scores only what is new: a third network, and the kept one changes only if it wins
    _validated(run, 60, build_net({"optimizer": "lstm"}, seed=1))
    scored = []
    real_score = script.score
    monkeypatch.setattr(
        script, "score", lambda net, *a, **k: scored.append(1) or real_score(net, *a, **k)
    )
    assert script.select(run, out, n=4, families=QUADRATIC, steps=STEPS)["chosen"] == 40
    assert len(scored) == 1


def test_candidates_are_scored_with_the_bounds_they_ship_with(tmp_path) -> None:
    run, out = tmp_path / "run", tmp_path / "out"
    (run / "validated" / "000020").mkdir(parents=True)
    for suffix, name in ((".safetensors", "optimizer.safetensors"), (".json", "config.json")):
        shutil.copyfile(
            pretrained_path("general").with_suffix(suffix), run / "validated/000020" / name
        )
    bounds = {"min_log_step": -12.0, "max_log_step": None}  # general ships -16
    script.select(run, out, n=2, bounds=bounds, families=QUADRATIC, steps=STEPS)
    info = json.loads((out / "config.json").read_text())
    assert l2o.load(out).spec.min_log_step == -12.0
    assert info["post_training"]["min_log_step"] == {"from": -16.0, "to": -12.0}
    assert info["selection"]["iteration"] == 20


def test_a_run_without_validated_networks_is_one_clear_error(tmp_path) -> None:
    (tmp_path / "run").mkdir()
    with pytest.raises(L2OError, match="holds no validated network"):
        script.select(tmp_path / "run", tmp_path / "out", families=QUADRATIC, steps=STEPS)
