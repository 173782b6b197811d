"""Meta-training that goes wrong stops with one line, before anything bad is saved."""

from __future__ import annotations

from torch import nn

from l2o import checks
from l2o.config import TrainConfig
from l2o.errors import L2OError

ALL_SKIPPED_PATIENCE = 10
# Bytes of autograd graph per coordinate and unrolled step per hidden unit (measured ~13 floats
# per hidden unit and layer for the LSTM; the MLP and RNNProp use fewer).
GRAPH_FLOATS_PER_UNIT = 13


def check_memory(config: TrainConfig, dim: int, copies: int = 1) -> None:
    """Refuse a meta-training run whose unroll cannot fit in memory, before allocating it.

    ``dim`` is the task's coordinates per instance, ``copies`` the gradients per coordinate
    (K for concurrent runs). A rough upper estimate: the truncation window's graph plus the
    network's weights.
    """
    units = config.hidden_size * config.layers
    coordinates = config.batch_size * dim * copies
    graph = coordinates * config.truncation * (GRAPH_FLOATS_PER_UNIT * units + 8)
    weights = 16 * config.hidden_size * (config.hidden_size + 8) * config.layers
    checks.memory(
        f"meta-training (batch_size {config.batch_size} × {dim * copies} coordinates × "
        f"truncation {config.truncation}, hidden_size {config.hidden_size})",
        4.0 * (graph + weights),
    )  # stop once this many meta-iterations in a row were all skipped


def check_iteration(
    net: nn.Module, iteration: int, skipped: int, total: int, meta_lr: float
) -> None:
    """After meta-iteration ``iteration`` (1-based): refuse non-finite weights, and a run whose
    every step so far was skipped (non-finite losses: nothing can be learned)."""
    if not checks.all_finite(net.parameters()):
        raise L2OError(
            f"meta-training diverged at iteration {iteration}: the network's weights are no "
            f"longer finite (meta_lr {meta_lr:g} is too large?); nothing non-finite was saved"
        )
    if skipped >= iteration and (iteration >= ALL_SKIPPED_PATIENCE or iteration == total):
        raise L2OError(
            f"every meta-iteration so far ({iteration}) was skipped: the unrolls' losses or "
            "meta-gradients are not finite, so nothing is learned; lower output_scale or "
            "meta_lr, or check the task (and rerun with --force)"
        )
