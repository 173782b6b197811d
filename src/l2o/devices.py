"""Where tensors live: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``, for every command and the API.

Instances are always drawn on the CPU (their seeded generators are CPU generators, so an instance
is the same on every device) and then moved: :func:`on_device` wraps a task family so that its
batches arrive on the device. Networks are built on the CPU (same initial weights everywhere)
and moved with ``.to(device)``; checkpoints and ``.safetensors`` files hold CPU tensors.

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("auto").type in ("cpu", "cuda")
    True
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from l2o.errors import L2OError
from l2o.tasks.base import TaskBatch, TaskFamily

CHOICES = "cpu, cuda, cuda:N or auto"


def resolve_device(spec: str | torch.device | None) -> torch.device:
    """The device ``spec`` names, checked against this machine.

    ``auto`` is a GPU when CUDA is available, else the CPU. A bare ``cuda`` (or ``auto``) in a
    distributed run is the process's own GPU, ``cuda:LOCAL_RANK`` (one process per GPU, as
    ``torchrun`` launches them).
    """
    text = "cpu" if spec is None else str(spec).strip().lower()
    if text == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        text = "cuda"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise L2OError(f"device must be one of {CHOICES}, got {spec!r}") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise L2OError(f"device must be one of {CHOICES}, got {spec!r}")
    if not torch.cuda.is_available():
        why = "a CPU-only build of torch" if torch.version.cuda is None else "no GPU is visible"
        raise L2OError(f"device {text!r}: CUDA is not available ({why}); use --device cpu or auto")
    count = torch.cuda.device_count()
    if device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % count)
    if device.index >= count:
        raise L2OError(f"device {text!r}: there are {count} CUDA device(s), cuda:0..{count - 1}")
    return device


def backend_for(device: torch.device) -> str:
    """The ``torch.distributed`` backend for data-parallel work on ``device``."""
    return "nccl" if device.type == "cuda" else "gloo"


def move_batch(batch: TaskBatch, device: torch.device) -> TaskBatch:
    """A shallow copy of ``batch`` whose tensor attributes live on ``device``.

    A batch that wraps another (an augmented task's inner batch) has that one moved too. Helpers
    that only produce indices (a minibatch stream) stay on the CPU: indexing a GPU tensor with CPU
    indices is allowed, and their seeded draws stay the same on every device.
    """
    if all(t.device == device for t in _tensors(batch)):
        return batch
    moved = copy.copy(batch)
    for name, value in vars(batch).items():
        if isinstance(value, Tensor):
            setattr(moved, name, value.to(device))
        elif isinstance(value, TaskBatch):
            setattr(moved, name, move_batch(value, device))
    return moved


def on_device(family: TaskFamily, device: torch.device | str | None) -> TaskFamily:
    """``family`` whose batches are on ``device`` (``family`` itself for the CPU)."""
    target = resolve_device(device) if not isinstance(device, torch.device) else device
    if target.type == "cpu":
        return family
    return FamilyOnDevice(family, target)


class FamilyOnDevice(TaskFamily):
    """A task family whose batches are moved to a device; everything else is the family's."""

    def __init__(self, family: TaskFamily, device: torch.device) -> None:
        self.family, self.device = family, device
        self.name, self.dim = family.name, family.dim
        self.train_defaults = family.train_defaults

    def sample(self, split: str, indices: Sequence[int]) -> TaskBatch:
        return move_batch(self.family.sample(split, indices), self.device)

    def describe(self) -> str:
        return self.family.describe()

    def options(self) -> dict:
        return self.family.options()

    def __getattr__(self, name: str) -> Any:  # the family's own extras (data(), shape, ...)
        if name == "family":  # not set yet (copying): no recursion
            raise AttributeError(name)
        return getattr(self.family, name)


def place_runners(runners: Sequence[Any], device: torch.device) -> None:
    """Move the networks of learned-optimizer runners to ``device`` (baselines follow θ)."""
    for runner in runners:
        net = getattr(runner, "net", None)
        if isinstance(net, torch.nn.Module):
            runner.net = net.to(device)


def _tensors(batch: TaskBatch) -> list[Tensor]:
    """The batch's tensors, those of the batches it wraps included."""
    found: list[Tensor] = []
    for value in vars(batch).values():
        if isinstance(value, Tensor):
            found.append(value)
        elif isinstance(value, TaskBatch):
            found += _tensors(value)
    return found
