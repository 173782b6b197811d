"""Meta-training that goes wrong stops with one line, before anything bad is saved."""

from __future__ import annotations

from torch import nn

from l2o import checks
from l2o.errors import L2OError

ALL_SKIPPED_PATIENCE = 10  # stop once this many meta-iterations in a row were all skipped


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
