"""The one architecture spec of a learned optimizer, and the registry of network kinds.

:class:`NetSpec` holds every architecture hyperparameter of every kind, validated here and only
here; ``TrainConfig``, the concurrent config, ``arch_config()``, saving and loading all derive
from it. Each kind registers which keys it uses and its own defaults for the shared ones (an
``mlp`` reads Adam-like features, the paper's ``lstm`` log/sign ones), so a key left unset takes
the kind's value.

Adding a hyperparameter: a field below (with its comment and check) and its use in the net.

Example:
    >>> NetSpec(optimizer="mlp").preprocess
    'adam'
    >>> NetSpec().arch_config()["hidden_size"]
    20
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from l2o.errors import L2OError

FEATURE_SETS = ("log_sign", "none", "adam", "rnnprop")
LOG_STEP_LIMIT = 10.0  # adapt_step: s stays within ±this by default (max_log_step, min_log_step)
# hypergradient_step reads cos(−g_t, u_{t−1}), cos(−m_t, u_{t−1}) (m_t: the EMA of g), or both
HYPERGRADIENT_SIGNALS = ("gradient", "momentum", "both")
MAX_DECADES = 38.0  # step_rise_decades: float32's smallest normal number is ~1e-38
LOWEST_LOG_STEP = 30.0  # min_log_step may go down to −this (e^−30 ≈ 1e-13: below float32's reach)


@dataclass(frozen=True)
class NetSpec:
    """Architecture of a learned optimizer. ``None``: the kind's own default."""

    optimizer: str = "lstm"  # the kind: lstm (the paper's), mlp, rnnprop, concurrent-*
    hidden_size: int | None = None  # units per layer: lstm/rnnprop 20, mlp 16
    layers: int | None = None  # LSTM layers (2) or MLP hidden layers (2)
    output_scale: float | None = None  # lstm: × linear output (0.1); mlp: the step size lr
    preprocess: str | None = None  # features: log_sign, none (raw g), adam, rnnprop
    preprocess_p: float = 10.0  # p of the log/sign preprocessing
    # --- mlp ---
    step_alpha: float = 1.0  # update = lr·d·exp(step_alpha·m), capped at e⁵: m = log-magnitude
    nominal: bool = False  # add the learned step to Adam's direction (STAR): never worse than Adam
    update_norm: bool = False  # divide each tensor's update by its RMS (Celo2)
    param_scale: bool = False  # × max(1e-3, RMS of the tensor's parameters): a relative step
    grad_scale: bool = False  # × RMS of the tensor's momentum m̂_0.9: steps in gradient units
    progress_feature: bool = False  # also read log(RMS(m̂_0.9) / its peak): how far g has fallen
    agreement_feature: bool = False  # also read cos(−g_t, last update) per tensor and its EMA
    adapt_step: bool = False  # keep a per-tensor log step size the net moves by ≤ 0.1 a step
    max_log_step: float = LOG_STEP_LIMIT  # adapt_step: the log step size stays ≤ this
    min_log_step: float = -LOG_STEP_LIMIT  # adapt_step: ... and ≥ this (lower: longer runs go on)
    # rnnprop, adapt_step: the cap is max_log_step + this · (1 + log10 ρ / 4) (clipped share),
    # ρ = RMS(m̂) / its peak per tensor: higher while the gradient is within 4 decades of its peak
    max_log_step_boost: float = 0.0
    # rnnprop, adapt_step: each rise of s × (1 + log10 ρ / this), clipped to [0, 1]: once the
    # gradient has fallen this many decades below its peak s can only fall, so a converged run
    # does not grow its steps again; 0: off
    step_rise_decades: float = 0.0
    # rnnprop: each update × √v̂ / (√v̂ + this), as Adam's ε: a coordinate whose gradient is far
    # below it (a converged loss near float32's floor) moves proportionally less; 0: off
    damping_eps: float = 0.0
    hypergradient_step: bool = False  # rnnprop, adapt_step: s also follows cos(−g_t, u_{t−1})
    hypergradient_signal: str = "gradient"  # ... of g_t, of its EMA m_t, or both (two weights)
    # --- every kind: the torch contract ---
    skip_zero_grad: bool = True  # a coordinate whose gradient is exactly 0 does not move
    # --- concurrent combiners (K gradients per coordinate) ---
    k: int = 1  # number of optimizees
    logit_scale: float = 10.0  # softmax: λ = softmax(logit_scale · w)
    attention_hidden: int = 16  # attention: hidden units of the scoring MLP
    rule: str = "mean"  # reference rule: mean, median, trimmed-mean, oracle
    trim: float = 0.2  # trimmed-mean: fraction cut at each end

    def __post_init__(self) -> None:
        kind = _kind(self.optimizer)
        if kind is None:
            raise L2OError(
                f"unknown learned optimizer {self.optimizer!r}; known: {', '.join(net_names())}"
            )
        for key, value in kind.defaults.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        for key in ("hidden_size", "layers", "output_scale", "preprocess"):
            if getattr(self, key) is None:
                object.__setattr__(self, key, _BASE_DEFAULTS[key])
        _int(self, "hidden_size", 1)
        _int(self, "layers", 1)
        _int(self, "k", 1)
        _int(self, "attention_hidden", 1)
        _positive(self, "output_scale")
        _positive(self, "preprocess_p")
        _positive(self, "logit_scale")
        _number(self, "step_alpha")
        _number(self, "trim")
        _number(self, "max_log_step")
        if not -LOG_STEP_LIMIT < self.max_log_step <= LOG_STEP_LIMIT:
            raise L2OError(
                f"max_log_step must be in (-{LOG_STEP_LIMIT:g}, {LOG_STEP_LIMIT:g}], "
                f"got {self.max_log_step}"
            )
        _number(self, "min_log_step")
        if not -LOWEST_LOG_STEP <= self.min_log_step < self.max_log_step:
            raise L2OError(
                f"min_log_step must be in [-{LOWEST_LOG_STEP:g}, max_log_step = "
                f"{self.max_log_step:g}), got {self.min_log_step}"
            )
        _number(self, "max_log_step_boost")
        if not 0 <= self.max_log_step_boost <= LOG_STEP_LIMIT:
            raise L2OError(
                f"max_log_step_boost must be in [0, {LOG_STEP_LIMIT:g}], "
                f"got {self.max_log_step_boost}"
            )
        _number(self, "step_rise_decades")
        if not 0 <= self.step_rise_decades <= MAX_DECADES:
            raise L2OError(
                f"step_rise_decades must be in [0, {MAX_DECADES:g}] (0: off), "
                f"got {self.step_rise_decades}"
            )
        _number(self, "damping_eps")
        if not 0 <= self.damping_eps < 1:
            raise L2OError(
                f"damping_eps must be in [0, 1) (Adam's ε is 1e-8), got {self.damping_eps}"
            )
        for key in _BOOL_KEYS:
            if not isinstance(getattr(self, key), bool):
                raise L2OError(f"{key} must be true or false, got {getattr(self, key)!r}")
        if self.preprocess not in FEATURE_SETS:
            raise L2OError(
                f"preprocess must be one of {', '.join(FEATURE_SETS)}, got {self.preprocess!r}"
            )
        if not 0 <= self.trim < 0.5:
            raise L2OError(f"trim must be in [0, 0.5), got {self.trim}")
        for key, default in _FIXED_DEFAULTS.items():
            if key not in kind.keys and getattr(self, key) != default:
                _kind("concurrent-")  # registers the combiners, so the message can name them
                readers = [name for name, other in _KINDS.items() if key in other.keys]
                raise L2OError(
                    f"{key} = {json.dumps(getattr(self, key))} does nothing for optimizer = "
                    f"{self.optimizer!r} (read by: {', '.join(readers) or 'no kind'}); remove it "
                    "or choose one of those kinds"
                )
        if self.max_log_step != LOG_STEP_LIMIT and not self.adapt_step:
            raise L2OError("max_log_step bounds the step size of adapt_step: set adapt_step = true")
        if self.min_log_step != -LOG_STEP_LIMIT and not self.adapt_step:
            raise L2OError("min_log_step bounds the step size of adapt_step: set adapt_step = true")
        # both read how far the gradient's EMA has fallen below its peak
        for key, acts in (
            ("max_log_step_boost", "raises the cap on"),
            ("step_rise_decades", "slows the rise of"),
        ):
            if getattr(self, key) and not self.adapt_step:
                raise L2OError(f"{key} {acts} the step size of adapt_step: set adapt_step = true")
            if getattr(self, key) and self.preprocess != "rnnprop":
                raise L2OError(
                    f"{key} reads the EMA of the gradient that preprocess = 'rnnprop' keeps, "
                    f"got preprocess = {self.preprocess!r}"
                )
        if self.damping_eps and self.preprocess != "rnnprop":
            raise L2OError(
                "damping_eps reads the EMA of g² that preprocess = 'rnnprop' keeps, got "
                f"preprocess = {self.preprocess!r}"
            )
        if self.hypergradient_step and not self.adapt_step:
            raise L2OError(
                "hypergradient_step moves the step size of adapt_step: set adapt_step = true"
            )
        if self.hypergradient_signal not in HYPERGRADIENT_SIGNALS:
            raise L2OError(
                f"hypergradient_signal must be one of {', '.join(HYPERGRADIENT_SIGNALS)}, "
                f"got {self.hypergradient_signal!r}"
            )
        if self.hypergradient_signal != "gradient" and not self.hypergradient_step:
            raise L2OError(
                "hypergradient_signal chooses what the hypergradient rule reads: set "
                "hypergradient_step = true"
            )
        if self.hypergradient_signal != "gradient" and self.preprocess != "rnnprop":
            raise L2OError(
                f"hypergradient_signal = {self.hypergradient_signal!r} reads the EMA of the "
                f"gradient that preprocess = 'rnnprop' keeps, got preprocess = {self.preprocess!r}"
            )
        for key in ("nominal", "grad_scale", "progress_feature", "agreement_feature"):
            if getattr(self, key) and self.preprocess != "adam":
                raise L2OError(f"{key} = true needs preprocess = 'adam' (it reuses its moments)")

    def arch_config(self) -> dict[str, Any]:
        """The keys this kind uses (what is saved with the weights)."""
        return {key: getattr(self, key) for key in ("optimizer", *_KINDS[self.optimizer].keys)}

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> NetSpec:
        """A copy with some keys changed. A new kind resets the keys with kind defaults."""
        values = self.to_dict()
        if changes.get("optimizer", self.optimizer) != self.optimizer:
            for key in _KIND_DEFAULTED:
                values[key] = None
        return spec_from_dict({**values, **changes})


