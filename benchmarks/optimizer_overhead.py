"""Wall time of a full training step with LearnedOptimizer vs torch.optim.Adam, same run.

    .venv/bin/python benchmarks/optimizer_overhead.py            # a few minutes, one thread
    .venv/bin/python benchmarks/optimizer_overhead.py --rounds 3 --steps 20 --sizes 1.5k,100k
    python benchmarks/optimizer_overhead.py --device cuda                      # on a GPU

A training step is forward, backward and the optimizer step on a minibatch of 128 inputs of 64
features. Three models: the digits MLP (64 → 20 → 10, sigmoid; 1,510 parameters), a ~100k-
parameter MLP (64 → 300 → 256 → 10, ReLU; 99,126) and a ~1M one (64 → 1000 → 900 → 10;
975,910). For each learned-optimizer kind (``--kinds``: fresh networks of the default size of
each kind, weights do not change the cost; a pretrained name times that network) and Adam, the
optimizers alternate in rounds so that load from other processes hits them alike; each figure
is the median over rounds of the mean time per step. The optimizer step alone is timed too. The
last line is one JSON object.
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


MODELS = {
    "1.5k": ("digits-mlp", [64, 20, 10], nn.Sigmoid),
    "100k": ("mlp-100k", [64, 300, 256, 10], nn.ReLU),
    "1M": ("mlp-1M", [64, 1000, 900, 10], nn.ReLU),
}


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
    kinds: list[str],
    rounds: int,
    steps: int,
    device: str = "cpu",
) -> dict[str, object]:
    torch.manual_seed(0)
    x = torch.rand(128, sizes[0], device=device)
    y = torch.randint(sizes[-1], (128,), device=device)
    makers: dict[str, Callable[[nn.Module], torch.optim.Optimizer]] = {
        "adam": lambda m: torch.optim.Adam(m.parameters(), lr=1e-3)
    }
    for kind in kinds:
        shipped = kind in l2o.pretrained.names()  # a pretrained name: that exact network
        net = l2o.pretrained(kind) if shipped else l2o.build_net({"optimizer": kind}, seed=0)
        net = net.to(device)
        makers[kind] = lambda m, net=net: l2o.LearnedOptimizer(m.parameters(), net)
    models = {k: mlp(sizes, activation).to(device) for k in makers}
    opts = {k: makers[k](m) for k, m in models.items()}
    for k in opts:  # warm-up: allocations, lazy state
        timed_steps(models[k], opts[k], x, y, 3)
    full: dict[str, list[float]] = {k: [] for k in opts}
    only: dict[str, list[float]] = {k: [] for k in opts}
    for _ in range(rounds):
        for k in opts:
            total, step = timed_steps(models[k], opts[k], x, y, steps)
            full[k].append(total)
            only[k].append(step)
    med = {k: statistics.median(v) for k, v in full.items()}
    med_step = {k: statistics.median(v) for k, v in only.items()}
    return {
        "model": name,
        "device": device,
        "parameters": sum(p.numel() for p in models["adam"].parameters()),
        "adam_ms_per_step": 1000 * med["adam"],
        "adam_ms_optimizer_step": 1000 * med_step["adam"],
        "kinds": {
            kind: {
                "ms_per_step": 1000 * med[kind],
                "ratio": med[kind] / med["adam"],
                "ms_optimizer_step": 1000 * med_step[kind],
                "optimizer_step_ratio": med_step[kind] / med_step["adam"],
            }
            for kind in kinds
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40, help="steps per round per optimizer")
    parser.add_argument(
        "--kinds",
        default="lstm,mlp,rnnprop",
        help="comma-separated net kinds (fresh networks) or pretrained names (e.g. general)",
    )
    parser.add_argument("--sizes", default="1.5k,100k,1M", help=f"of {', '.join(MODELS)}")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args()
    torch.set_num_threads(1)
    kinds = args.kinds.split(",")
    known = [*l2o.nets.net_names(), *l2o.pretrained.names()]
    for bad, allowed in [
        (set(kinds) - set(known), known),
        (set(args.sizes.split(",")) - set(MODELS), MODELS),
    ]:
        if bad:
            parser.error(f"unknown {', '.join(sorted(bad))}; known: {', '.join(allowed)}")
    results = []
    for size in args.sizes.split(","):
        name, sizes, activation = MODELS[size]
        # fewer steps for the big models on a CPU: a 1M-parameter LSTM step takes ~0.3 s
        scale = {"1.5k": 1, "100k": 4, "1M": 20}[size] if args.device == "cpu" else 1
        steps = max(args.steps // scale, 2)
        results.append(compare(name, sizes, activation, kinds, args.rounds, steps, args.device))
    print(f"{'model':<12}{'params':>9}{'kind':>14}{'adam ms':>10}{'l2o ms':>10}{'ratio':>8}"
          f"{'step ratio':>12}")  # fmt: skip
    for r in results:
        for kind, k in r["kinds"].items():
            print(
                f"{r['model']:<12}{r['parameters']:>9}{kind:>14}{r['adam_ms_per_step']:>10.3f}"
                f"{k['ms_per_step']:>10.3f}{k['ratio']:>8.2f}{k['optimizer_step_ratio']:>12.1f}"
            )
    print(
        json.dumps(
            {"threads": 1, "device": args.device, "torch": torch.__version__, "results": results}
        )
    )


if __name__ == "__main__":
    main()
