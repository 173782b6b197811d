"""The protocol every learned-optimizer network meets, and what its kinds share.

A network is an ``nn.Module`` that owns its weights and a :class:`~l2o.nets.spec.NetSpec`; its
maths is a pure function of (weights, gradients, state). Meta-training (out of place, through
autograd), the drop-in :class:`l2o.LearnedOptimizer` (in place, under ``no_grad``) and the
concurrent framework all call :meth:`OptimizerNet.step`:

    update, state = net.step(grads, state, layout, step, lr)

- ``grads``: ``(B, D)`` gradients of B instances of D coordinates (``(B, D, ...)`` for concurrent
  nets, which read K gradients per coordinate);
- ``state``: a tuple of float32 tensors ``(B·D, width)``, one per :meth:`state_names` entry,
  made by :meth:`init_state` (feature accumulators first, then the net's own recurrent state);
- ``layout``: the shapes of the tensors θ splits into (per-tensor feature normalisation);
- ``step``: how many updates were made before this one (time features, bias corrections);
- ``lr``: the output scale; ``None`` takes ``spec.output_scale``;
- ``params``: θ itself ``(B, D)``, passed only to nets whose :attr:`~OptimizerNet.needs_params`
  is true (a relative step size reads each tensor's scale); never differentiated.

θ ← θ + update. Coordinates whose gradient is exactly 0 get a 0 update (``skip_zero_grad``).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor, nn

from l2o.nets.features import TensorNorm
from l2o.nets.spec import NetSpec
from l2o.tasks.base import Layout

State = tuple[Tensor, ...]


class OptimizerNet(nn.Module):
    """Base class of learned-optimizer networks (see the module docstring for the protocol)."""

    spec: NetSpec
    kind: str  # the registered name (the spec's ``optimizer``)

    @property
    def needs_params(self) -> bool:
        """Whether :meth:`step` reads the parameters themselves (``params=``)."""
        return False

    @property
    def output_scale(self) -> float:
        return float(self.spec.output_scale)

    def state_names(self) -> tuple[str, ...]:
        """Names of the per-coordinate state tensors (keys of the drop-in optimizer's state)."""
        raise NotImplementedError

    def state_widths(self) -> tuple[int, ...]:
        """Floats per coordinate of each state tensor, in :meth:`state_names` order."""
        raise NotImplementedError

    def init_state(self, n: int, device: torch.device | str | None = None) -> State:
        """Zero state for n coordinates (float32 whatever the parameters' dtype)."""
        return tuple(torch.zeros(n, w, device=device) for w in self.state_widths())

    def weights(self) -> dict[str, Tensor]:
        """The weights by their functional names."""
        raise NotImplementedError

    def step(
        self,
        grads: Tensor,
        state: State,
        layout: Layout | None = None,
        step: int = 0,
        lr: float | None = None,
    ) -> tuple[Tensor, State]:
        raise NotImplementedError

    def window_tape(self, theta: Tensor) -> Any:
        """A recorder that differentiates a first-order truncation window from ``theta`` as one
        node (:meth:`step` then takes it as ``tape=``), or ``None``: a node per step."""
        return None

    def arch_config(self) -> dict[str, Any]:
        """Everything needed to rebuild this network (saved with the weights)."""
        return self.spec.arch_config()

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.arch_config().items())


@functools.lru_cache(maxsize=64)
def tensor_norm(layout: Layout | None, dim: int, device: torch.device) -> TensorNorm:
    """The (cached) per-tensor normaliser of a layout: layouts repeat every step."""
    return TensorNorm(layout, dim, device)


def mask_zero_grads(update: Tensor, grads: Tensor) -> Tensor:
    """``update`` with 0 where the gradient is exactly 0 (those coordinates do not move)."""
    return torch.where(grads == 0, update.new_zeros(()), update)
