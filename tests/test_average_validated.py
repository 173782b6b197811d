"""scripts/average_validated.py: the tail average of a run's validated networks."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import l2o
from l2o.errors import L2OError
from l2o.nets import build_net
from l2o.serialization import save_optimizer

ROOT = Path(__file__).resolve().parent.parent
SPEC = importlib.util.spec_from_file_location(
    "average_validated", ROOT / "scripts/average_validated.py"
)
script = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(script)


def _run(tmp_path: Path, nets: dict[int, torch.nn.Module]) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"task": "quadratic", "seed": 3}))
    (run / "metrics.csv").write_text("iteration,meta_loss\n")
    for iteration, net in nets.items():
        save_optimizer(net, run / "validated" / f"{iteration:06d}", {"iteration": iteration})
    return run


def test_the_last_networks_are_averaged_weight_by_weight(tmp_path) -> None:
    nets = {i: build_net({"optimizer": "lstm"}, seed=i) for i in (20, 40, 100)}
    run = _run(tmp_path, nets)
    _, iterations = script.average(run, tmp_path / "out", last=2)
    assert iterations == [40, 100]  # numeric order, the last two
    averaged = l2o.load(tmp_path / "out").state_dict()
    for name, tensor in averaged.items():
        expected = (nets[40].state_dict()[name] + nets[100].state_dict()[name]) / 2
        torch.testing.assert_close(tensor, expected)
    info = json.loads((tmp_path / "out" / "config.json").read_text())
    assert info["post_training"]["averaged"] == [40, 100] and info["seed"] == 3
    assert (tmp_path / "out" / "metrics.csv").is_file()
    # more than there are: all of them
    assert script.average(run, tmp_path / "all", last=10)[1] == [20, 40, 100]


def test_bad_runs_and_counts_are_clear_errors(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(L2OError, match="no validated networks"):
        script.average(tmp_path / "empty", tmp_path / "out", last=2)
    mixed = {20: build_net({"optimizer": "lstm"}), 40: build_net({"optimizer": "mlp"})}
    run = _run(tmp_path, mixed)
    with pytest.raises(L2OError, match="another architecture"):
        script.average(run, tmp_path / "out", last=2)
    with pytest.raises(L2OError, match="--last must be >= 1"):
        script.average(run, tmp_path / "out", last=0)
