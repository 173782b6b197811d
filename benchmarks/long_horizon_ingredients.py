"""What each meta-training ingredient of issue 10 does on the quadratic, at one small budget.

Trains the paper's LSTM (or ``--optimizer KIND``) on the quadratic (horizon 100) with each
variant, the same number of meta-iterations each, and reports the median final loss over 100
test instances at 100 and 1,000 steps (10× the horizon), whether the curve still falls between
500 and 1,000 steps, the median on *rescaled* test instances (θ = s·φ, s log-uniform in
[1e-2, 1e2]: scale robustness), and Adam's median with its learning rate picked on
validation for each step count::

    nice -n 10 .venv/bin/python benchmarks/long_horizon_ingredients.py --iterations 100

Variants: ``paper`` (the defaults), ``curriculum`` (plateau curriculum 100 → 1,000, validation at
1,000), ``log_uniform`` (horizons log-uniform in [20, 1,000]), ``pes`` (PES instead of truncated
BPTT), ``augment`` (parameter and loss scales log-uniform in [1e-3, 1e3], log meta-loss),
``augment_mild`` (the same in [1e-2, 1e2]), ``log_loss`` (their log meta-loss alone).
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

VARIANTS = {
    "paper": {},
    "curriculum": {
        "curriculum": "plateau",
        "max_horizon": 1000,
        "val_horizon": 1000,
        "curriculum_patience": 1,
    },
    "log_uniform": {"horizon_sampling": "log_uniform", "max_horizon": 1000},
    "pes": {"estimator": "pes", "pes_pairs": 8},
    "log_loss": {"meta_loss": "log"},  # the augment variants' meta-loss, without augmentation
    "augment": {
        "task": "augmented",
        "task_options": {"task": "quadratic"},
        "meta_loss": "log",
    },
    "augment_mild": {  # the rescaled test's own range, [1e-2, 1e2]
        "task": "augmented",
        "task_options": {
            "task": "quadratic",
            "param_scale": [1e-2, 1e2],
            "loss_scale": [1e-2, 1e2],
        },
        "meta_loss": "log",
    },
}
STEPS = (100, 500, 1000)
TEST = list(range(100))
VALIDATION = list(range(32))


def median(x: torch.Tensor) -> float:
    x = torch.where(torch.isfinite(x), x, torch.full_like(x, math.inf))
    return float(x.median())


def evaluate(runner, family, scaled) -> dict[str, float]:
    curve = runner.run(family.sample("test", TEST), max(STEPS))
    result = {f"median@{s}": median(curve[s]) for s in STEPS}
    result["falling"] = result["median@1000"] < 0.9 * result["median@500"]
    result["diverged"] = int((~torch.isfinite(curve[-1])).sum())
    result["rescaled_median@100"] = median(runner.run(scaled.sample("test", TEST), 100)[-1])
    return result


def tuned_adam(family, steps: int) -> tuple[float, float]:
    """(lr, median test loss) with lr picked on validation from a log grid."""
    adam = get_baseline("adam")
    grid = [10 ** (k / 4) for k in range(-12, 2)]  # 1e-3 .. ~1.8
    val = family.sample("validation", VALIDATION)
    scores = [median(BaselineRunner(adam, {"lr": lr}).final_loss(val, steps)) for lr in grid]
    lr = grid[min(range(len(grid)), key=scores.__getitem__)]
    test = family.sample("test", TEST)
    return lr, median(BaselineRunner(adam, {"lr": lr}).final_loss(test, steps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--optimizer", default="lstm", help="the net kind (l2o.nets)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    family = get_task("quadratic")
    scaled = get_task(
        "augmented",
        {"param_scale": [1e-2, 1e2], "loss_scale": [1.0, 1.0], "splits": ["test"]},
    )
    results: dict[str, dict] = {}
    for steps in (100, 1000):
        lr, value = tuned_adam(family, steps)
        results[f"adam@{steps}"] = {"lr": lr, "median": value}
        print(f"adam@{steps}: lr {lr:.3g}, median {value:.3g}", flush=True)
    for name in args.variants:
        config = TrainConfig(
            iterations=args.iterations,
            batch_size=args.batch_size,
            val_every=10,
            val_instances=32,
            checkpoint_every=10**6,
            seed=args.seed,
            optimizer=args.optimizer,
            **VARIANTS[name],
        )
        started = time.perf_counter()
        net, history = meta_train(config)
        seconds = time.perf_counter() - started
        net.eval()
        result = {"train_seconds": round(seconds, 1), "best_iteration": history.best_iteration}
        result.update(evaluate(LearnedRunner(net), family, scaled))
        results[name] = result
        print(name, json.dumps(result), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
