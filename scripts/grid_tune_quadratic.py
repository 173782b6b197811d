"""A dense grid for heavy-ball and Nesterov momentum on the quadratic: how strong a tuned
baseline can be at a given horizon, as a check on Optuna's few trials.

Tunes (lr, momentum) on a 30 × 9 grid by the median final loss over validation instances,
then reports that choice's median final loss on the first test instances (the ones
`scripts/score_against_suite.py --instances 50` scores).

    python scripts/grid_tune_quadratic.py --steps 100 --validation 64 --test 50
"""

from __future__ import annotations

import argparse

import torch

from l2o.tasks import get_task
from l2o.tasks.quadratic import QuadraticBatch

MOMENTA = (0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.99)


def final_losses(
    batch: QuadraticBatch, lr: float, momentum: float, steps: int, nesterov: bool
) -> torch.Tensor:
    """Final losses of torch.optim.SGD's update rule (dampening 0), diverged runs as +inf."""
    theta, velocity = batch.init_params(), torch.zeros_like(batch.init_params())
    for step in range(steps):
        _, grad = batch.loss_and_grad(theta, step)
        velocity = momentum * velocity + grad
        theta = theta - lr * (grad + momentum * velocity if nesterov else velocity)
    loss, _ = batch.loss_and_grad(theta, steps)
    return torch.where(torch.isfinite(loss), loss, torch.full_like(loss, float("inf")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--validation", type=int, default=64, help="validation instances")
    parser.add_argument("--test", type=int, default=50, help="test instances")
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = get_task("quadratic")
    validation = task.sample("validation", range(args.validation))
    test = task.sample("test", range(args.test))
    for nesterov in (False, True):
        grid = [(lr, m) for lr in torch.logspace(-2.5, -0.5, 30).tolist() for m in MOMENTA]
        scores = {
            point: final_losses(validation, *point, args.steps, nesterov).median().item()
            for point in grid
        }
        lr, momentum = min(scores, key=scores.get)
        test_median = final_losses(test, lr, momentum, args.steps, nesterov).median().item()
        name = "nesterov" if nesterov else "momentum"
        print(
            f"{name}: lr={lr:.4g} momentum={momentum} validation median {scores[lr, momentum]:.4g}"
            f", test median {test_median:.4g} ({args.steps} steps)"
        )


if __name__ == "__main__":
    main()
