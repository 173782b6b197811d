"""ByzFL (EPFL's Byzantine-robust FL library) as a test-only reference, imported without its
benchmark half.

``import byzfl`` runs ``byzfl/__init__.py``, which imports its training benchmark and so
torchvision and seaborn: torchvision pins its own torch build and would replace our CPU one, so
``make install`` installs byzfl with ``--no-deps``. The aggregators and attacks need only numpy,
scipy and torch; this module loads them with the package's ``__init__`` skipped.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any


def load() -> tuple[Any, Any] | None:
    """(byzfl.aggregators, byzfl.attacks), or None when byzfl is not installed."""
    if "byzfl" not in sys.modules:
        spec = importlib.util.find_spec("byzfl")
        if spec is None or not spec.submodule_search_locations:
            return None
        stub = types.ModuleType("byzfl")
        stub.__path__ = list(spec.submodule_search_locations)
        sys.modules["byzfl"] = stub
    return importlib.import_module("byzfl.aggregators"), importlib.import_module("byzfl.attacks")
