"""Where a learned optimizer comes from: a run folder, a ``.safetensors`` file or a pretrained
name. :func:`load` is ``l2o.load``; every command resolves its OPTIMIZER strings through it (see
:func:`l2o.evaluate.resolve_optimizer`, which adds the baselines).

Example:
    >>> net = load("quadratic")  # a pretrained name
    >>> net.arch_config()["optimizer"]
    'lstm'
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from l2o import pretrained
from l2o.errors import L2OError
from l2o.serialization import WEIGHTS_FILE, load_optimizer_file


def locate(source: str | Path) -> Path:
    """The ``.safetensors`` file behind ``source`` (an existing path wins over a pretrained
    name of the same text), or an error that says what to pass."""
    path = Path(source)
    if not path.exists() and str(source) in pretrained.names():
        return pretrained.path(str(source))
    if path.is_dir():
        if not (path / WEIGHTS_FILE).is_file():
            raise L2OError(f"{source} has no {WEIGHTS_FILE}; is it a finished `l2o train` run?")
        return path / WEIGHTS_FILE
    if not path.exists():
        raise L2OError(f"{source} does not exist; pass a run folder or a .safetensors file")
    return path


def load(source: str | Path) -> nn.Module:
    """Load a learned optimizer from a run folder, a ``.safetensors`` file or a pretrained name.

    Example:
        >>> net = l2o.load("runs/quadratic")  # doctest: +SKIP
    """
    return load_optimizer_file(locate(source))
