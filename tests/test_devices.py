"""Devices: cpu/cuda/cuda:N/auto everywhere; the CUDA checks run only where a GPU is present."""

from __future__ import annotations

import json

import pytest
import torch

import l2o
from l2o.cli.main import main
from l2o.config import TrainConfig
from l2o.devices import FamilyOnDevice, backend_for, move_batch, on_device, resolve_device
from l2o.errors import L2OError
from l2o.evaluate import LearnedRunner, evaluate
from l2o.meta import build_from_config, meta_train
from l2o.tasks import get_task

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine")
no_cuda = pytest.mark.skipif(CUDA, reason="checks the error given without CUDA")
TINY = TrainConfig(iterations=4, batch_size=8, horizon=10, truncation=5, val_instances=4)


def test_device_names_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if CUDA else "cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert backend_for(torch.device("cpu")) == "gloo"
    assert backend_for(torch.device("cuda", 0)) == "nccl"
    for bad in ("gpu", "mps", "cuda:x", ""):
        with pytest.raises(L2OError, match="cpu, cuda, cuda:N or auto"):
            resolve_device(bad)


@no_cuda
def test_cuda_without_cuda_is_one_clear_line(tmp_path, capsys):
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(L2OError, match="CUDA is not available") as info:
        resolve_device("cuda:1")
    assert "\n" not in str(info.value) and "--device cpu" in str(info.value)
    for argv in (
        ["train", "quadratic", "--device", "cuda", "--out", str(tmp_path / "t")],
        ["evaluate", "adam:lr=0.1", "quadratic", "--device", "cuda", "--out", str(tmp_path)],
        ["compare", "quadratic", "--optimizer", "sgd:lr=0.1", "--device", "cuda:0"],
        ["concurrent", "noise", "--device", "cuda", "--out", str(tmp_path / "c")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "CUDA is not available" in err[0], err
    assert not (tmp_path / "t").exists()  # refused before anything was written


def test_device_is_a_config_key_a_resume_may_change(tmp_path):
    args = ["train", "quadratic", "--out", str(tmp_path), "--set", "iterations=2"]
    args += ["--set", "batch_size=4", "--set", "horizon=10", "--set", "truncation=5"]
    assert main([*args, "--device", "cpu"]) == 0
    info = json.loads((tmp_path / "config.json").read_text())
    assert info["train_config"]["device"] == "cpu"
    # The checkpoint holds CPU tensors: it resumes on whatever device the machine offers.
    assert main([*args, "--set", "iterations=3", "--device", "auto", "--resume"]) == 0


def test_cpu_family_is_left_alone_and_a_wrapper_delegates():
    family = get_task("digits-mlp")
    assert on_device(family, "cpu") is family
    wrapped = FamilyOnDevice(family, torch.device("cpu"))
    assert (wrapped.name, wrapped.dim, wrapped.options()) == (
        family.name,
        family.dim,
        family.options(),
    )
    assert wrapped.shape is family.shape  # the family's own attributes pass through
    a, b = family.sample("train", [0, 1]), wrapped.sample("train", [0, 1])
    torch.testing.assert_close(
        a.loss_and_grad(a.init_params(), 3), b.loss_and_grad(b.init_params(), 3)
    )
    assert move_batch(a, torch.device("cpu")) is a


def test_a_batch_that_wraps_another_is_moved_whole():
    """The augmented task's batch holds its inner batch: both move (the meta device needs no
    GPU; on CUDA the inner batch left behind failed at the first init_params)."""
    family = get_task("augmented", {"task": "random-mlp"})
    moved = move_batch(family.sample("train", [0, 1]), torch.device("meta"))
    assert moved.inner.X.device.type == "meta"
    assert moved.scale.device.type == "meta"
    assert moved.init_params().device.type == "meta"


MIXTURE_MEMBERS = ["quadratic", "digits-mlp", "random-mlp", "augmented"]


@needs_cuda
@pytest.mark.parametrize("name", MIXTURE_MEMBERS)
def test_every_family_of_the_general_mixture_runs_on_cuda(name):
    batch = on_device(get_task(name), "cuda").sample("train", [0, 1])
    loss, grad = batch.loss_and_grad(batch.init_params(), 0)
    assert loss.device.type == grad.device.type == "cuda"
    assert torch.isfinite(grad).all()


@needs_cuda
def test_meta_training_on_cuda_learns_and_saves_cpu_tensors(tmp_path):
    config = TINY.replace(device="cuda", iterations=30, horizon=20)
    fresh = build_from_config(config)
    net, history = meta_train(config, out_dir=tmp_path)
    assert next(net.parameters()).device.type == "cuda"
    assert history.rows[-1]["meta_loss"] < history.rows[0]["meta_loss"]
    loaded = l2o.load(tmp_path)
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    assert not torch.allclose(loaded.state_dict()["out_weight"], fresh.state_dict()["out_weight"])
    # Resuming on the CPU a run written from the GPU works (checkpoints are device-free).
    meta_train(config.replace(device="cpu", iterations=31), out_dir=tmp_path, resume=True)


@needs_cuda
def test_a_cpu_trained_net_gives_the_same_updates_on_cuda():
    net, _ = meta_train(TINY)
    family = get_task("quadratic")
    cpu = evaluate(family, [LearnedRunner(net)], steps=20, instances=8)
    gpu_net = build_from_config(TINY)
    gpu_net.load_state_dict(net.state_dict())
    gpu = evaluate(
        on_device(family, "cuda"), [LearnedRunner(gpu_net.cuda())], steps=20, instances=8
    )
    torch.testing.assert_close(
        torch.from_numpy(gpu.curves["l2o"]),
        torch.from_numpy(cpu.curves["l2o"]),
        rtol=1e-4,
        atol=1e-5,
    )


@needs_cuda
def test_the_drop_in_optimizer_keeps_its_state_on_the_parameters_device():
    net, _ = meta_train(TINY)
    updates = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = torch.nn.Linear(5, 3).to(device)
        opt = l2o.LearnedOptimizer(model.parameters(), net)
        x = torch.randn(16, 5, generator=torch.Generator().manual_seed(1)).to(device)
        for _ in range(3):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
        held = [t for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
        assert held and all(t.device.type == device for t in held)  # "step" is a plain int
        updates[device] = [p.detach().cpu() for p in model.parameters()]
    for a, b in zip(updates["cpu"], updates["cuda"]):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
