"""Does meta-training on a task distribution transfer? The LSTM on digits-mlp vs random-mlp.

Trains the paper's LSTM with the same budget on ``digits-mlp`` (the paper's task) and on
``random-mlp`` (random architectures on synthetic data and digits' meta-train half), then reports
the median final loss over 100 test instances (never-seen digits images) of the digits MLP with
each activation, at 100 steps, next to Adam with its learning rate picked on validation::

    nice -n 10 .venv/bin/python benchmarks/distribution_transfer.py --iterations 150
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from l2o.baselines import get_baseline
from l2o.config import TrainConfig
from l2o.evaluate import BaselineRunner, LearnedRunner
from l2o.meta.train import meta_train
from l2o.tasks import get_task

TRAIN_ON = {
    "digits-mlp": {"task": "digits-mlp"},
    "random-mlp": {"task": "random-mlp"},
    "random-mlp+augment": {
        "task": "augmented",
        "task_options": {"task": "random-mlp", "loss_scale": [1.0, 1.0]},
    },
}
TESTS = {a: {"activation": a} for a in ("sigmoid", "relu", "tanh", "gelu")}
TEST, VALIDATION = list(range(100)), list(range(16))


def median(x: torch.Tensor) -> float:
    return float(torch.where(torch.isfinite(x), x, torch.full_like(x, math.inf)).median())


def tuned_adam(family, steps: int) -> tuple[float, float]:
    adam = get_baseline("adam")
    grid = [10 ** (k / 4) for k in range(-14, 1)]  # 3e-4 .. 1
    val = family.sample("validation", VALIDATION)
    scores = [median(BaselineRunner(adam, {"lr": lr}).final_loss(val, steps)) for lr in grid]
    lr = grid[min(range(len(grid)), key=scores.__getitem__)]
    test = family.sample("test", TEST)
    return lr, median(BaselineRunner(adam, {"lr": lr}).final_loss(test, steps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--train-on", nargs="+", default=list(TRAIN_ON), choices=list(TRAIN_ON))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict[str, dict] = {}
    families = {name: get_task("digits-mlp", opts) for name, opts in TESTS.items()}
    results["adam"] = {}
    for name, family in families.items():
        lr, value = tuned_adam(family, args.steps)
        results["adam"][name] = value
        results["adam"][f"{name}_lr"] = lr
    print("adam", json.dumps(results["adam"]), flush=True)
    for name in args.train_on:
        config = TrainConfig(
            **{"batch_size": 8, "val_every": 10, "val_instances": 32, **TRAIN_ON[name]},
            iterations=args.iterations,
            checkpoint_every=10**6,
        )
        started = time.perf_counter()
        net, _ = meta_train(config)
        result: dict[str, float] = {"train_seconds": round(time.perf_counter() - started, 1)}
        for test, family in families.items():
            curve = LearnedRunner(net).run(family.sample("test", TEST), args.steps)
            result[test] = median(curve[-1])
        results[name] = result
        print(name, json.dumps(result), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
