"""How far one seed's `l2o concurrent` combiner/oracle ratio is from another's, C loops on and off.

The concurrent table compares a combiner with the oracle from one meta-training run each (seed
3). Both are LSTMs meta-trained for 100 (quadratic) or 40 (digits) iterations, and a run is
chaotic: the eager and C paths of the LSTM (``L2O_NATIVE=0``) agree to float tolerance, yet
their meta-losses part from the third iteration on and end at other networks. This runs the
combiner and the oracle alone (each is meta-trained from its own seed, so their numbers equal a
full run's: no other references, no baselines) for several seeds on both paths, and prints the
final clean test loss of each and their ratio:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/concurrent_seed_spread.py noise \
        --config configs/concurrent-noise.toml --seeds 0 1 2 3 4 5 6
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/concurrent_seed_spread.py poison \
        --config configs/concurrent-poison.toml --combiner attention --seeds 0 1 2 3 4

``--paths c`` runs the C loops alone (half the time), to compare settings rather than paths.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import time

import torch

from l2o.concurrent.experiment import load_concurrent_config, run_experiment
from l2o.nets import native


def one_run(args: argparse.Namespace, seed: int, eager: bool) -> dict[str, float | int | str]:
    overrides = ['references=["oracle"]', "baselines=[]", *args.set]
    config = load_concurrent_config(
        args.config, overrides, args.initializer, combiner=args.combiner, seed=seed
    )
    started = time.perf_counter()
    with native.disabled() if eager else contextlib.nullcontext():
        results = run_experiment(config)
    losses = {name: r["final_loss_mean"] for name, r in results["optimizers"].items()}
    combiner = losses[config.combiner]
    return {
        "seed": seed,
        "path": "eager" if eager else "C loops",
        "combiner": combiner,
        "oracle": losses["oracle"],
        "ratio": combiner / losses["oracle"],
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("initializer")
    parser.add_argument("--config", default=None)
    parser.add_argument("--combiner", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", action="append", default=[], help="key=value override")
    parser.add_argument(
        "--paths", choices=("both", "c", "eager"), default="both", help="which LSTM paths to run"
    )
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    eagers = {"both": (False, True), "c": (False,), "eager": (True,)}[args.paths]
    if not eagers[0] and not native.available():
        parser.error("the C loops did not build here: nothing to compare with the eager path")
    rows = []
    print("seed  path      combiner  oracle    ratio")
    for seed in args.seeds:
        for eager in eagers:
            row = one_run(args, seed, eager)
            rows.append(row)
            print(
                f"{seed:<5} {row['path']:<9} {row['combiner']:<9.4g} {row['oracle']:<9.4g} "
                f"{row['ratio']:.2f}",
                flush=True,
            )
    for path in ("C loops", "eager"):
        ratios = [r["ratio"] for r in rows if r["path"] == path]
        if not ratios:
            continue
        geo = math.exp(statistics.fmean(map(math.log, ratios)))
        print(
            f"{path}: combiner/oracle median {statistics.median(ratios):.2f}, geometric mean "
            f"{geo:.2f}, range {min(ratios):.2f}–{max(ratios):.2f} over {len(ratios)} seeds"
        )
    if args.json is not None:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
