"""The concurrent framework: K optimizees share θ, a learned optimizer combines their gradients.

- :mod:`~l2o.concurrent.initializers`: build the K optimizees from a base task (noise, poison,
  shards, rotation, grid), with a clean objective to meta-train on;
- :mod:`~l2o.concurrent.combiners`: the concurrent nets (softmax, concat, meanstd, attention) and
  the hand-made references (mean, median, trimmed-mean, oracle);
- :mod:`~l2o.concurrent.problem`: the meta-problem the core loop trains on (slot permutations);
- :mod:`~l2o.concurrent.attacks`: f of K sources Byzantine (signflip, ipm, alie, gaussian, inf,
  users' own), as initializers;
- :mod:`~l2o.concurrent.aggregators`: the field's robust rules (krum, geomed, cclip, nnm, ...);
- :mod:`~l2o.concurrent.scoring`: a learned aggregator from scale-free source statistics;
- :mod:`~l2o.concurrent.robust`: the worst-case study behind ``l2o robust``;
- :mod:`~l2o.concurrent.baselines`: the hand-designed baselines on the mean of the K gradients,
  tuned and run by ``l2o compare``'s own code;
- :mod:`~l2o.concurrent.experiment`: train, record λ, test against the references;
- :mod:`~l2o.concurrent.plots`: ``lambdas.png`` from ``lambdas.csv``.

Example:
    >>> from l2o.concurrent import build_set, build_combiner
    >>> cset = build_set("rotation", options={"angles": [0, 30]})
    >>> net = build_combiner("softmax", cset.k, seed=0)
"""

from l2o.concurrent.combiners import COMBINERS, ConcurrentNet, build_combiner
from l2o.concurrent.experiment import ConcurrentConfig, load_concurrent_config, run_experiment
from l2o.concurrent.initializers import ConcurrentBatch, ConcurrentSet, build_set, describe_all
from l2o.concurrent.plots import plot_lambdas
from l2o.concurrent.problem import ConcurrentProblem
from l2o.concurrent.scoring import LearnedAggregator

__all__ = [
    "COMBINERS",
    "ConcurrentBatch",
    "ConcurrentConfig",
    "ConcurrentNet",
    "ConcurrentProblem",
    "ConcurrentSet",
    "LearnedAggregator",
    "build_combiner",
    "build_set",
    "describe_all",
    "load_concurrent_config",
    "plot_lambdas",
    "run_experiment",
]
