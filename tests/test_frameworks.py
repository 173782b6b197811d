"""The Lightning and transformers examples: l2o inside their loops, through their checkpoints.

Each checks that a run stopped at a checkpoint and resumed through the framework's own mechanism
ends with exactly the weights of an uninterrupted run, and (the control) that restarting with
the model's weights but a fresh optimizer state does not: the LSTM state is what survives.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import warnings
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _quiet():
    logging.getLogger("lightning").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.slow  # ~13 s: four Lightning fits
def test_lightning_checkpoint_keeps_the_lstm_state(tmp_path):
    pytest.importorskip("lightning")
    ex = example("lightning_module")
    weights = ex.run(tmp_path)
    assert torch.equal(weights["straight"], weights["resumed"])
    # Control: the model's weights from the checkpoint, but a fresh optimizer (no LSTM state).
    fresh = ex.Classifier()
    checkpoint = torch.load(tmp_path / "epoch1.ckpt", weights_only=False)
    fresh.load_state_dict(checkpoint["state_dict"])
    ex.trainer(1).fit(fresh, ex.data())
    assert not torch.equal(weights["straight"], fresh.model[0].weight)


def test_transformers_checkpoint_keeps_the_lstm_state(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    ex = example("transformers_trainer")
    weights = ex.run(tmp_path)
    assert torch.equal(weights["straight"], weights["resumed"])
    saved = torch.load(tmp_path / "stopped" / "checkpoint-4" / "optimizer.pt", weights_only=True)
    assert {"h0", "c0", "h1", "c1", "step"} <= set(saved["state"][0])
    # Control: resume the model and the data order, but not the optimizer's state.
    (tmp_path / "stopped" / "checkpoint-4" / "optimizer.pt").unlink()
    control, model = ex.make_trainer(tmp_path / "stopped", 8)
    control.train(resume_from_checkpoint=str(tmp_path / "stopped" / "checkpoint-4"))
    assert not torch.equal(weights["straight"], model.net[0].weight)
