"""A learned optimizer as a drop-in ``torch.optim.Optimizer`` for any model's parameters.

The maths is the network's :meth:`~l2o.nets.OptimizerNet.step`, the same pure update that
meta-training differentiates through; here it runs in place under ``no_grad``, once per parameter
group and device (the gradients of a group are concatenated into one vector and the real
parameter tensors are the layout for per-tensor features, so a step makes one network call per
group and no Python loop over coordinates). The network's per-coordinate state (feature
accumulators, LSTM state) lives in ``self.state[p]``; its weights stay out of ``param_groups``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from itertools import chain
from typing import Any

import torch
from torch import Tensor, nn

from l2o import checks
from l2o.errors import L2OError
from l2o.nets.base import OptimizerNet

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]


class LearnedOptimizer(torch.optim.Optimizer):
    """Apply a trained learned optimizer (e.g. ``l2o.pretrained("digits-mlp")``) to any model.

    Every scalar parameter is one coordinate of the network (weights shared by all coordinates);
    θ ← θ + update, where the update is the network's output for that coordinate's features.

    ``lr`` is the network's output scale (the step size of an ``mlp``, the multiplier of the
    LSTM's linear output): it defaults to the ``output_scale`` the network was meta-trained
    with, each parameter group may set its own, and ``torch.optim.lr_scheduler`` schedules it
    like any learning rate (doubling ``lr`` doubles every update).

    State per parameter (``self.state[p]``, created lazily at its first gradient): ``step`` and
    the network's state tensors by :meth:`~l2o.nets.OptimizerNet.state_names`, each float32 of
    shape ``(p.numel(), width)`` whatever ``p.dtype`` (updates are cast to ``p.dtype``):
    ``h0, c0, h1, c1`` for the paper's LSTM (80 floats = 320 bytes per scalar, against Adam's
    8 bytes), ``features`` (5 floats) for the ``mlp``. During a step, the features and hidden
    activations of the group being updated are held as well (~1.1 KB per scalar parameter for
    the LSTM, ~0.2 KB for the mlp), freed when the step ends: split a very large model into
    several parameter groups to bound that transient peak.

    Coordinates whose gradient is exactly zero do not move (embedding padding rows, masked
    weights; the network's ``skip_zero_grad``). Complex parameters are optimized as their real
    and imaginary parts (``torch.view_as_real``), as ``torch.optim`` does.

    Args:
        params: parameters or parameter groups (dicts), as for any ``torch.optim`` optimizer.
        net: a single-gradient learned optimizer network (from :func:`l2o.pretrained`,
            :func:`l2o.load` or :func:`l2o.meta_train`), or a pretrained name; ``None`` takes
            the shipped ``general`` network.
        lr: the output scale; ``None`` takes ``net.output_scale``.
        maximize: follow the gradient upwards (the network sees ``-grad``).
        check_finite: raise :class:`l2o.L2OError` when a gradient holds NaN or inf, before any
            parameter or state changes (one reduction per group per step; ``False`` skips it).

    Example:
        >>> import torch, l2o
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = l2o.LearnedOptimizer(model.parameters(), l2o.LSTMOptimizer(seed=0))
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = model(torch.ones(4, 3)).pow(2).mean()
        ...     loss.backward()
        ...     return loss
        >>> loss = opt.step(closure)
        >>> sorted(opt.state[model.weight])
        ['c0', 'c1', 'h0', 'h1', 'step']
    """

    def __init__(
        self,
        params: ParamsT,
        net: nn.Module | str | None = None,
        lr: float | None = None,
        *,
        maximize: bool = False,
        check_finite: bool = True,
    ) -> None:
        if net is None or isinstance(net, str):
            from l2o import pretrained

            net = pretrained.pretrained(net or pretrained.DEFAULT)
        _check_net(net)
        if lr is None:
            lr = float(net.output_scale)
        _check_lr(lr)
        self.net = net
        # per (group, device): the group's joined state and its per-parameter views (one entry
        # per group and device, replaced every step: memory never grows with parameter subsets)
        self._joined: dict[tuple[int, torch.device], tuple[tuple[Tensor, ...], list]] = {}
        self._nets: dict[torch.device, nn.Module] = {}  # the network copied to other devices
        super().__init__(params, {"lr": lr, "maximize": maximize, "check_finite": check_finite})

    # The network is part of the optimizer (deepcopy, pickling), but never of its state_dict:
    # its weights are saved with l2o.save_optimizer, the per-parameter state with state_dict().
    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "net": self.net}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._joined, self._nets = {}, {}
        for group in self.param_groups:  # a state_dict from an older l2o may lack a key
            for key, value in self.defaults.items():
                group.setdefault(key, value)

    def __repr__(self) -> str:
        arch = self.net.arch_config()
        return (
            super()
            .__repr__()
            .replace(f"{type(self).__name__} (", f"{type(self).__name__} (net={arch}", 1)
        )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "lr" in param_group:
            _check_lr(param_group["lr"])
        super().add_param_group(param_group)

    def state_keys(self) -> tuple[str, ...]:
        """Names of the network state tensors kept per parameter (``h0, c0, ...``)."""
        return self.net.state_names()

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter that has a gradient.

        Args:
            closure: re-evaluates the model and returns the loss (run with grad enabled).

        Returns:
            The closure's loss, or ``None``.

        Raises:
            L2OError: a sparse gradient, or a NaN/inf gradient (nothing is changed then).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Gather and check every group first, so a bad gradient changes nothing at all.
        buckets: list[tuple[int, dict[str, Any], list[Tensor], Tensor]] = []
        for index, group in enumerate(self.param_groups):
            for params in _by_device(p for p in group["params"] if p.grad is not None):
                grad = _flat_grad(params, index, group)
                if group["check_finite"] and not bool(torch.isfinite(grad).all()):
                    _raise_non_finite(params, index, group)
                buckets.append((index, group, params, grad))
        for index, group, params, grad in buckets:
            self._update(index, group, params, grad)
        return loss

    def _net_on(self, device: torch.device) -> nn.Module:
        first = next(self.net.parameters(), None)
        if first is None or first.device == device:
            return self.net
        if device not in self._nets:
            self._nets[device] = copy.deepcopy(self.net).to(device)
        return self._nets[device]

    def _update(
        self, index: int, group: dict[str, Any], params: list[Tensor], grad: Tensor
    ) -> None:
        keys = self.state_keys()
        device = grad.device
        net = self._net_on(device)
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = 0
                for key, value in zip(keys, net.init_state(_real(p).numel(), device=device)):
                    state[key] = value
        states = [self.state[p] for p in params]
        joined = self._joined_state((index, device), params, states, keys)
        layout = tuple(tuple(_real(p).shape) for p in params)
        extra = {}
        if net.needs_params:  # a relative step reads each tensor's scale
            flat = [_real(p).detach().reshape(-1).to(torch.float32) for p in params]
            extra["params"] = (flat[0] if len(flat) == 1 else torch.cat(flat)).unsqueeze(0)
        update, new_state = net.step(
            grad.unsqueeze(0), joined, layout, int(states[0]["step"]), float(group["lr"]), **extra
        )
        sizes = [_real(p).numel() for p in params]
        # The new state of each parameter is a view of the group's new state: no copy, and the
        # next step finds the group's state already joined (see _joined_state).
        for key, value in zip(keys, new_state):
            for s, part in zip(states, value.split(sizes)):
                s[key] = part
        if len(params) > 1:
            views = [tuple(s[key] for key in keys) for s in states]
            self._joined[(index, device)] = (new_state, views)
        for p, s, part in zip(params, states, update.squeeze(0).split(sizes)):
            s["step"] += 1
            target = _real(p)
            target.add_(part.view(target.shape).to(target.dtype))

    def _joined_state(
        self,
        slot: tuple[int, torch.device],
        params: list[Tensor],
        states: list[dict[str, Any]],
        keys: tuple[str, ...],
    ) -> tuple[Tensor, ...]:
        """The state of these parameters stacked row-wise, ``(sum of numel, width)`` each.

        After a step the per-parameter states are views of the tensors the network returned;
        while they still are (the same parameters, nothing loaded or replaced since), those
        tensors are reused instead of concatenating the views again.
        """
        if len(params) == 1:
            return tuple(states[0][key] for key in keys)
        joined = self._joined.get(slot)
        if joined is not None:
            whole, views = joined
            if len(views) == len(states) and all(
                s[key] is v for s, row in zip(states, views) for key, v in zip(keys, row)
            ):
                return whole
        return tuple(torch.cat([s[key] for s in states]) for key in keys)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a :meth:`state_dict`; the network state stays float32 for every parameter dtype.

        ``torch.optim.Optimizer.load_state_dict`` casts state to each parameter's dtype (right for
        Adam's moments, lossy for a bfloat16 parameter's LSTM state): the network state is copied
        back here at full precision, so a loaded optimizer continues bit-identically.
        """
        super().load_state_dict(dict(state_dict))
        saved_ids = chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        params = chain.from_iterable(g["params"] for g in self.param_groups)
        id_map = dict(zip(saved_ids, params))
        keys, widths = self.state_keys(), self.net.state_widths()
        for param_id, saved in state_dict["state"].items():
            p = id_map.get(param_id)
            if p is None:
                continue
            missing = [k for k in keys if k not in saved]
            if missing:
                raise L2OError(
                    f"optimizer state of parameter {param_id} lacks {', '.join(missing)}: it was "
                    "saved from another optimizer or a network of another architecture"
                )
            n = _real(p).numel()
            for key, width in zip(keys, widths):
                value = saved[key]
                if tuple(value.shape) != (n, width):
                    raise L2OError(
                        f"optimizer state {key} of parameter {param_id} has shape "
                        f"{tuple(value.shape)}, expected ({n}, {width}): "
                        "the state_dict belongs to another model or network"
                    )
                self.state[p][key] = value.to(device=p.device, dtype=torch.float32, copy=True)
            self.state[p]["step"] = int(saved.get("step", 0))


def _real(p: Tensor) -> Tensor:
    """The real view of a parameter (complex numbers as pairs of reals)."""
    return torch.view_as_real(p) if p.is_complex() else p


def _check_net(net: Any) -> None:
    if not isinstance(net, OptimizerNet):
        raise L2OError(
            f"net must be an l2o learned optimizer network (l2o.pretrained, l2o.load), "
            f"got {type(net).__name__}"
        )
    if net.spec.k != 1:
        raise L2OError(
            f"{type(net).__name__} takes {net.spec.k} gradients per coordinate: LearnedOptimizer "
            "applies single-gradient networks; a concurrent optimizer needs its K gradients"
        )


def _check_lr(lr: Any) -> None:
    checks.number("lr (the output scale)", lr, 0.0)


def _by_device(params: Iterable[Tensor]) -> list[list[Tensor]]:
    """Parameters split by device (one network call each), in their group's order."""
    buckets: dict[torch.device, list[Tensor]] = {}
    for p in params:
        buckets.setdefault(p.device, []).append(p)
    return list(buckets.values())


def _flat_grad(params: list[Tensor], index: int, group: Mapping[str, Any]) -> Tensor:
    """The group's gradients as one float32 vector (negated when maximizing)."""
    flats = []
    for p in params:
        grad = p.grad
        if grad.is_sparse:
            raise L2OError(
                f"parameter of shape {tuple(p.shape)} in group {index} has a sparse gradient; "
                "LearnedOptimizer needs dense gradients (e.g. nn.Embedding(..., sparse=False))"
            )
        if not (p.is_floating_point() or p.is_complex()):
            raise L2OError(
                f"parameter of shape {tuple(p.shape)} in group {index} has dtype {p.dtype}; "
                "LearnedOptimizer updates floating-point parameters only"
            )
        if grad.is_complex():
            grad = torch.view_as_real(grad)
        flats.append(grad.reshape(-1).to(torch.float32))
    grad = flats[0] if len(flats) == 1 else torch.cat(flats)
    return -grad if group["maximize"] else grad


def _raise_non_finite(params: list[Tensor], index: int, group: Mapping[str, Any]) -> None:
    for position, p in enumerate(group["params"]):
        if any(p is q for q in params) and not bool(torch.isfinite(p.grad).all()):
            raise L2OError(
                f"parameter {position} of group {index} (shape {tuple(p.shape)}) has a NaN or "
                "inf gradient; no parameter or optimizer state was changed. Skip this batch, "
                "lower the loss scale or clip gradients (check_finite=False turns this off)"
            )
    raise L2OError(  # pragma: no cover - only a float32 overflow of a float64 gradient gets here
        f"a gradient in group {index} is not finite in float32; no state was changed"
    )
