"""Give a trained ``rnnprop`` + ``adapt_step`` network the hypergradient rule for its step size.

    .venv/bin/python scripts/add_hypergradient_step.py runs/general runs/general/final \\
        --weight 2 --max-log-step 1.5

The network's log step size s then also moves by ``weight``·cos(−g_t, u_{t−1}) per tensor
inside its bounded change (``hypergradient_step``, docs/general-study.md): it falls whenever
the last step overshot, so the step keeps shrinking as a run converges. Nothing is retrained:
the trained weights are copied, the rule's weight is set, and ``max_log_step`` (the cap on s)
may be raised, since the rule now brakes a step that grows too long. Writes OUT as a run
folder (``optimizer.safetensors``, ``config.json`` with the change recorded under
``post_training``, and RUN's ``metrics.csv``), which ``l2o compare``, ``l2o evaluate`` and
``scripts/make_pretrained.py`` take like any run.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

import l2o
from l2o.errors import L2OError
from l2o.nets import build_net
from l2o.serialization import save_optimizer


def add_rule(run: Path, out: Path, weight: float, max_log_step: float | None) -> Path:
    trained = l2o.load(run)
    spec = dict(trained.arch_config())
    if spec.get("optimizer") != "rnnprop" or not spec.get("adapt_step"):
        raise L2OError(f"{run}: needs an rnnprop network with adapt_step = true, got {spec}")
    if spec.get("hypergradient_step"):
        raise L2OError(f"{run}: already has hypergradient_step")
    change = {"hypergradient_step": True, "hypergradient_weight": weight}
    spec["hypergradient_step"] = True
    if max_log_step is not None:
        change["max_log_step"] = {"from": spec["max_log_step"], "to": max_log_step}
        spec["max_log_step"] = max_log_step
    net = build_net(spec)
    missing = net.load_state_dict(trained.state_dict(), strict=False).missing_keys
    if missing != ["hypergradient_weight"]:
        raise L2OError(f"{run}: unexpected weights missing after the change: {missing}")
    with torch.no_grad():
        net.hypergradient_weight.fill_(weight)
    info = json.loads((run / "config.json").read_text())
    info.pop("architecture", None)
    info["post_training"] = {"script": "scripts/add_hypergradient_step.py", **change}
    out.mkdir(parents=True, exist_ok=True)
    path = save_optimizer(net, out, info)
    if (run / "metrics.csv").is_file():
        shutil.copyfile(run / "metrics.csv", out / "metrics.csv")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished l2o train folder")
    parser.add_argument("out", type=Path, help="the folder to write")
    parser.add_argument("--weight", type=float, default=2.0, help="the rule's weight (default 2)")
    parser.add_argument("--max-log-step", type=float, default=None, help="a new cap on s")
    args = parser.parse_args()
    try:
        path = add_rule(args.run, args.out, args.weight, args.max_log_step)
    except L2OError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"wrote {path}: {l2o.load(args.out)}")


if __name__ == "__main__":
    main()
