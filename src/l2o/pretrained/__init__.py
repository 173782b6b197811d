"""Pretrained learned optimizers shipped inside the package (safetensors + JSON card each).

Each ``NAME.safetensors`` here was produced by the command in its ``NAME.card.json`` card.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

from torch import nn

from l2o.errors import L2OError
from l2o.serialization import load_optimizer_file

HERE = Path(__file__).parent
DEFAULT = "general"  # the network of l2o.LearnedOptimizer when none is given


def names() -> list[str]:
    """Names of the pretrained optimizers in this installation."""
    return sorted(p.stem for p in HERE.glob("*.safetensors"))


def card(name: str) -> dict:
    """The JSON card of a pretrained optimizer: task, horizon, command, what it beats."""
    path = HERE / f"{name}.card.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def path(name: str) -> Path:
    if name not in names():
        known = ", ".join(names()) or "none are installed"
        raise L2OError(f"unknown pretrained optimizer {name!r}; known: {known}")
    return HERE / f"{name}.safetensors"


def pretrained(name: str) -> nn.Module:
    """Load a pretrained learned optimizer by name, e.g. ``l2o.pretrained("quadratic")``."""
    return load_optimizer_file(path(name))


class _CallableModule(types.ModuleType):
    """``l2o.pretrained`` is this module and the loader at once: ``l2o.pretrained("quadratic")``
    and ``l2o.pretrained.names()`` both work, and ``from l2o import pretrained`` keeps working."""

    def __call__(self, name: str) -> nn.Module:
        return pretrained(name)


sys.modules[__name__].__class__ = _CallableModule
