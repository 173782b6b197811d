"""Train a plain ``nn.Sequential`` digits classifier with the pretrained optimizer, vs tuned Adam.

    .venv/bin/python examples/digits_sequential.py                # ~1 minute, 20 seeds
    .venv/bin/python examples/digits_sequential.py --optimizer runs/digits-mlp   # your own run

The model is an ordinary ``nn.Sequential`` (64 → 20 → 10, sigmoid), freshly initialised by
PyTorch for each seed; the training loop is the usual one, with ``l2o.LearnedOptimizer`` in place
of ``torch.optim.Adam``. It trains on the half of sklearn's digits images that meta-training
never saw (l2o's fixed split), 200 steps of minibatches of 128. Every optimizer of a seed starts
from the same weights and sees the same minibatches. Adam runs with each learning rate of the
grid and keeps the one with the lowest mean final loss over these very seeds (tuned on the test
runs: the comparison favours Adam). The final loss is the cross-entropy on all of the images.
Prints a table; the last line is JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from collections.abc import Callable

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

import l2o

STEPS, BATCH = 200, 128
ADAM_LRS = (0.001, 0.003, 0.01, 0.03, 0.1)
Maker = Callable[[list[nn.Parameter]], torch.optim.Optimizer]


def unseen_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The images l2o's digits-mlp meta-training never used (its fixed split, seed 0)."""
    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))[len(data.target) // 2 :]
    X = torch.tensor(data.data[order] / 16.0, dtype=torch.float32)
    return X, torch.tensor(data.target[order], dtype=torch.long)


def train(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    X: torch.Tensor,
    y: torch.Tensor,
    batches: torch.Tensor,
) -> float:
    """The usual loop; returns the final loss on all the images."""
    for rows in batches:
        opt.zero_grad()
        nn.functional.cross_entropy(model(X[rows]), y[rows]).backward()
        opt.step()
    with torch.no_grad():
        return nn.functional.cross_entropy(model(X), y).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", default="digits-mlp", help="pretrained name or run folder")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument(
        "--adam-lrs", default=",".join(f"{lr:g}" for lr in ADAM_LRS), help="Adam's grid"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    net = l2o.load(args.optimizer)  # a pretrained name or a run folder
    X, y = unseen_digits()
    makers: dict[str, Maker] = {"l2o": lambda p: l2o.LearnedOptimizer(p, net)}
    for lr in (float(v) for v in args.adam_lrs.split(",")):
        makers[f"adam lr={lr:g}"] = lambda p, lr=lr: torch.optim.Adam(p, lr=lr)
    final: dict[str, list[float]] = {name: [] for name in makers}
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(64, 20), nn.Sigmoid(), nn.Linear(20, 10))
        g = torch.Generator().manual_seed(seed)
        batches = torch.randint(len(y), (STEPS, BATCH), generator=g)
        for name, make in makers.items():
            fresh = copy.deepcopy(model)
            final[name].append(train(fresh, make(list(fresh.parameters())), X, y, batches))
    adam = [name for name in final if name.startswith("adam")]
    best = min(adam, key=lambda name: statistics.mean(final[name]))
    print(f"nn.Sequential 64-20-10 on digits, {args.seeds} seeds, loss after {STEPS} steps")
    print(f"{'optimizer':<15}{'mean':>9}{'std':>9}{'median':>9}")
    for name, values in final.items():
        mark = "  <- tuned Adam" if name == best else ""
        print(
            f"{name:<15}{statistics.mean(values):>9.4f}{statistics.stdev(values):>9.4f}"
            f"{statistics.median(values):>9.4f}{mark}"
        )
    wins = sum(a < b for a, b in zip(final["l2o"], final[best]))
    print(f"l2o beats tuned Adam ({best}) on {wins} of {args.seeds} seeds")
    summary = {
        "seeds": args.seeds,
        "steps": STEPS,
        "l2o_mean": statistics.mean(final["l2o"]),
        "adam_best_lr": float(best.split("=")[1]),
        "adam_mean": statistics.mean(final[best]),
        "l2o_wins": wins,
        "means": {name: statistics.mean(v) for name, v in final.items()},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
