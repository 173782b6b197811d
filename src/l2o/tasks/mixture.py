"""A mixture of task families: each batch is drawn from one member, chosen with given weights.

In TOML::

    task = "mixture"
    [[task_options.members]]
    task = "quadratic"
    weight = 1.0
    [[task_options.members]]
    task = "random-mlp"
    weight = 3.0
    options = { depth = [1, 2] }

θ is one ``(B, dim)`` tensor, so a batch holds instances of one member only: the member is drawn
from the seed of the batch's **first** index (as :class:`~l2o.tasks.random_mlp.RandomMLP` draws
its architecture), and instance i of the batch is the member's instance i. Validation runs
instances in groups of :attr:`Mixture.group_size`, so it covers several members.

Example:
    >>> mix = Mixture([{"task": "quadratic", "weight": 1.0}, {"task": "digits-mlp"}])
    >>> [m.name for m in mix.families]
    ['quadratic', 'digits-mlp']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from l2o.errors import L2OError
from l2o.tasks.base import TaskBatch, TaskFamily, instance_seed

MEMBER_KEYS = ("task", "weight", "options")
# Without members: the quadratic and random MLPs, the latter three times as often.
DEFAULT_MEMBERS = ({"task": "quadratic", "weight": 1.0}, {"task": "random-mlp", "weight": 3.0})


class Mixture(TaskFamily):
    """A weighted mixture of task families (default: quadratic 1, random-mlp 3)."""

    name = "mixture"
    group_size = 8

    def __init__(self, members: Sequence[Mapping[str, Any]] = DEFAULT_MEMBERS) -> None:
        from l2o.tasks import get_task  # the registry imports this module

        if isinstance(members, Mapping) or not members:
            raise L2OError(
                "mixture: members must be a non-empty list of tables {task, weight, options}"
            )
        self.members: list[dict[str, Any]] = []
        self.families: list[TaskFamily] = []
        for member in members:
            if not isinstance(member, Mapping) or "task" not in member:
                raise L2OError(f"mixture: each member needs a task name, got {member!r}")
            unknown = sorted(set(member) - set(MEMBER_KEYS))
            if unknown:
                raise L2OError(
                    f"mixture: unknown member key(s) {', '.join(unknown)}; "
                    f"known: {', '.join(MEMBER_KEYS)}"
                )
            weight = member.get("weight", 1.0)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
                raise L2OError(f"mixture: weight must be a number > 0, got {weight!r}")
            if member["task"] == self.name:
                raise L2OError("mixture: a member cannot itself be a mixture")
            options = dict(member.get("options") or {})
            self.families.append(get_task(str(member["task"]), options))
            entry = {"task": member["task"], "weight": float(weight), "options": options}
            self.members.append(entry)
        total = sum(m["weight"] for m in self.members)
        self.probabilities = np.array([m["weight"] / total for m in self.members])
        dims = {f.dim for f in self.families}
        self.dim = dims.pop() if len(dims) == 1 else 0  # 0: varies by batch

    def options(self) -> dict:
        return {"members": [dict(m) for m in self.members]}

    def member(self, split: str, index: int) -> int:
        """Which member a batch whose first index is ``index`` comes from."""
        rng = np.random.default_rng([instance_seed(self.name, split, index), 2])
        return int(rng.choice(len(self.families), p=self.probabilities))

    def sample(self, split: str, indices: Sequence[int]) -> TaskBatch:
        indices = list(indices)
        if not indices:
            raise L2OError("mixture: sample needs at least one index")
        return self.families[self.member(split, indices[0])].sample(split, indices)
