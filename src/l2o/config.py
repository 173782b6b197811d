"""The meta-training configuration: a frozen, validated dataclass with commented defaults.

Load it from TOML with :func:`load_config`, override single keys with ``key=value`` strings
(:func:`apply_overrides`), and save the resolved config next to every result.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from l2o import checks
from l2o.errors import L2OError
from l2o.nets.spec import NET_KEYS, NetSpec, spec_from_dict

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LOSS_WEIGHT_CHOICES = ("uniform", "increasing", "final")
META_LOSS_CHOICES = ("loss", "log")
VAL_METRICS = ("mean", "log_mean")
HORIZON_SAMPLING_CHOICES = ("fixed", "log_uniform")
CURRICULUM_CHOICES = ("none", "plateau")
ESTIMATOR_CHOICES = ("bptt", "pes")
META_LR_SCHEDULES = ("constant", "cosine")
# Type checks come from the field annotations (l2o.checks.fields); these are the sane ranges.
LIMITS: dict[str, tuple[float | None, float | None]] = {
    "hidden_size": (1, 4096),
    "layers": (1, 64),
    "batch_size": (1, checks.MAX_SIZE),
    "horizon": (1, checks.MAX_SIZE),
    "val_instances": (1, checks.MAX_SIZE),
    "meta_lr": (None, 10.0),
    "seed": (0, checks.MAX_SEED),
    "threads": (1, checks.max_threads()),
}


@dataclass(frozen=True, init=False)
class TrainConfig:
    """Everything that decides a meta-training run. Defaults reproduce the paper's set-up.

    Keyword arguments are the fields below and the architecture keys of
    :class:`~l2o.nets.NetSpec` (``TrainConfig(optimizer="mlp", hidden_size=8)``).
    """

    # --- the optimizee family ---
    task: str = "quadratic"  # a name from `l2o list`
    task_options: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"dim": 20}

    # --- the learned optimizer (architecture; saved with the weights) ---
    # Its keys (optimizer, hidden_size, layers, output_scale, preprocess, ...) are written flat in
    # TOML, --set and config.json, and read as config.hidden_size etc.: see l2o.nets.spec.NetSpec
    # for each one's meaning and default. The default is the paper's 2×20 LSTM.
    net: NetSpec = field(default_factory=NetSpec)

    # --- the unroll ---
    batch_size: int = 128  # task instances per meta-iteration, run side by side
    horizon: int = 100  # T: optimizee steps per unroll
    truncation: int = 20  # optimizee steps per backpropagation window
    loss_weights: str = "uniform"  # weight of f(θ_t) in the meta-loss: uniform, increasing, final
    meta_loss: str = "loss"  # sum of f(θ_t) (the paper's) or of log f(θ_t) ("log")
    # "log": losses below this floor count as the floor and teach nothing (0: the original rule,
    # clamped at 1e-12 but divided by 1e-12 below it; see l2o.meta.unroll.log_terms)
    meta_loss_floor: float = 0.0
    second_order: bool = False  # keep ∂∇f/∂θ (the paper drops it: much cheaper, as good)

    # --- the outer (meta) optimizer ---
    iterations: int = 300  # meta-iterations, i.e. unrolls of fresh training instances
    meta_lr: float = 0.003  # Adam's learning rate on the LSTM weights
    meta_lr_schedule: str = "constant"  # or "cosine": from meta_lr down to meta_lr / 10 at the end
    grad_clip: float = 1.0  # clip the meta-gradient to this global norm (0: no clipping)

    # --- validation, checkpoints, run time ---
    val_every: int = 25  # validate every this many meta-iterations (and at the end)
    val_instances: int = 64  # validation instances; the best checkpoint is kept
    val_metric: str = "mean"  # the best is the lowest mean final loss, or "log_mean": geometric
    checkpoint_every: int = 25  # write checkpoint/ every this many meta-iterations
    seed: int = 0  # initialises the LSTM; task instances come from their own seed streams
    threads: int = 1  # torch threads the CLI sets (the library leaves torch's setting alone)
    device: str = "cpu"  # cpu, cuda, cuda:N or auto (l2o.devices); checkpoints stay portable

    # --- long horizons and the meta-gradient estimator (l2o.meta.horizons, curriculum, pes).
    # The defaults are the paper's: every unroll is `horizon` steps, truncated backprop. ---
    horizon_sampling: str = "fixed"  # or "log_uniform": each unroll T ~ logU[truncation, cap]
    max_horizon: int = 0  # the longest unroll: the cap of sampling and curriculum (0: horizon)
    curriculum: str = "none"  # "plateau": the cap starts at horizon, grows on validation stalls
    curriculum_patience: int = 2  # validations without a new best before the cap grows
    curriculum_factor: float = 2.0  # the cap's growth per stage
    val_horizon: int = 0  # optimizee steps of a validation run (0: horizon)
    estimator: str = "bptt"  # "bptt" (truncated backprop, the paper's) or "pes" (Vicol et al.)
    pes_sigma: float = 0.01  # PES: std of the perturbations of the network's weights
    pes_pairs: int = 8  # PES: antithetic pairs per meta-iteration (instances split among them)

    def __init__(self, **values: Any) -> None:
        arch = {k: values.pop(k) for k in list(values) if k in NET_KEYS}
        net = values.pop("net", None)
        if arch:
            net = (net or NetSpec()).replace(**arch)
        object.__setattr__(self, "net", net if net is not None else NetSpec())
        for f in dataclasses.fields(self):
            if f.name == "net":
                continue
            if f.name in values:
                value = values.pop(f.name)
            elif f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
            else:
                value = f.default
            object.__setattr__(self, f.name, value)
        if values:
            raise L2OError(
                f"unknown config key(s) {', '.join(sorted(values))}; "
                f"known keys: {', '.join(sorted({*_FIELD_TYPES, *NET_KEYS}))}"
            )
        self.__post_init__()

    def __post_init__(self) -> None:
        if not isinstance(self.task_options, Mapping):
            raise L2OError(f"task_options must be a table, got {self.task_options!r}")
        object.__setattr__(self, "task_options", dict(self.task_options))
        checks.fields(self, LIMITS)
        _check(isinstance(self.task, str) and self.task != "", "task must be a task name")
        _check(isinstance(self.net, NetSpec), "net must be an l2o.nets.NetSpec")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _check(self.horizon >= 1, f"horizon must be >= 1, got {self.horizon}")
        _check(
            1 <= self.truncation <= self.horizon,
            f"truncation must be between 1 and horizon ({self.horizon}), got {self.truncation}",
        )
        _check(
            self.loss_weights in LOSS_WEIGHT_CHOICES,
            f"loss_weights must be one of {', '.join(LOSS_WEIGHT_CHOICES)}, "
            f"got {self.loss_weights!r}",
        )
        _check(
            self.meta_loss in META_LOSS_CHOICES,
            f"meta_loss must be one of {', '.join(META_LOSS_CHOICES)}, got {self.meta_loss!r}",
        )
        _check(
            self.val_metric in VAL_METRICS,
            f"val_metric must be one of {', '.join(VAL_METRICS)}, got {self.val_metric!r}",
        )
        _check(
            0 <= self.meta_loss_floor < 1,
            f"meta_loss_floor must be 0 (the original rule) or a loss in (0, 1), e.g. 1e-8, "
            f"got {self.meta_loss_floor}",
        )
        _check(
            self.meta_loss_floor == 0 or self.meta_loss == "log",
            f'meta_loss_floor applies to meta_loss = "log" only (meta_loss is '
            f"{self.meta_loss!r}): set meta_loss=log or drop meta_loss_floor",
        )
        _check(self.iterations >= 0, f"iterations must be >= 0, got {self.iterations}")
        _check(self.meta_lr > 0, f"meta_lr must be > 0, got {self.meta_lr}")
        _choice("meta_lr_schedule", self.meta_lr_schedule, META_LR_SCHEDULES)
        _check(self.grad_clip >= 0, f"grad_clip must be >= 0, got {self.grad_clip}")
        _check(self.val_every >= 1, f"val_every must be >= 1, got {self.val_every}")
        _check(self.val_instances >= 1, f"val_instances must be >= 1, got {self.val_instances}")
        _check(
            self.checkpoint_every >= 1,
            f"checkpoint_every must be >= 1, got {self.checkpoint_every}",
        )
        _check(self.threads >= 1, f"threads must be >= 1, got {self.threads}")
        _check_long_horizons(self)
        _check(isinstance(self.device, str), f"device must be a string, got {self.device!r}")

    def __getattr__(self, name: str) -> Any:
        # config.hidden_size etc.: the architecture keys are read through to the spec
        if name in NET_KEYS and "net" in self.__dict__:
            return getattr(self.net, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some keys changed (validated again; a new ``optimizer`` kind resets the
        architecture keys not given to that kind's defaults)."""
        net_changes = {k: changes.pop(k) for k in list(changes) if k in NET_KEYS}
        net = self.net.replace(**net_changes) if net_changes else self.net
        train = {k: v for k, v in self.to_dict().items() if k not in NET_KEYS}
        return config_from_dict({**train, **net.arch_config(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """Flat keys, as in TOML (the architecture keys of the chosen kind included)."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "net":
                values.update(self.net.arch_config())
            else:
                values[f.name] = getattr(self, f.name)
        return values

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise L2OError(message)


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    _check(value in choices, f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _check_long_horizons(c: TrainConfig) -> None:
    _choice("horizon_sampling", c.horizon_sampling, HORIZON_SAMPLING_CHOICES)
    _choice("curriculum", c.curriculum, CURRICULUM_CHOICES)
    _choice("estimator", c.estimator, ESTIMATOR_CHOICES)
    _check(
        c.max_horizon == 0 or c.max_horizon >= c.horizon,
        f"max_horizon must be 0 or >= horizon ({c.horizon}), got {c.max_horizon}",
    )
    _check(
        c.curriculum == "none" or c.max_horizon > c.horizon,
        "curriculum needs max_horizon > horizon (the curriculum grows from horizon to it)",
    )
    _check(
        c.curriculum_patience >= 1,
        f"curriculum_patience must be >= 1, got {c.curriculum_patience}",
    )
    _check(c.curriculum_factor > 1, f"curriculum_factor must be > 1, got {c.curriculum_factor}")
    _check(c.val_horizon >= 0, f"val_horizon must be >= 0, got {c.val_horizon}")
    _check(c.pes_sigma > 0, f"pes_sigma must be > 0, got {c.pes_sigma}")
    _check(c.pes_pairs >= 1, f"pes_pairs must be >= 1, got {c.pes_pairs}")
    _check(
        c.estimator == "bptt" or not c.second_order,
        'second_order applies to estimator = "bptt" only (PES needs no derivatives)',
    )


_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(TrainConfig) if f.name != "net"}


def config_from_dict(values: Mapping[str, Any]) -> TrainConfig:
    """Build a config from a plain (flat) mapping, rejecting unknown keys and wrong types."""
    unknown = sorted(set(values) - set(_FIELD_TYPES) - set(NET_KEYS))
    if unknown:
        raise L2OError(
            f"unknown config key(s) {', '.join(unknown)}; "
            f"known keys: {', '.join(sorted({*_FIELD_TYPES, *NET_KEYS}))}"
        )
    checked: dict[str, Any] = {}
    for key, value in values.items():
        if key not in NET_KEYS:
            checked[key] = _coerce(key, value)
    checked["net"] = spec_from_dict({k: v for k, v in values.items() if k in NET_KEYS})
    try:
        return TrainConfig(**checked)
    except TypeError as exc:  # pragma: no cover - guarded by _coerce
        raise L2OError(f"invalid config: {exc}") from None


def _coerce(key: str, value: Any) -> Any:
    kind = str(_FIELD_TYPES[key])
    if kind == "bool":
        if not isinstance(value, bool):
            raise L2OError(f"{key} must be true or false, got {value!r}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise L2OError(f"{key} must be an integer, got {value!r}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise L2OError(f"{key} must be a number, got {value!r}")
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise L2OError(f"{key} must be a string, got {value!r}")
        return value
    if not isinstance(value, Mapping):
        raise L2OError(f"{key} must be a table of options, got {value!r}")
    return dict(value)


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> TrainConfig:
    """Read a TOML config (or start from the defaults) and apply ``key=value`` overrides.

    The task's own recommended settings (``TaskFamily.train_defaults``, e.g. a smaller batch
    for the digits MLP) come first; the file and the overrides take precedence over them.

    Example:
        >>> load_config(overrides=["horizon=50", "task_options.dim=20"]).horizon
        50
    """
    from l2o.tasks import task_train_defaults

    values = apply_overrides(read_toml(path) if path is not None else {}, overrides)
    task = values.get("task", TrainConfig.task)
    return config_from_dict({**task_train_defaults(str(task)), **values})


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML config file as a dict, with clear errors for a missing or broken file."""
    path = Path(path)
    if not path.is_file():
        raise L2OError(f"config file {path} does not exist")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise L2OError(f"config file {path} is not UTF-8 text (a TOML file must be)") from None
    except OSError as exc:
        raise L2OError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise L2OError(f"config file {path} is not valid TOML: {exc}") from None


def apply_overrides(values: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key=value`` strings (values parsed as TOML, bare words as strings)."""
    result = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in values.items()}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise L2OError(f"--set expects key=value, got {item!r}")
        value = parse_value(raw.strip())
        if "." in key:
            outer, inner = key.split(".", 1)
            table = result.setdefault(outer, {})
            if not isinstance(table, dict):
                raise L2OError(f"{outer} is not a table, so {key} cannot be set")
            table[inner] = value
        else:
            result[key] = value
    return result


def parse_value(raw: str) -> Any:
    """Parse one override value as TOML (numbers, booleans, lists); fall back to a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
