"""Split instance indices into the batches a family can draw together.

Most families batch any indices together. Families whose batch shares one random choice
(:class:`~l2o.tasks.mixture.Mixture`'s member, :class:`~l2o.tasks.random_mlp.RandomMLP`'s
architecture) declare a ``group_size``: validation runs its instances in groups of that size,
so a validation set covers several members or architectures, not the first index's alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from l2o.tasks.base import TaskFamily


def index_groups(family: TaskFamily, indices: Sequence[int]) -> list[list[int]]:
    """``indices`` in consecutive groups of ``family.group_size`` (one group when it has none).

    Example:
        >>> from l2o.tasks import get_task
        >>> index_groups(get_task("random-mlp"), range(10))
        [[0, 1, 2, 3, 4, 5, 6, 7], [8, 9]]
    """
    indices = list(indices)
    size = getattr(family, "group_size", None) or len(indices) or 1
    return [indices[i : i + size] for i in range(0, len(indices), size)]
