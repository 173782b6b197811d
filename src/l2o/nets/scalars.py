"""Cached 0-d tensor constants for the hot loop.

In eager PyTorch a Python number in an elementwise op (``x * 2.0``, ``x >= t``,
``torch.where(c, x, -1.0)``) is turned into a tensor and converted to ``x``'s dtype on every
call; at the few thousand coordinates of meta-training that overhead is a measurable share of a
step. A 0-d tensor of the same dtype gives bit-identical results without it.
"""

from __future__ import annotations

import torch
from torch import Tensor

_CACHE: dict[tuple[float, torch.dtype, torch.device], Tensor] = {}


def scalar(value: float, like: Tensor) -> Tensor:
    """``value`` as a 0-d tensor with ``like``'s dtype and device (cached)."""
    key = (value, like.dtype, like.device)
    found = _CACHE.get(key)
    if found is None:
        found = _CACHE[key] = torch.tensor(value, dtype=like.dtype, device=like.device)
    return found
