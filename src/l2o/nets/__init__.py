"""Learned optimizer networks and their registry (architecture name → class)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from l2o.errors import L2OError
from l2o.nets.lstm import LSTMOptimizer, lstm_update
from l2o.nets.preprocess import log_sign, preprocess

_NETS: dict[str, Callable[..., nn.Module]] = {"lstm": LSTMOptimizer}


def register_net(name: str, cls: Callable[..., nn.Module]) -> None:
    """Make a learned-optimizer class buildable (and loadable) by its architecture name."""
    _NETS[name] = cls


def build_net(arch: Mapping[str, Any], seed: int | None = None) -> nn.Module:
    """Build a freshly initialised network from an architecture config (``arch_config()``)."""
    arch = dict(arch)
    kind = arch.pop("optimizer", "lstm")
    if kind not in _NETS:
        raise L2OError(f"unknown learned optimizer {kind!r}; known: {', '.join(sorted(_NETS))}")
    try:
        return _NETS[kind](**arch, seed=seed)
    except TypeError as exc:
        raise L2OError(f"invalid architecture for {kind!r}: {exc}") from None


def net_names() -> list[str]:
    return sorted(_NETS)


__all__ = [
    "LSTMOptimizer",
    "build_net",
    "log_sign",
    "lstm_update",
    "net_names",
    "preprocess",
    "register_net",
]
