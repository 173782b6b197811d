"""Meta-training: the unroll (gradient estimator), the outer loop, checkpoints."""

from l2o.meta.train import History, MetaProblem, build_from_config, meta_train, task_problem
from l2o.meta.unroll import run_learned, start_unroll, truncation_window

__all__ = [
    "History",
    "MetaProblem",
    "build_from_config",
    "meta_train",
    "run_learned",
    "start_unroll",
    "task_problem",
    "truncation_window",
]
