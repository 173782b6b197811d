"""Average the weights of a run's last validated networks (a tail average, no retraining).

    .venv/bin/python scripts/average_validated.py runs/general runs/general/avg --last 5
    .venv/bin/python scripts/adjust_step_size.py runs/general/avg runs/general/avg-16 \\
        --min-log-step -16

`l2o train` saves every validated network in ``RUN/validated/ITERATION/``. For `general` the
validation loss swings by 10⁴–10⁶ between neighbouring validations, so the network a run keeps
is something of a lottery (docs/general-study.md). Averaging the weights of the last
``--last`` validated networks (uniformly; Polyak averaging of the meta-parameters) is a cheap
way to get a network that sits in the middle of where training ended instead of at one of its
swings. OUT is a run folder (``optimizer.safetensors``, ``config.json`` with the averaged
iterations recorded under ``post_training``, RUN's ``metrics.csv``) that ``l2o compare``,
``scripts/adjust_step_size.py`` and ``scripts/score_against_suite.py`` take like any run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import l2o
from l2o.errors import L2OError
from l2o.meta.checkpoint import validated_networks
from l2o.nets import build_net

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adjust_step_size import save_changed


def average(run: Path, out: Path, last: int) -> tuple[Path, list[int]]:
    """Write OUT: the uniform average of RUN's last ``last`` validated networks."""
    if last < 1:
        raise L2OError(f"--last must be >= 1, got {last}")
    found = validated_networks(run)[-last:]
    if not found:
        raise L2OError(f"{run}: no validated networks in it; pass an l2o train run folder")
    iterations = [i for i, _ in found]
    nets = [l2o.load(folder) for _, folder in found]
    spec = nets[0].arch_config()
    for i, net in zip(iterations, nets):
        if net.arch_config() != spec:
            raise L2OError(f"{run}: the network of iteration {i} has another architecture")
    states = [net.state_dict() for net in nets]
    mean = {
        k: torch.stack([s[k].double() for s in states]).mean(0).to(v.dtype)
        for k, v in states[0].items()
    }
    net = build_net(spec)
    net.load_state_dict(mean)
    post_training = {"script": "scripts/average_validated.py", "averaged": iterations}
    return save_changed(net, run, out, post_training), iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished l2o train folder")
    parser.add_argument("out", type=Path, help="the folder to write")
    parser.add_argument("--last", type=int, default=5, help="how many validated networks")
    args = parser.parse_args()
    try:
        path, iterations = average(args.run, args.out, args.last)
    except L2OError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"wrote {path}: the mean of iterations {', '.join(map(str, iterations))}")


if __name__ == "__main__":
    main()
