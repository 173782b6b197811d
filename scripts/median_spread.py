"""How far a median over a few instances moves: a learned optimizer against Adam, paired.

The suite's goals are ratios of median final losses over a fixed set of instances (100 test
instances; a selection's validation instances). On the quadratic those medians move a lot from
one set of instances to another. This runs the network and Adam (one learning rate) on the same
``--instances`` instances of a split, then prints the ratio of their medians over all of them,
over the first 100 (the suite's test set), over the two halves, and over disjoint sets of
``--chunk``; and Adam's own median over each such set.

    .venv/bin/python scripts/median_spread.py general --split validation --instances 1024
    .venv/bin/python scripts/median_spread.py general --split test --instances 1024
"""

from __future__ import annotations

import argparse

import torch

import l2o
from l2o.baselines import get_baseline
from l2o.errors import L2OError
from l2o.evaluate import BaselineRunner
from l2o.meta.unroll import run_learned, task_observer
from l2o.tasks import get_task

SPLITS = ("validation", "test")


def final_losses(
    net: torch.nn.Module, task: str, split: str, n: int, steps: int, lr: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's and Adam's final losses after ``steps`` steps on instances 0..n-1."""
    batch = get_task(task, {}).sample(split, list(range(n)))
    with torch.no_grad():
        *_, theta = BaselineRunner(get_baseline("adam"), {"lr": lr}).trajectory(batch, steps)
        adam = batch.eval_loss(theta).double()
        calls = iter(range(steps + 1))
        skipped = torch.full((n,), float("nan"))

        def record(theta: torch.Tensor) -> torch.Tensor:
            return batch.eval_loss(theta) if next(calls) == steps else skipped

        curve, _ = run_learned(
            net, batch.init_params(), task_observer(batch), steps, record, batch.layout
        )
    return curve[steps].double(), adam


def ratio(learned: torch.Tensor, adam: torch.Tensor) -> float:
    return float(learned.median() / adam.median())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("network", help="a shipped name or a run folder")
    parser.add_argument("--task", default="quadratic")
    parser.add_argument("--split", choices=SPLITS, default="validation")
    parser.add_argument("--instances", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=64, help="instances per disjoint set")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1.0, help="Adam's (the grid's best: 1)")
    args = parser.parse_args()
    if args.instances < 2 * args.chunk or args.chunk < 1:
        parser.error("--instances must hold at least two --chunk sets, and --chunk be >= 1")
    torch.set_num_threads(1)
    try:
        net = l2o.load(args.network)
        learned, adam = final_losses(
            net, args.task, args.split, args.instances, args.steps, args.lr
        )
    except L2OError as error:
        parser.error(str(error))
    half = args.instances // 2
    print(f"{args.network} / Adam (lr {args.lr:g}), {args.task}, {args.steps} steps, "
          f"{args.split} instances; ratio of medians:")  # fmt: skip
    print(f"  all {args.instances}: {ratio(learned, adam):.3f}")
    print(f"  first 100: {ratio(learned[:100], adam[:100]):.3f}")
    print(f"  halves: {ratio(learned[:half], adam[:half]):.3f}, "
          f"{ratio(learned[half:], adam[half:]):.3f}")  # fmt: skip
    sets = range(0, args.instances - args.chunk + 1, args.chunk)
    paired = [ratio(learned[i : i + args.chunk], adam[i : i + args.chunk]) for i in sets]
    alone = [float(adam[i : i + args.chunk].median()) for i in sets]
    print(f"  {len(paired)} sets of {args.chunk}: {min(paired):.3f} to {max(paired):.3f}")
    print(f"Adam's median alone over those sets: {min(alone):.3g} to {max(alone):.3g}")


if __name__ == "__main__":
    main()
