"""Learned optimizer networks: one architecture spec, one registry, one protocol.

Built-in kinds: ``lstm`` (the paper's), ``mlp`` (per-coordinate MLP on Adam-like features,
scale-free output), ``rnnprop`` (Lv et al. 2017), and the concurrent combiners
(``concurrent-*``, registered by :mod:`l2o.concurrent.combiners` on first use).
"""

from __future__ import annotations

from l2o.nets.base import OptimizerNet, State
from l2o.nets.lstm import LSTMOptimizer, lstm_update
from l2o.nets.mlp import MLPOptimizer, mlp_update
from l2o.nets.preprocess import log_sign, preprocess
from l2o.nets.rnnprop import RNNpropOptimizer
from l2o.nets.spec import (
    FEATURE_SETS,
    NET_KEYS,
    NetSpec,
    build_net,
    describe_nets,
    net_names,
    register_net,
    spec_from_dict,
)

_LSTM_KEYS = (
    "hidden_size",
    "layers",
    "output_scale",
    "preprocess",
    "preprocess_p",
    "skip_zero_grad",
)
register_net(
    "lstm",
    LSTMOptimizer.from_spec,
    keys=_LSTM_KEYS,
    description="the paper's coordinatewise 2×20 LSTM on log/sign gradients (the default)",
)
register_net(
    "rnnprop",
    RNNpropOptimizer.from_spec,
    keys=(
        *_LSTM_KEYS,
        "adapt_step",
        "max_log_step",
        "min_log_step",
        "max_log_step_boost",
        "step_rise_decades",
        "damping_eps",
        "hypergradient_step",
        "hypergradient_signal",
    ),
    defaults={"preprocess": "rnnprop"},
    description="RNNprop: m̂/√v̂ and g/√v̂ into dense + 2×20 LSTM, output bounded by lr",
)
register_net(
    "mlp",
    MLPOptimizer,
    keys=(
        "hidden_size",
        "layers",
        "output_scale",
        "preprocess",
        "preprocess_p",
        "step_alpha",
        "nominal",
        "update_norm",
        "param_scale",
        "grad_scale",
        "progress_feature",
        "agreement_feature",
        "adapt_step",
        "max_log_step",
        "min_log_step",
        "skip_zero_grad",
    ),
    defaults={"hidden_size": 16, "output_scale": 0.01, "preprocess": "adam"},
    description="per-coordinate MLP on Adam-like per-tensor features, update lr·d·exp(α·m)",
)

__all__ = [
    "FEATURE_SETS",
    "NET_KEYS",
    "LSTMOptimizer",
    "MLPOptimizer",
    "NetSpec",
    "OptimizerNet",
    "RNNpropOptimizer",
    "State",
    "build_net",
    "describe_nets",
    "log_sign",
    "lstm_update",
    "mlp_update",
    "net_names",
    "preprocess",
    "register_net",
    "spec_from_dict",
]
