"""One validation kit for every value that comes from outside: config, CLI, options, the API.

Each check returns the value (converted where that is lossless, e.g. an int to a float) or
raises :class:`l2o.L2OError` with one line that names the value and says what is allowed.
Integers are integers (``2.5``, ``"8"`` and ``True`` are not), booleans are booleans, numbers
are finite, and sizes have sane upper bounds so nothing absurd reaches an allocation.

Example:
    >>> integer("batch_size", 8, low=1)
    8
    >>> number("meta_lr", float("inf"), low=0, low_open=True)
    Traceback (most recent call last):
    ...
    l2o.errors.L2OError: meta_lr must be a finite number, got inf
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

from l2o.errors import L2OError

MAX_COUNT = 10**9  # iterations, steps, trials: beyond this a run never ends
MAX_SIZE = 10**7  # instances, batch sizes, dimensions: beyond this nothing fits in memory
MAX_SEED = 2**32 - 1  # every seeded generator (torch, numpy, Optuna) accepts this range
THREADS_PER_CORE = 4  # more torch threads than this per core only oversubscribes


def integer(name: str, value: Any, low: int | None = None, high: int | None = MAX_COUNT) -> int:
    """An ``int`` (not a bool, float or string) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise L2OError(f"{name} must be an integer, got {value!r}")
    _bounds(name, value, low, high, False, False)
    return value


def number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite ``int`` or ``float`` (not a bool or string) in the given range, as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise L2OError(f"{name} must be a number, got {value!r}")
    try:
        result = float(value)
    except OverflowError:
        raise L2OError(f"{name} must be a finite number, got {value}") from None
    if not math.isfinite(result):
        raise L2OError(f"{name} must be a finite number, got {value!r}")
    _bounds(name, result, low, high, low_open, high_open)
    return result


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise L2OError(f"{name} must be true or false, got {value!r}")
    return value


def text(name: str, value: Any, choices: Sequence[str] | None = None) -> str:
    """A non-empty string, one of ``choices`` when given."""
    if not isinstance(value, str) or not value:
        raise L2OError(f"{name} must be a non-empty string, got {value!r}")
    if choices is not None and value not in choices:
        raise L2OError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def names(name: str, value: Any, known: Sequence[str]) -> tuple[str, ...]:
    """A list of names from ``known``; a plain string is a comma-separated list."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
        raise L2OError(f"{name} must be a list of names from {', '.join(known)}, got {value!r}")
    items = [v.strip() for v in items]
    unknown = [v for v in items if v not in known]
    if unknown:
        raise L2OError(
            f"unknown {name} {', '.join(repr(v) for v in unknown)}; known: {', '.join(known)}"
        )
    return tuple(items)


def seed(name: str, value: Any) -> int:
    return integer(name, value, 0, MAX_SEED)


def max_threads() -> int:
    return (os.cpu_count() or 1) * THREADS_PER_CORE


def threads(name: str, value: Any) -> int:
    """Torch threads: at least 1, at most a few per core (more segfaults or just thrashes)."""
    return integer(name, value, 1, max_threads())


def memory(name: str, nbytes: float, fraction: float = 0.8) -> None:
    """Refuse an allocation of ``nbytes`` that cannot fit in this machine's memory."""
    total = _physical_memory()
    if total and nbytes > fraction * total:
        raise L2OError(
            f"{name} needs about {nbytes / 2**30:.3g} GiB, more than this machine's "
            f"{total / 2**30:.3g} GiB of memory; choose smaller sizes"
        )


def instances_memory(task: str, instances: int, dim: int) -> None:
    """Refuse running ``instances`` side by side when their parameters and optimizer states
    (about 8 floats per coordinate) cannot fit in memory."""
    memory(f"{instances} instances of {task} ({dim} parameters each)", 32.0 * instances * dim)


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def fields(obj: Any, bounds: dict[str, tuple[float | None, float | None]] | None = None) -> None:
    """Check a dataclass's fields against their declared types (int, float, bool, str).

    Floats that hold an int are converted (frozen dataclasses included); ``bounds`` maps a
    field to an inclusive ``(low, high)`` range.
    """
    import dataclasses

    bounds = bounds or {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        low, high = bounds.get(f.name, (None, None))
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        if kind == "int":
            default_high = MAX_COUNT if high is None else high
            integer(f.name, value, None if low is None else int(low), int(default_high))
        elif kind == "float":
            object.__setattr__(obj, f.name, number(f.name, value, low, high))
        elif kind == "bool":
            boolean(f.name, value)
        elif kind == "str":
            text(f.name, value)


def _bounds(
    name: str,
    value: float,
    low: float | None,
    high: float | None,
    low_open: bool,
    high_open: bool,
) -> None:
    if low is not None and (value <= low if low_open else value < low):
        raise L2OError(f"{name} must be {'>' if low_open else '>='} {_fmt(low)}, got {_fmt(value)}")
    if high is not None and (value >= high if high_open else value > high):
        raise L2OError(
            f"{name} must be {'<' if high_open else '<='} {_fmt(high)}, got {_fmt(value)}"
        )


def _fmt(x: float) -> str:
    return str(x) if isinstance(x, int) and abs(x) < 10**12 else f"{x:g}"


def all_finite(tensors: Iterable[Any]) -> bool:
    """Whether every tensor holds only finite values."""
    import torch

    return all(bool(torch.isfinite(t).all()) for t in tensors)
