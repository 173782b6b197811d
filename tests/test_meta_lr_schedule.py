"""The meta-learning-rate schedule: constant (the paper's) or cosine to a tenth."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import l2o.meta.train as train_module
from l2o.config import TrainConfig
from l2o.errors import L2OError
from l2o.meta.train import meta_lr_at, meta_train

TINY = dict(batch_size=4, horizon=10, truncation=5, val_every=3, val_instances=4, meta_lr=0.01)


def test_constant_is_the_default_and_cosine_ends_at_a_tenth():
    constant = TrainConfig(iterations=5, **TINY)
    assert [meta_lr_at(constant, i) for i in range(5)] == [0.01] * 5
    cosine = constant.replace(meta_lr_schedule="cosine")
    rates = [meta_lr_at(cosine, i) for i in range(5)]
    assert math.isclose(rates[0], 0.01) and math.isclose(rates[-1], 0.001)
    assert all(a > b for a, b in itertools.pairwise(rates))
    assert math.isclose(rates[2], 0.0055)  # halfway: the mean of the two ends


def test_an_unknown_schedule_is_a_clear_error():
    with pytest.raises(L2OError, match="meta_lr_schedule must be one of constant, cosine"):
        TrainConfig(meta_lr_schedule="step")


class Stop(Exception):
    pass


def test_training_follows_the_schedule_and_resumes_identically(tmp_path, monkeypatch):
    config = TrainConfig(iterations=6, checkpoint_every=1, meta_lr_schedule="cosine", **TINY)
    rates: list[float] = []
    unroll = train_module._unroll_and_step

    def spy(*args):
        if len(rates) == stop_after:
            raise Stop
        rates.append(args[1].param_groups[0]["lr"])
        return unroll(*args)

    monkeypatch.setattr(train_module, "_unroll_and_step", spy)
    stop_after = -1
    full, _ = meta_train(config, out_dir=tmp_path / "full")
    assert rates == [meta_lr_at(config, i) for i in range(6)]
    rates.clear()
    stop_after = 3  # killed in iteration 4, after the checkpoint of iteration 3
    with pytest.raises(Stop):
        meta_train(config, out_dir=tmp_path / "cut")
    rates.clear()
    stop_after = -1
    resumed, _ = meta_train(config, out_dir=tmp_path / "cut", resume=True)
    assert rates == [meta_lr_at(config, i) for i in range(3, 6)]
    for p, q in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
