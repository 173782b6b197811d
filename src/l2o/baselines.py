"""Hand-designed baselines: torch.optim optimizers by name, with their tuning search spaces.

A baseline is written ``NAME[:key=value,...]`` (``adam:lr=0.03``, ``sgd:lr=0.01,momentum=0.9``);
unset hyperparameters take the baseline's defaults (torch's own, except where noted).

Baselines run on the batched parameter tensor ``(B, dim)`` directly: every optimizer here is
coordinatewise, so one torch.optim instance over the batch is B independent optimizers on exactly
the same instances, minibatches and initial parameters as the learned optimizer.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from l2o import checks
from l2o.config import parse_value
from l2o.errors import L2OError


@dataclass(frozen=True)
class SearchRange:
    """A hyperparameter's tuning range (log scale for learning rates)."""

    low: float
    high: float
    log: bool = True


@dataclass(frozen=True)
class Baseline:
    name: str
    optimizer: type[torch.optim.Optimizer]
    description: str
    fixed: Mapping[str, Any] = field(default_factory=dict)  # always passed (e.g. nesterov=True)
    defaults: Mapping[str, Any] = field(default_factory=dict)  # used unless set
    search_space: Mapping[str, SearchRange] = field(default_factory=dict)

    def make(
        self, params: Iterable[torch.Tensor], hyperparameters: Mapping[str, Any]
    ) -> torch.optim.Optimizer:
        """The torch optimizer with these hyperparameters (validated, clear errors)."""
        allowed = set(inspect.signature(self.optimizer).parameters) - {"params"} - set(self.fixed)
        unknown = sorted(set(hyperparameters) - allowed)
        if unknown:
            raise L2OError(
                f"baseline {self.name}: unknown hyperparameter(s) {', '.join(unknown)}"
                f"; known: {', '.join(sorted(allowed))}"
            )
        kwargs = {**self.defaults, **hyperparameters, **self.fixed}
        try:
            return self.optimizer(params, **kwargs)
        except (ValueError, TypeError, IndexError) as exc:
            raise L2OError(
                f"baseline {self.name}: invalid hyperparameters {dict(kwargs)}: {exc}"
            ) from None


LR = SearchRange(1e-4, 3.0)
# Plain SGD on a sigmoid MLP wants steps far above 3 (tuned lr ends up at the edge of 3.0):
# a range that cuts off the optimum would make the baseline look worse than it is.
SGD_LR = SearchRange(1e-4, 30.0)
BASELINES: dict[str, Baseline] = {
    b.name: b
    for b in [
        Baseline("sgd", torch.optim.SGD, "SGD", defaults={"lr": 0.01}, search_space={"lr": SGD_LR}),
        Baseline(
            "momentum",
            torch.optim.SGD,
            "SGD with (heavy-ball) momentum",
            defaults={"lr": 0.01, "momentum": 0.9},
            search_space={"lr": SGD_LR, "momentum": SearchRange(0.5, 0.99, log=False)},
        ),
        Baseline(
            "nesterov",
            torch.optim.SGD,
            "SGD with Nesterov momentum (NAG)",
            fixed={"nesterov": True},
            defaults={"lr": 0.01, "momentum": 0.9},
            search_space={"lr": SGD_LR, "momentum": SearchRange(0.5, 0.99, log=False)},
        ),
        Baseline("adam", torch.optim.Adam, "Adam", search_space={"lr": LR}),
        Baseline(
            "adamw",
            torch.optim.AdamW,
            "AdamW (decoupled weight decay)",
            search_space={"lr": LR, "weight_decay": SearchRange(1e-5, 1e-1)},
        ),
        Baseline(
            "rmsprop",
            torch.optim.RMSprop,
            "RMSprop",
            search_space={"lr": LR, "alpha": SearchRange(0.9, 0.999, log=False)},
        ),
        Baseline("adagrad", torch.optim.Adagrad, "Adagrad", search_space={"lr": LR}),
    ]
}


def get_baseline(name: str) -> Baseline:
    if name not in BASELINES:
        raise L2OError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    return BASELINES[name]


def parse_baseline(spec: str) -> tuple[Baseline, dict[str, Any]]:
    """``"adam:lr=0.03"`` → (the Adam baseline, {"lr": 0.03}), validated.

    Example:
        >>> parse_baseline("sgd:lr=0.01,momentum=0.9")[1]
        {'lr': 0.01, 'momentum': 0.9}
    """
    name, _, rest = spec.partition(":")
    baseline = get_baseline(name.strip().lower())
    hyperparameters: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in re.split(r",(?![^\[]*\])", rest))):
        key, sep, raw = item.partition("=")
        if not sep:
            raise L2OError(f"baseline {spec!r}: expected key=value, got {item!r}")
        value = parse_value(raw.strip())
        name = f"baseline {spec!r}: {key.strip()}"
        if isinstance(value, list):
            value = tuple(checks.number(name, v) for v in value)  # e.g. betas=[0.9, 0.99]
        else:
            value = checks.number(name, value)
        hyperparameters[key.strip()] = value
    baseline.make([torch.zeros(1, requires_grad=True)], hyperparameters)  # validate now
    return baseline, hyperparameters
