"""l2o: learned optimizers in PyTorch (Andrychowicz et al., 2016, and our concurrent framework).

Example:
    >>> import l2o
    >>> cfg = l2o.TrainConfig(task="quadratic", iterations=2, batch_size=4, horizon=10,
    ...                       truncation=5, val_instances=4)
    >>> net, history = l2o.meta_train(cfg)
    >>> len(history.rows)
    2
"""

from l2o import pretrained, tasks
from l2o.config import TrainConfig, load_config
from l2o.devices import on_device, resolve_device
from l2o.errors import L2OError
from l2o.meta import meta_train
from l2o.nets import LSTMOptimizer, build_net
from l2o.optim import LearnedOptimizer
from l2o.resolve import load
from l2o.serialization import save_optimizer

__all__ = [
    "L2OError",
    "LSTMOptimizer",
    "LearnedOptimizer",
    "TrainConfig",
    "build_net",
    "load",
    "load_config",
    "meta_train",
    "on_device",
    "pretrained",
    "resolve_device",
    "save_optimizer",
    "tasks",
]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("l2o")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


__version__ = _version()
