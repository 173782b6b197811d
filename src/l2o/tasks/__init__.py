"""Tasks (optimizees): families of instances drawn by (split, index), and their registry.

Register your own with :func:`register_task`::

    @l2o.tasks.register_task("my-task")
    class MyTask(l2o.tasks.TaskFamily): ...
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from l2o.errors import L2OError
from l2o.tasks.augment import Augmented
from l2o.tasks.base import (
    SPLITS,
    Layout,
    TaskBatch,
    TaskFamily,
    instance_generator,
    instance_seed,
    layout_sizes,
)
from l2o.tasks.digits_mlp import DigitsMLP
from l2o.tasks.groups import index_groups
from l2o.tasks.mixture import Mixture
from l2o.tasks.quadratic import Quadratic
from l2o.tasks.random_mlp import RandomMLP

_REGISTRY: dict[str, Callable[..., TaskFamily]] = {}


def register_task(name: str, factory: Callable[..., TaskFamily] | None = None):
    """Register a task family factory (a class or function taking the task options).

    Usable as a decorator (``@register_task("name")``) or a call.
    """

    def add(f: Callable[..., TaskFamily]) -> Callable[..., TaskFamily]:
        _REGISTRY[name] = f
        return f

    return add(factory) if factory is not None else add


def get_task(name: str, options: Mapping[str, Any] | None = None) -> TaskFamily:
    """Build the family ``name`` with its options, e.g. ``get_task("quadratic", {"dim": 20})``."""
    if name not in _REGISTRY:
        raise L2OError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_REGISTRY))}")
    factory = _REGISTRY[name]
    try:
        known = [
            p.name
            for p in inspect.signature(factory).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        has_kwargs = any(
            p.kind == p.VAR_KEYWORD for p in inspect.signature(factory).parameters.values()
        )
    except (TypeError, ValueError):  # pragma: no cover - a factory without a signature
        known, has_kwargs = [], True
    unknown = sorted(set(options or {}) - set(known))
    if unknown and not has_kwargs:
        raise L2OError(
            f"unknown option(s) {', '.join(unknown)} for task {name!r}; "
            f"known: {', '.join(known) or 'none'}"
        )
    try:
        family = factory(**dict(options or {}))
    except TypeError as exc:
        raise L2OError(f"invalid options for task {name!r}: {exc}") from None
    family.name = name
    return family


def task_train_defaults(name: str) -> dict[str, Any]:
    """The meta-training settings a registered task recommends (``{}`` when none or unknown)."""
    return dict(getattr(_REGISTRY.get(name), "train_defaults", None) or {})


def list_tasks() -> dict[str, str]:
    """Task name → one-line description."""
    return {name: get_task(name).describe() for name in sorted(_REGISTRY)}


register_task("quadratic", Quadratic)
register_task("digits-mlp", DigitsMLP)
register_task("random-mlp", RandomMLP)
register_task("mixture", Mixture)
register_task("augmented", Augmented)

__all__ = [
    "SPLITS",
    "Augmented",
    "DigitsMLP",
    "Layout",
    "Mixture",
    "Quadratic",
    "RandomMLP",
    "TaskBatch",
    "TaskFamily",
    "get_task",
    "index_groups",
    "instance_generator",
    "instance_seed",
    "layout_sizes",
    "list_tasks",
    "register_task",
    "task_train_defaults",
]
