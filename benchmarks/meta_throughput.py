"""Meta-training throughput on the paper's workload, against a one-instance-at-a-time reference.

    .venv/bin/python benchmarks/meta_throughput.py          # or: make bench
    .venv/bin/python benchmarks/meta_throughput.py --clock cpu   # a shared machine: CPU time

Workload: quadratic (d = 10), B = 128 instances, horizon T = 100, truncation 20, one thread.
An optimizee step is one instance advanced by one step, with the forward, the backward and the
meta-update all included. Printed:

- l2o: ``l2o.meta_train``'s inner loop (batched over instances, first-order surrogate), the best
  of ``--repeats`` timings; on float32 CPU the LSTM runs on its C loops (``l2o.nets.native``).
- l2o with the eager cell: the same with the C loops off (``native.disabled()``).
- l2o at B = 1: the same code on one instance at a time (how much is batching).
- every net kind (lstm, mlp, rnnprop) at B = 128: optimizee-steps/s of each.
- reference: the way most public ports meta-train: one instance at a time, ``nn.LSTMCell``
  modules, the optimizee gradient from autograd, the meta-loss backpropagated through the loss;
  the same maths (preprocessing, 2×20 LSTM, first-order, truncation 20, Adam).
- the machine's own limit: the fp32 GEMM rate of the unroll's own shapes (B·d = 1280 rows by
  40 by 80 = 4H, the second layer's packed matmul) on one thread, in the same run, and the
  unroll's useful FLOP rate: the LSTM's matmul FLOPs per coordinate-step (forward, and backward
  for inputs and weights: 6 FLOPs per weight, less the input gradients nothing needs) times
  coordinate-steps/s. ``fraction_of_gemm`` is their ratio; the rest of the time goes to
  elementwise kernels and per-kernel dispatch.
- with ``--device cuda``: the same on the GPU at ``--batches`` (default B = 128 and 8,192) and,
  with ``--largest``, doubling B until it no longer fits, each against the GPU's GEMM rate of
  the same rows; the CPU numbers of the same run stay first.
- peak memory (resident-set growth during one meta-iteration over the process before it,
  sampled every 0.5 ms, in a fresh process each) for
  T = 100 and T = 1000 with truncation 20: truncation keeps it flat.

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
from torch import nn

from l2o.config import TrainConfig
from l2o.devices import on_device, resolve_device
from l2o.meta.train import _unroll_and_step, build_from_config, task_problem
from l2o.meta.unroll import step_weights
from l2o.nets import native
from l2o.nets.preprocess import log_sign
from l2o.tasks import get_task

HORIZON, TRUNCATION, BATCH = 100, 20, 128
# What the CPU timings read: wall time (the default), or with --clock cpu this process's CPU
# time, which leaves out the time other work on a shared machine holds the core (not the cache
# and memory it shares): an estimate of the quiet-machine figures. GPU timings read wall time.
clock = time.perf_counter


def l2o_steps_per_s(
    batch: int, iterations: int, kind: str = "lstm", device: str = "cpu", repeats: int = 1
) -> float:
    """Optimizee-steps/s over ``iterations`` meta-iterations: the best of ``repeats`` such runs
    (as :func:`gemm_gflops` takes its best), so that other work on the machine costs less."""
    dev = resolve_device(device)
    config = TrainConfig(optimizer=kind, batch_size=batch, horizon=HORIZON, truncation=TRUNCATION)
    net = build_from_config(config).to(dev)
    meta_opt = torch.optim.Adam(net.parameters(), lr=config.meta_lr)
    problem = task_problem(on_device(get_task("quadratic"), dev))
    weights = step_weights("uniform", HORIZON).to(dev)
    _unroll_and_step(net, meta_opt, problem, list(range(batch)), config, weights, HORIZON, 0)
    _sync(dev)
    best, it = float("inf"), 0
    timer = clock if dev.type == "cpu" else time.perf_counter
    for _ in range(repeats):
        start = timer()
        for _ in range(iterations):
            it += 1
            indices = list(range(it * batch, (it + 1) * batch))
            _unroll_and_step(net, meta_opt, problem, indices, config, weights, HORIZON, it)
        _sync(dev)
        best = min(best, timer() - start)
    return iterations * batch * HORIZON / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_gflops(
    rows: int, inner: int, cols: int, repeats: int = 7, calls: int = 200, device: str = "cpu"
) -> float:
    """fp32 ``(rows, inner) @ (inner, cols)`` on this thread (or GPU): the best of ``repeats``."""
    dev = torch.device(device)
    a, b = torch.randn(rows, inner, device=dev), torch.randn(inner, cols, device=dev)
    out = torch.empty(rows, cols, device=dev)
    for _ in range(calls):  # warm-up
        torch.mm(a, b, out=out)
    best = float("inf")
    timer = clock if dev.type == "cpu" else time.perf_counter
    for _ in range(repeats):
        _sync(dev)
        start = timer()
        for _ in range(calls):
            torch.mm(a, b, out=out)
        _sync(dev)
        best = min(best, timer() - start)
    return 2 * rows * inner * cols * calls / best / 1e9


def flops_per_coordinate_step(net: nn.Module, truncation: int = TRUNCATION) -> int:
    """The network's matmul FLOPs for one coordinate and one step, forward and backward.

    Every weight is one multiply-add (2 FLOPs) in the forward pass and two in the backward pass
    (the gradient with respect to the layer's input and to the weight): 6 FLOPs per weight, less
    the input gradients the backward never computes because nothing needs them: the first
    layer's rows for the features (constants) at every step, and every layer's rows for the
    recurrent h at a window's first step (the state a window starts from is a constant). Biases
    and elementwise gate arithmetic are not counted (not matmul work).
    """
    weights = [p for name, p in net.named_parameters() if name.endswith("weight")]
    total = 6 * sum(p.numel() for p in weights)
    cells = [p for name, p in net.named_parameters() if name.startswith("cell") and p.dim() == 2]
    if cells:  # the LSTM's packed (in + H, 4H) matrices
        hidden = cells[0].shape[1] // 4
        total -= 2 * (cells[0].shape[0] - hidden) * 4 * hidden  # the features' rows
        total -= 2 * sum(hidden * c.shape[1] for c in cells) // truncation  # h at a window start
    return total


class ReferenceLSTM(nn.Module):
    """The common port: two nn.LSTMCell modules and a linear output."""

    def __init__(self) -> None:
        super().__init__()
        self.cell1, self.cell2 = nn.LSTMCell(2, 20), nn.LSTMCell(20, 20)
        self.out = nn.Linear(20, 1)

    def forward(self, grad: torch.Tensor, state: list[torch.Tensor]):
        h1, c1 = self.cell1(log_sign(grad), (state[0], state[1]))
        h2, c2 = self.cell2(h1, (state[2], state[3]))
        return 0.1 * self.out(h2).squeeze(-1), [h1, c1, h2, c2]


def reference_steps_per_s(instances: int) -> float:
    net = ReferenceLSTM()
    meta_opt = torch.optim.Adam(net.parameters(), lr=0.003)
    batch = get_task("quadratic").sample("train", range(instances + 1))

    def one_instance(i: int) -> None:
        W, y = batch.W[i], batch.y[i]
        theta = batch.theta0[i].clone().requires_grad_(True)
        state = [torch.zeros(10, 20) for _ in range(4)]
        for _ in range(HORIZON // TRUNCATION):
            meta_loss = 0.0
            for _ in range(TRUNCATION):
                loss = (W @ theta - y).pow(2).sum()
                (grad,) = torch.autograd.grad(loss, theta, retain_graph=True)
                update, state = net(grad.detach(), state)
                theta = theta + update
                meta_loss = meta_loss + (W @ theta - y).pow(2).sum()
            meta_opt.zero_grad()
            meta_loss.backward()
            meta_opt.step()
            theta = theta.detach().requires_grad_(True)
            state = [s.detach() for s in state]

    one_instance(instances)  # warm-up
    start = clock()
    for i in range(instances):
        one_instance(i)
    return instances * HORIZON / (clock() - start)


PEAK_SCRIPT = """
import os, threading, time, torch
torch.set_num_threads(1)
from l2o.config import TrainConfig
from l2o.meta.train import _unroll_and_step, build_from_config, task_problem
from l2o.meta.unroll import step_weights
from l2o.tasks import get_task

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

cfg = TrainConfig(batch_size=BATCH, horizon=HORIZON, truncation=TRUNCATION)
net = build_from_config(cfg)
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
problem = task_problem(get_task("quadratic"))
w = step_weights("uniform", cfg.horizon)
base, peak, done = rss_mb(), [0.0], [False]

def watch():  # torch ops release the GIL, so this samples the resident set during the run
    while not done[0]:
        peak[0] = max(peak[0], rss_mb())
        time.sleep(0.0005)

t = threading.Thread(target=watch)
t.start()
_unroll_and_step(net, opt, problem, list(range(cfg.batch_size)), cfg, w, cfg.horizon, 0)
done[0] = True
t.join()
print(max(peak[0], rss_mb()) - base)
"""


def peak_mb(horizon: int) -> float:
    """Resident-set growth during one meta-iteration at this horizon, in a fresh process."""
    code = (
        PEAK_SCRIPT.replace("BATCH", str(BATCH))
        .replace("HORIZON", str(horizon))
        .replace("TRUNCATION", str(TRUNCATION))
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def on_gpu(args: argparse.Namespace, dim: int, flops: int, hidden: int) -> list[dict]:
    """Throughput and fraction of the GEMM rate on ``args.device`` per meta-batch size."""
    device = resolve_device(args.device)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    runs: list[dict] = []
    batch = batches[-1] if batches else 128
    while True:
        todo = batches if not runs else [batch]
        started = time.perf_counter()
        try:
            for b in todo:
                speed = l2o_steps_per_s(b, args.iterations, device=args.device)
                gemm = gemm_gflops(b * dim, 2 * hidden, 4 * hidden, device=str(device))
                unroll = speed * dim * flops / 1e9
                runs.append(
                    {
                        "batch": b,
                        "optimizee_steps_per_s": round(speed, 1),
                        "gemm_gflops": round(gemm, 2),
                        "unroll_gflops": round(unroll, 2),
                        "fraction_of_gemm": round(unroll / gemm, 4),
                    }
                )
                share = unroll / gemm
                print(f"{device}, B={b}: {speed:12,.0f} optimizee-steps/s, {share:.3f} of GEMM")
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if not runs:
                raise
            largest = runs[-1]["batch"]
            print(f"{device}: B={todo[-1]} does not fit; the largest that ran is B={largest}")
            runs[-1]["largest"] = True
            return runs
        # Instances are drawn on the CPU one by one: past a minute per size that dominates.
        if not args.largest or time.perf_counter() - started > 60:
            return runs
        batch *= 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5, help="timed meta-iterations")
    parser.add_argument(
        "--repeats", type=int, default=3, help="time the paper LSTM this often, keep the best"
    )
    parser.add_argument("--reference-instances", type=int, default=4)
    parser.add_argument(
        "--device", default="cpu", help="also time meta-training on this device (cuda, cuda:N)"
    )
    parser.add_argument(
        "--batches", default="128,8192", help="meta-batch sizes to time on --device"
    )
    parser.add_argument(
        "--largest", action="store_true", help="on a GPU: double B until memory runs out"
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="CPU timings in wall time, or in this process's CPU time (a shared machine)",
    )
    args = parser.parse_args()
    global clock
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    ours = l2o_steps_per_s(BATCH, args.iterations, repeats=args.repeats)
    cell = "c" if native.available() else "eager"
    with native.disabled():  # the same with the LSTM's C loops off: what they buy
        eager = l2o_steps_per_s(BATCH, args.iterations, repeats=args.repeats)
    dim = get_task("quadratic").dim
    net = build_from_config(TrainConfig())
    hidden = TrainConfig().hidden_size
    gemm = gemm_gflops(BATCH * dim, 2 * hidden, 4 * hidden)
    flops = flops_per_coordinate_step(net)
    unroll = ours * dim * flops / 1e9
    ours_b1 = l2o_steps_per_s(1, args.reference_instances)
    # every net kind on the same workload (the paper's LSTM is `ours` above)
    kinds = {"lstm": ours}
    kinds.update({k: l2o_steps_per_s(BATCH, args.iterations, k) for k in ("mlp", "rnnprop")})
    with native.disabled():  # the reference's preprocessing in plain torch ops, as ports write it
        reference = reference_steps_per_s(args.reference_instances)
    mem100, mem1000 = peak_mb(100), peak_mb(1000)
    device_runs = []
    if resolve_device(args.device).type != "cpu":
        device_runs = on_gpu(args, dim, flops, hidden)
    print(f"l2o, B={BATCH}:            {ours:12,.0f} optimizee-steps/s ({cell} LSTM loops)")
    print(f"l2o, B={BATCH}, eager cell:{eager:12,.0f} optimizee-steps/s")
    print(f"l2o, B=1:              {ours_b1:12,.0f} optimizee-steps/s")
    print(f"reference, one by one: {reference:12,.0f} optimizee-steps/s")
    print(f"ratio l2o / reference: {ours / reference:12.1f}x")
    for kind, rate in kinds.items():
        print(f"kind {kind:<18}{rate:12,.0f} optimizee-steps/s")
    print(
        f"GEMM {BATCH * dim}x{2 * hidden} by {2 * hidden}x{4 * hidden}, one thread: {gemm:.1f} "
        f"GFLOP/s; unroll: {flops:,} FLOP per coordinate-step, {unroll:.1f} GFLOP/s = "
        f"{unroll / gemm:.3f} of the GEMM rate (load average {load:.1f} at the start, "
        f"{args.clock} clock)"
    )
    print(
        f"peak memory growth: T=100 {mem100:.1f} MB, T=1000 {mem1000:.1f} MB "
        f"(ratio {mem1000 / max(mem100, 1e-9):.2f})"
    )
    print(
        json.dumps(
            {
                "optimizee_steps_per_s": round(ours, 1),
                "reference_steps_per_s": round(reference, 1),
                "ratio": round(ours / reference, 2),
                "gemm_gflops": round(gemm, 2),
                "unroll_gflops": round(unroll, 2),
                "fraction_of_gemm": round(unroll / gemm, 4),
                "flops_per_coordinate_step": flops,
                "lstm_loops": cell,
                "eager_cell_steps_per_s": round(eager, 1),
                "load_average": round(load, 2),
                "clock": args.clock,
                "l2o_batch1_steps_per_s": round(ours_b1, 1),
                "peak_mb_T100": round(mem100, 2),
                "peak_mb_T1000": round(mem1000, 2),
                "kinds_steps_per_s": {k: round(v, 1) for k, v in kinds.items()},
                **({"device": args.device, "device_runs": device_runs} if device_runs else {}),
            }
        )
    )


if __name__ == "__main__":
    main()