NET_KEYS = tuple(f.name for f in dataclasses.fields(NetSpec))
_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(NetSpec)}
_BOOL_KEYS = tuple(name for name, kind in _FIELD_TYPES.items() if kind in ("bool", bool))
_BASE_DEFAULTS: dict[str, Any] = {
    "hidden_size": 20,
    "layers": 2,
    "output_scale": 0.1,
    "preprocess": "log_sign",
}
_KIND_DEFAULTED = tuple(_BASE_DEFAULTS)
# keys with a fixed default: set to anything else on a kind that ignores them, they are an error
_FIXED_DEFAULTS = {
    f.name: f.default
    for f in dataclasses.fields(NetSpec)
    if f.default is not None and f.name != "optimizer"
}


def spec_from_dict(values: Mapping[str, Any]) -> NetSpec:
    """A spec from a plain mapping (e.g. a saved ``arch_config``): unknown keys are errors."""
    unknown = sorted(set(values) - set(NET_KEYS))
    if unknown:
        raise L2OError(
            f"unknown architecture key(s) {', '.join(unknown)}; known: {', '.join(NET_KEYS)}"
        )
    return NetSpec(**{k: _coerce(k, v) for k, v in values.items()})


def _coerce(key: str, value: Any) -> Any:
    kind = str(_FIELD_TYPES[key])
    if value is None and "None" in kind:
        return None
    if kind.startswith("float") and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind.startswith("float") and not isinstance(value, float):
        raise L2OError(f"{key} must be a number, got {value!r}")
    if kind.startswith("int") and (isinstance(value, bool) or not isinstance(value, int)):
        raise L2OError(f"{key} must be an integer, got {value!r}")
    if kind.startswith("str") and not isinstance(value, str):
        raise L2OError(f"{key} must be a string, got {value!r}")
    return value


