"""The pretrained quadratic optimizer on quadratics written by hand, vs Adam tuned on them.

    .venv/bin/python examples/quadratic_by_hand.py            # ~10 s
    .venv/bin/python examples/quadratic_by_hand.py --optimizer runs/quadratic  # your own run

Each problem is f(θ) = ‖Wθ − y‖² in 10 dimensions with W, y, θ₀ drawn from N(0, 1) here (the
paper's task, but none of l2o's task code). The learned
optimizer runs through :class:`l2o.LearnedOptimizer` like any torch optimizer; Adam gets every
learning rate of a grid and keeps the one with the lowest mean final loss on these very problems
(tuned on the test problems: the comparison favours Adam). Prints a table; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable

import torch
from torch import nn

import l2o

DIM, STEPS = 10, 100
ADAM_LRS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def problems(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n problems side by side: W ``(n, d, d)``, y ``(n, d)``, θ₀ ``(n, d)``."""
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, DIM, DIM, generator=g),
        torch.randn(n, DIM, generator=g),
        torch.randn(n, DIM, generator=g),
    )


def losses(W: torch.Tensor, y: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """f(θ) = ‖Wθ − y‖² of every problem, shape ``(n,)``."""
    return (torch.bmm(W, theta.unsqueeze(-1)).squeeze(-1) - y).pow(2).sum(-1)


def final_losses(n: int, make: Callable[[list[nn.Parameter]], torch.optim.Optimizer]) -> list:
    """f(θ) of each problem after STEPS steps of ``make(params)`` from θ₀.

    Row i of θ is problem i. Both Adam and the learned optimizer are coordinatewise, so one
    optimizer over the (n, d) tensor is exactly n independent runs, one per problem.
    """
    W, y, theta0 = problems(n)
    theta = nn.Parameter(theta0.clone())
    opt = make([theta])
    for _ in range(STEPS):
        opt.zero_grad()
        losses(W, y, theta).sum().backward()
        opt.step()
    with torch.no_grad():
        return losses(W, y, theta).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", default="quadratic", help="pretrained name or run folder")
    parser.add_argument("--problems", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    net = l2o.load(args.optimizer)  # a pretrained name or a run folder
    n = args.problems
    learned = final_losses(n, lambda p: l2o.LearnedOptimizer(p, net))
    adam = {lr: final_losses(n, lambda p, lr=lr: torch.optim.Adam(p, lr=lr)) for lr in ADAM_LRS}
    best_lr = min(adam, key=lambda lr: statistics.mean(adam[lr]))
    rows = {"l2o": learned, **{f"adam lr={lr:g}": v for lr, v in adam.items()}}
    print(f"{n} hand-written 10-d quadratics, loss after {STEPS} steps")
    print(f"{'optimizer':<16}{'mean':>10}{'median':>10}")
    for name, values in rows.items():
        mark = "  <- tuned Adam" if name == f"adam lr={best_lr:g}" else ""
        print(f"{name:<16}{statistics.mean(values):>10.4f}{statistics.median(values):>10.4f}{mark}")
    wins = sum(a < b for a, b in zip(learned, adam[best_lr]))
    print(f"l2o beats tuned Adam (lr={best_lr:g}) on {wins} of {n} problems")
    summary = {
        "problems": n,
        "steps": STEPS,
        "l2o_mean": statistics.mean(learned),
        "l2o_median": statistics.median(learned),
        "adam_best_lr": best_lr,
        "adam_mean": statistics.mean(adam[best_lr]),
        "adam_median": statistics.median(adam[best_lr]),
        "l2o_wins": wins,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
