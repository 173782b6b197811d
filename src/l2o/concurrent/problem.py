"""The meta-problem of a concurrent set: K optimizees' gradients in, the clean objective out.

:class:`ConcurrentProblem` adapts a :class:`~l2o.concurrent.initializers.ConcurrentSet` to the
core loop (:class:`~l2o.meta.train.MetaProblem`): its observer returns the *clean* loss and
gradient as the objective and the K optimizees' gradients, in slot order, as the network's
inputs. Which slot holds which variant is a permutation:

- ``fixed`` (``softmax``, ``concat``, ...): one random permutation per training run (from the run
  seed), so the clean optimizee sits wherever the seed puts it, the same for every instance;
- ``shuffle`` (``attention``): a fresh permutation per instance (from the instance's seed).

Example:
    >>> from l2o.concurrent.initializers import build_set
    >>> from l2o.concurrent.combiners import build_combiner
    >>> cset = build_set("noise", "quadratic")
    >>> problem = ConcurrentProblem(cset, build_combiner("softmax", cset.k), seed=0)
    >>> theta0, observe, _ = problem.sample("train", [0, 1])
    >>> loss, grad, inputs = observe(theta0, 0)
    >>> tuple(inputs.shape)
    (2, 10, 5)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from l2o.concurrent.combiners import ConcurrentNet
from l2o.concurrent.initializers import ConcurrentBatch, ConcurrentSet
from l2o.errors import L2OError
from l2o.meta.train import MetaProblem
from l2o.meta.unroll import Observe, run_learned
from l2o.tasks import instance_generator

SLOT_MODES = ("fixed", "shuffle")


def run_permutation(k: int, seed: int, clean: int | None, clean_slot: int | None) -> Tensor:
    """The slot order of a training run: slot s holds variant ``perm[s]``.

    Random from ``seed``; ``clean_slot`` forces where the clean variant goes (the rest keep the
    random order).
    """
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(int(seed)))
    if clean_slot is not None:
        if clean is None:
            raise L2OError("clean_slot was given but this initializer has no clean optimizee")
        if not 0 <= clean_slot < k:
            raise L2OError(
                f"clean_slot must be in [0, {k - 1}] (or -1 for random), got {clean_slot}"
            )
        rest = [int(v) for v in perm if int(v) != clean]
        perm = torch.tensor([*rest[:clean_slot], clean, *rest[clean_slot:]])
    return perm


class ConcurrentProblem:
    """What :func:`l2o.meta_train` trains a concurrent net on (see the module docstring)."""

    def __init__(
        self,
        cset: ConcurrentSet,
        net: ConcurrentNet,
        seed: int = 0,
        mode: str = "fixed",
        clean_slot: int | None = None,
    ) -> None:
        if mode not in SLOT_MODES:
            raise L2OError(f"slot mode must be one of {', '.join(SLOT_MODES)}, got {mode!r}")
        self.cset, self.net, self.mode = cset, net, mode
        self.fixed = run_permutation(cset.k, seed, cset.clean, clean_slot)
        self.last_perm: Tensor | None = None  # of the latest sample: to read λ back per variant

    @property
    def clean_slot(self) -> int | None:
        """The clean optimizee's slot in ``fixed`` mode."""
        if self.cset.clean is None:
            return None
        return int((self.fixed == self.cset.clean).nonzero()[0, 0])

    def permutation(self, split: str, indices: Sequence[int]) -> Tensor:
        """``(B, K)``: instance b's slot s holds variant ``perm[b, s]``."""
        if self.mode == "fixed":
            return self.fixed.expand(len(indices), -1)
        name = f"{self.cset.family.name}/{self.cset.initializer}/slots"
        return torch.stack(
            [
                torch.randperm(self.cset.k, generator=instance_generator(name, split, i))
                for i in indices
            ]
        )

    def observer(self, batch: ConcurrentBatch, perm: Tensor, net: ConcurrentNet) -> Observe:
        """``(θ, step) → (clean loss, clean gradient, net inputs from the K slot gradients)``."""
        B, K = perm.shape
        clean = None if self.cset.clean is None else (perm == self.cset.clean).int().argmax(1)
        identity = bool((perm == torch.arange(K)).all())
        honest = getattr(batch, "honest", None)  # attacks: (B, K) honest variants, oracle only
        if honest is not None:
            clean = honest.gather(1, perm)

        def observe(theta: Tensor, step: int) -> tuple[Tensor, Tensor, Tensor]:
            loss, grad = batch.clean_loss_and_grad(theta, step)
            own_losses, grads = batch.grads(theta, step)
            if not identity:
                own_losses = own_losses.gather(1, perm)
                grads = grads.gather(2, perm.unsqueeze(1).expand(B, grads.shape[1], K))
            return loss, grad, net.pack(grads, own_losses, clean)

        return observe

    def sample(self, split: str, indices: list[int]) -> tuple[Tensor, Observe, None]:
        batch = self.cset.sample(split, indices)
        self.last_perm = self.permutation(split, indices)
        return batch.init_params(), self.observer(batch, self.last_perm, self.net), None

    def evaluate(self, net: ConcurrentNet, split: str, indices: list[int], steps: int) -> float:
        """Mean clean loss after ``steps`` steps (the validation score of meta-training)."""
        batch = self.cset.sample(split, indices)
        self.last_perm = self.permutation(split, indices)
        observe = self.observer(batch, self.last_perm, net)
        _, theta = run_learned(net, batch.init_params(), observe, steps)
        return float(batch.eval_loss(theta).mean())

    def meta_problem(self) -> MetaProblem:
        return MetaProblem(self.sample, self.evaluate)