def _int(spec: NetSpec, key: str, low: int) -> None:
    value = getattr(spec, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise L2OError(f"{key} must be an integer >= {low}, got {value!r}")


def _number(spec: NetSpec, key: str) -> None:
    value = getattr(spec, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise L2OError(f"{key} must be a finite number, got {value!r}")


def _positive(spec: NetSpec, key: str) -> None:
    _number(spec, key)
    if not getattr(spec, key) > 0:
        raise L2OError(f"{key} must be > 0, got {getattr(spec, key)!r}")


@dataclass(frozen=True)
class _Kind:
    build: Callable[[NetSpec, int | None], nn.Module]
    keys: tuple[str, ...]
    defaults: Mapping[str, Any]
    description: str


_KINDS: dict[str, _Kind] = {}


def _kind(name: str) -> _Kind | None:
    if name not in _KINDS and isinstance(name, str) and name.startswith("concurrent-"):
        import l2o.concurrent.combiners  # noqa: F401  (registers the combiners)
    return _KINDS.get(name)


def register_net(
    name: str,
    build: Callable[[NetSpec, int | None], nn.Module],
    keys: tuple[str, ...] = ("hidden_size", "layers", "output_scale", "preprocess", "preprocess_p"),
    defaults: Mapping[str, Any] | None = None,
    description: str = "",
) -> None:
    """Make a kind buildable and loadable by name.

    Args:
        name: the value of the ``optimizer`` key.
        build: ``build(spec, seed)`` → a network (an :class:`l2o.nets.base.OptimizerNet`).
        keys: the spec keys this kind reads (saved with its weights).
        defaults: the kind's own values for keys left unset (``hidden_size``, ``preprocess``...).
        description: one line for ``l2o list``.
    """
    unknown = sorted((set(keys) | set(defaults or {})) - set(NET_KEYS))
    if unknown:
        raise L2OError(f"register_net({name!r}): unknown spec key(s) {', '.join(unknown)}")
    keys = tuple(k for k in keys if k != "optimizer")
    _KINDS[name] = _Kind(build, keys, dict(defaults or {}), description)


def net_names() -> list[str]:
    return sorted(_KINDS)


def describe_nets() -> dict[str, str]:
    """Kind → one-line description (for ``l2o list``)."""
    return {name: _KINDS[name].description for name in net_names()}


def build_net(spec: NetSpec | Mapping[str, Any], seed: int | None = None) -> nn.Module:
    """The only constructor: a freshly initialised network for ``spec`` (or a saved arch dict).

    Example:
        >>> build_net({"optimizer": "mlp"}, seed=0).spec.hidden_size
        16
    """
    if not isinstance(spec, NetSpec):
        spec = spec_from_dict(spec)
    return _KINDS[spec.optimizer].build(spec, seed)
