"""Held-out check of a learned optimizer on real datasets that meta-training never sees.

Full-batch MLPs on the small datasets that ship with scikit-learn (breast cancer, wine, iris:
classification; diabetes: regression), each trained by the learned optimizer through the
drop-in ``l2o.LearnedOptimizer`` and by Adam at each learning rate of a grid. Adam gets its best
learning rate per problem *on the test problem itself*, so the comparison favours Adam.

For every problem and seed it reports the final loss at each checkpoint step, the ratio to the
best Adam, and the largest rise of the loss above its running minimum after that minimum fell
below a tenth of the starting loss ("rise": a learned optimizer that converges and then spikes
shows up here even when its final loss is small again; the largest over the seeds).

``--proxy`` runs synthetic stand-ins instead (sklearn's ``make_classification`` /
``make_regression`` with each set's size, features and classes, the same networks): choosing
between variants of an optimizer on them keeps the held-out sets for the final measurement.

    .venv/bin/python scripts/heldout_check.py general runs/my-run --steps 1000 --seeds 3
    .venv/bin/python scripts/heldout_check.py runs/a runs/b --proxy   # to choose between them
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from sklearn import datasets
from torch import nn

import l2o
from l2o.errors import L2OError
from l2o.resolve import load

ADAM_LRS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
CHECKPOINTS = (100, 300, 1000, 3000, 10000)


@dataclass(frozen=True)
class Problem:
    name: str
    loader: Callable
    classification: bool
    hidden: tuple[int, ...]
    activation: type[nn.Module]


PROBLEMS = (
    Problem("breast-cancer relu [64, 64]", datasets.load_breast_cancer, True, (64, 64), nn.ReLU),
    Problem("wine tanh [32]", datasets.load_wine, True, (32,), nn.Tanh),
    Problem("iris gelu [16, 16, 16]", datasets.load_iris, True, (16, 16, 16), nn.GELU),
    Problem("diabetes relu [64]", datasets.load_diabetes, False, (64,), nn.ReLU),
)


def _synthetic(samples: int, features: int, classes: int) -> Callable:
    """A loader like sklearn's ``load_*`` for a synthetic set of that shape (0 classes:
    regression), fixed by its seed."""

    def load(return_X_y: bool = True) -> tuple:
        if classes:
            informative = min(features, max(2, features // 3))
            return datasets.make_classification(
                samples, features, n_informative=informative, n_redundant=0,
                n_classes=classes, n_clusters_per_class=1, random_state=0,
            )  # fmt: skip
        return datasets.make_regression(samples, features, noise=10.0, random_state=0)

    return load


# the held-out sets' synthetic stand-ins: the same sizes, classes and networks
PROXY_PROBLEMS = (
    Problem(
        "proxy of breast cancer relu [64, 64]", _synthetic(569, 30, 2), True, (64, 64), nn.ReLU
    ),
    Problem("proxy of wine tanh [32]", _synthetic(178, 13, 3), True, (32,), nn.Tanh),
    Problem("proxy of iris gelu [16, 16, 16]", _synthetic(150, 4, 3), True, (16, 16, 16), nn.GELU),
    Problem("proxy of diabetes relu [64]", _synthetic(442, 10, 0), False, (64,), nn.ReLU),
)


def standardised(problem: Problem) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = problem.loader(return_X_y=True)
    x = torch.as_tensor(x, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-8)
    if problem.classification:
        return x, torch.as_tensor(y, dtype=torch.long)
    y = torch.as_tensor(y, dtype=torch.float32)
    return x, ((y - y.mean()) / y.std()).unsqueeze(1)


def model_for(problem: Problem, x: torch.Tensor, y: torch.Tensor, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    outputs = int(y.max()) + 1 if problem.classification else 1
    sizes = (x.shape[1], *problem.hidden)
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [nn.Linear(fan_in, fan_out), problem.activation()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], outputs))


def curve(problem: Problem, seed: int, steps: int, make_optimizer: Callable) -> list[float]:
    """The full-batch training loss before each step 0..steps (inf from a non-finite loss on)."""
    x, y = standardised(problem)
    model = model_for(problem, x, y, seed)
    loss_fn = nn.CrossEntropyLoss() if problem.classification else nn.MSELoss()
    optimizer = make_optimizer(model.parameters())
    losses = []
    for _ in range(steps + 1):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        value = float(loss.detach())
        if not math.isfinite(value):
            return losses + [math.inf] * (steps + 1 - len(losses))
        losses.append(value)
        loss.backward()
        optimizer.step()
    return losses


def largest_rise(losses: list[float]) -> float:
    """The largest loss(t) − min_{s≤t} loss(s) once that minimum is below a tenth of loss(0)."""
    best, rise = math.inf, 0.0
    for value in losses:
        best = min(best, value)
        if best < losses[0] / 10:
            rise = max(rise, value - best)
    return rise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("optimizers", nargs="+", help="pretrained names or run folders")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", help="write every curve's checkpoints here")
    parser.add_argument(
        "--proxy", action="store_true", help="synthetic stand-ins of the held-out sets"
    )
    args = parser.parse_args(argv)
    if args.steps < CHECKPOINTS[0] or args.seeds < 1:
        parser.error(f"--steps must be at least {CHECKPOINTS[0]} and --seeds at least 1")
    try:
        nets = {name: load(name) for name in args.optimizers}
    except L2OError as exc:
        parser.error(str(exc))
    torch.set_num_threads(1)
    marks = [s for s in CHECKPOINTS if s <= args.steps]
    results: dict = {}
    for problem in PROXY_PROBLEMS if args.proxy else PROBLEMS:
        print(
            f"\n## {problem.name}: median over {args.seeds} seeds (ratio to Adam with its best"
            " lr per problem)",
            flush=True,
        )
        adam = {}
        for lr in ADAM_LRS:
            runs = [
                curve(problem, s, args.steps, lambda p, lr=lr: torch.optim.Adam(p, lr=lr))
                for s in range(args.seeds)
            ]
            adam[lr] = runs
        best_adam = {
            m: min(statistics.median(r[m] for r in runs) for runs in adam.values()) for m in marks
        }
        # the rise of Adam at the lr best at the last step: what a tuned Adam's curve looks like
        final_lr = min(adam, key=lambda lr: statistics.median(r[args.steps] for r in adam[lr]))
        adam_rise = max(largest_rise(r) for r in adam[final_lr])
        line = "  ".join(f"{m}: {best_adam[m]:.3g}" for m in marks)
        print(
            f"  Adam (best lr per step count)  {line}  largest rise {adam_rise:.3g} (lr {final_lr})"
        )
        results[problem.name] = {"adam": best_adam, "adam_largest_rise": adam_rise}
        for name, net in nets.items():
            runs = [
                curve(problem, s, args.steps, lambda p, net=net: l2o.LearnedOptimizer(p, net=net))
                for s in range(args.seeds)
            ]
            finals = {m: statistics.median(r[m] for r in runs) for m in marks}
            rise = max(largest_rise(r) for r in runs)
            line = "  ".join(
                f"{m}: {finals[m]:.3g} ({finals[m] / max(best_adam[m], 1e-30):.2g}x)" for m in marks
            )
            print(f"  {name}  {line}  largest rise {rise:.3g}", flush=True)
            results[problem.name][name] = {"finals": finals, "largest_rise": rise}
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
