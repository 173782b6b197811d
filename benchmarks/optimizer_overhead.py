"""Wall time of a full training step with LearnedOptimizer vs torch.optim.Adam, same run.

    .venv/bin/python benchmarks/optimizer_overhead.py            # ~1 minute, one thread
    .venv/bin/python benchmarks/optimizer_overhead.py --rounds 3 --steps 20   # quicker
    python benchmarks/optimizer_overhead.py --device cuda                      # on a GPU

A training step is forward, backward and the optimizer step on a minibatch of 128 digits
images. Two models: the digits MLP (64 → 20 → 10, sigmoid; 1,510 parameters) and a ~100k-
parameter MLP (64 → 300 → 256 → 10; 99,126). Adam and the learned optimizer (with and without
its NaN/inf check) alternate in rounds so that load from other processes hits them alike; each
figure is the median over rounds of the mean time per step. The optimizer step alone is timed
too. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

import l2o


def mlp(sizes: list[int], activation: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [nn.Linear(fan_in, fan_out), activation()]
    return nn.Sequential(*layers[:-1])


def make_net() -> nn.Module:
    """The pretrained digits optimizer if installed (any LSTM of its size costs the same)."""
    if "digits-mlp" in l2o.pretrained.names():
        return l2o.pretrained("digits-mlp")
    return l2o.LSTMOptimizer(seed=0)


def timed_steps(
    model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, steps: int
) -> tuple[float, float]:
    """Mean seconds per full training step and per optimizer step, over ``steps`` steps."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    step_time = 0.0
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        sync()
        t = time.perf_counter()
        opt.step()
        sync()
        step_time += time.perf_counter() - t
    total = time.perf_counter() - start
    return total / steps, step_time / steps


def compare(
    name: str,
    sizes: list[int],
    activation: type[nn.Module],
    rounds: int,
    steps: int,
    device: str = "cpu",
) -> dict[str, float | int | str]:
    torch.manual_seed(0)
    x = torch.rand(128, sizes[0], device=device)
    y = torch.randint(sizes[-1], (128,), device=device)
    makers: dict[str, Callable[[nn.Module], torch.optim.Optimizer]] = {
        "adam": lambda m: torch.optim.Adam(m.parameters(), lr=1e-3),
        "l2o": lambda m: l2o.LearnedOptimizer(m.parameters(), make_net().to(device)),
        # without the NaN/inf check (one reduction, and on a GPU one host sync, per group)
        "l2o_nocheck": lambda m: l2o.LearnedOptimizer(
            m.parameters(), make_net().to(device), check_finite=False
        ),
    }
    models = {k: mlp(sizes, activation).to(device) for k in makers}
    opts = {k: makers[k](m) for k, m in models.items()}
    for k in opts:  # warm-up: allocations, lazy state
        timed_steps(models[k], opts[k], x, y, 5)
    full: dict[str, list[float]] = {k: [] for k in opts}
    only: dict[str, list[float]] = {k: [] for k in opts}
    for _ in range(rounds):
        for k in opts:
            total, step = timed_steps(models[k], opts[k], x, y, steps)
            full[k].append(total)
            only[k].append(step)
    med = {k: statistics.median(v) for k, v in full.items()}
    med_step = {k: statistics.median(v) for k, v in only.items()}
    params = sum(p.numel() for p in models["adam"].parameters())
    return {
        "model": name,
        "device": device,
        "parameters": params,
        "adam_ms_per_step": 1000 * med["adam"],
        "l2o_ms_per_step": 1000 * med["l2o"],
        "ratio": med["l2o"] / med["adam"],
        "adam_ms_optimizer_step": 1000 * med_step["adam"],
        "l2o_ms_optimizer_step": 1000 * med_step["l2o"],
        "optimizer_step_ratio": med_step["l2o"] / med_step["adam"],
        "l2o_nocheck_ms_per_step": 1000 * med["l2o_nocheck"],
        "ratio_nocheck": med["l2o_nocheck"] / med["adam"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=40, help="steps per round per optimizer")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args()
    torch.set_num_threads(1)
    big_steps = args.steps if args.device != "cpu" else max(args.steps // 4, 5)
    results = [
        compare("digits-mlp", [64, 20, 10], nn.Sigmoid, args.rounds, args.steps, args.device),
        compare("mlp-100k", [64, 300, 256, 10], nn.ReLU, args.rounds, big_steps, args.device),
    ]
    print(f"{'model':<12}{'params':>9}{'adam ms':>10}{'l2o ms':>10}{'ratio':>8}{'step ratio':>12}")
    for r in results:
        print(
            f"{r['model']:<12}{r['parameters']:>9}{r['adam_ms_per_step']:>10.3f}"
            f"{r['l2o_ms_per_step']:>10.3f}{r['ratio']:>8.2f}{r['optimizer_step_ratio']:>12.1f}"
        )
    print(
        json.dumps(
            {"threads": 1, "device": args.device, "torch": torch.__version__, "results": results}
        )
    )


if __name__ == "__main__":
    main()
