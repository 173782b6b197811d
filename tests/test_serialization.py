from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import l2o
from l2o.errors import L2OError
from l2o.nets import LSTMOptimizer


def test_loaded_optimizer_equals_saved_and_differs_from_fresh(tmp_path):
    net = LSTMOptimizer(hidden_size=8, output_scale=0.05, seed=3)
    with torch.no_grad():
        net.out_bias.fill_(0.25)
    path = l2o.save_optimizer(net, tmp_path, extra={"note": "x"})
    assert path.name == "optimizer.safetensors" and (tmp_path / "config.json").is_file()
    loaded = l2o.load(tmp_path)
    assert loaded.arch_config() == net.arch_config()
    for name, p in net.state_dict().items():
        assert torch.equal(p, loaded.state_dict()[name]), name
    fresh = LSTMOptimizer(hidden_size=8, output_scale=0.05, seed=4)
    grad = torch.randn(5)
    a, _ = net(grad, net.init_state(5))
    b, _ = loaded(grad, loaded.init_state(5))
    c, _ = fresh(grad, fresh.init_state(5))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert json.loads((tmp_path / "config.json").read_text())["note"] == "x"


def test_corrupt_file(tmp_path):
    path = tmp_path / "optimizer.safetensors"
    path.write_bytes(b"\x00\x01 definitely not safetensors")
    with pytest.raises(L2OError, match="not a readable safetensors file"):
        l2o.load(path)


def test_foreign_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path))
    with pytest.raises(L2OError, match="not an l2o optimizer"):
        l2o.load(path)


def test_mismatched_architecture(tmp_path):
    net = LSTMOptimizer(hidden_size=8, seed=0)
    path = l2o.save_optimizer(net, tmp_path / "opt.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    config = json.loads(meta["config"])
    config["architecture"]["hidden_size"] = 20
    save_file(tensors, str(path), metadata={**meta, "config": json.dumps(config)})
    with pytest.raises(L2OError, match="does not match its architecture"):
        l2o.load(path)


def test_missing_paths(tmp_path):
    with pytest.raises(L2OError, match="does not exist"):
        l2o.load(tmp_path / "nothing")
    with pytest.raises(L2OError, match=r"has no optimizer\.safetensors"):
        l2o.load(tmp_path)
