"""Data-parallel meta-training over processes: N workers compute what one process does."""

from __future__ import annotations

import pytest
import torch

import l2o
from l2o.cli.main import main

pytestmark = pytest.mark.distributed

TINY = [
    "--set",
    "iterations=3",
    "--set",
    "batch_size=8",
    "--set",
    "horizon=10",
    "--set",
    "truncation=5",
    "--set",
    "val_instances=6",
    "--set",
    "val_every=3",
]


def test_two_workers_train_the_same_optimizer_as_one_process(tmp_path):
    assert main(["train", "quadratic", "--out", str(tmp_path / "one"), *TINY]) == 0
    assert (
        main(["train", "quadratic", "--out", str(tmp_path / "two"), "--workers", "2", *TINY]) == 0
    )
    one, two = l2o.load(tmp_path / "one"), l2o.load(tmp_path / "two")
    fresh = l2o.meta.build_from_config(l2o.TrainConfig())
    for name, p in one.state_dict().items():
        torch.testing.assert_close(two.state_dict()[name], p, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(one.out_weight, fresh.out_weight)
    metrics = (tmp_path / "two" / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 1 + 3  # rank 0 alone writes


def test_worker_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "quadratic", "--out", str(tmp_path), "--workers", "3", *TINY]) == 2
    assert "multiple of --workers" in capsys.readouterr().err
