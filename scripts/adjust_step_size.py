"""Change how a trained ``rnnprop`` + ``adapt_step`` network moves its step size, no retraining.

    # general: trained with the rule; only the floor of s is lowered
    .venv/bin/python scripts/adjust_step_size.py runs/general runs/general/final --min-log-step -16
    # a network trained without the rule: add it with weight 2 and raise the cap on s
    .venv/bin/python scripts/adjust_step_size.py RUN OUT --hypergradient-weight 2 --max-log-step 1.5
    # a cap raised by up to 1 while the gradient is near its peak, back to 1 as it falls
    .venv/bin/python scripts/adjust_step_size.py RUN OUT --max-log-step-boost 1
    # s rises ever less as the gradient falls, not at all once it is eight decades below its peak
    .venv/bin/python scripts/adjust_step_size.py RUN OUT --step-rise-decades 8

The network keeps a per-tensor log step size s (docs/general-study.md). Six things about its
steps can change after training:

- ``--hypergradient-weight W`` adds the hypergradient rule (``hypergradient_step``): s also
  moves by W·cos(−g_t, u_{t−1}), so it falls whenever the last step overshot. A network trained
  with the rule keeps its learned weight: this option is then an error.
- ``--max-log-step`` moves the cap on s: the rule brakes a step that grows too long, so a
  network given the rule after training can take a higher cap.
- ``--max-log-step-boost B`` makes the cap ``max_log_step + B·(1 + log10 ρ / 4)``, the share
  clipped to [0, 1] (``max_log_step_boost``; ρ = RMS(m̂) ÷ its running peak per tensor): a raised
  cap while the gradient is within four decades of its peak, the plain one after, where a fixed
  higher cap makes a converged loss spike.
- ``--step-rise-decades D`` multiplies each rise of s by 1 + log10 ρ / D, clipped to [0, 1]
  (``step_rise_decades``): a converged run has tiny gradients, yet every full step still goes
  downhill, so s would keep rising until one step throws the loss back up.
- ``--damping-eps E`` multiplies each update by √v̂ / (√v̂ + E) (``damping_eps``, Adam's ε):
  a loss at float32's floor has tiny gradients but scale-free inputs, and takes full steps.
- ``--min-log-step`` moves the floor: with the rule s keeps falling as a run converges, and the
  default floor −10 holds the loss of a long run up (the quadratic stops near 1e-12 instead of
  going on to 3e-13).

The trained weights are copied. OUT is a run folder (``optimizer.safetensors``, ``config.json``
with the changes recorded under ``post_training``, and RUN's ``metrics.csv``), which
``l2o compare``, ``l2o evaluate`` and ``scripts/make_pretrained.py`` take like any run.
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


def adjust(
    run: Path,
    out: Path,
    hypergradient_weight: float | None = None,
    max_log_step: float | None = None,
    min_log_step: float | None = None,
    max_log_step_boost: float | None = None,
    damping_eps: float | None = None,
    step_rise_decades: float | None = None,
) -> Path:
    """Write OUT: RUN's network with the rule added and/or its step-size settings changed."""
    trained = l2o.load(run)
    spec = dict(trained.arch_config())
    if spec.get("optimizer") != "rnnprop" or not spec.get("adapt_step"):
        raise L2OError(f"{run}: needs an rnnprop network with adapt_step = true, got {spec}")
    settings = {
        "max_log_step": max_log_step,
        "min_log_step": min_log_step,
        "max_log_step_boost": max_log_step_boost,
        "damping_eps": damping_eps,
        "step_rise_decades": step_rise_decades,
    }
    if hypergradient_weight is None and all(v is None for v in settings.values()):
        raise L2OError(
            "nothing to change: give --hypergradient-weight, --max-log-step, --min-log-step, "
            "--max-log-step-boost, --step-rise-decades or --damping-eps"
        )
    change: dict = {}
    if hypergradient_weight is not None:
        if spec.get("hypergradient_step"):
            weight = float(trained.state_dict()["hypergradient_weight"])
            raise L2OError(
                f"{run}: already has hypergradient_step (its weight, learned: {weight:.3g}); "
                "drop --hypergradient-weight to change only the bounds on s"
            )
        change.update(hypergradient_step=True, hypergradient_weight=hypergradient_weight)
        spec["hypergradient_step"] = True
    for key, value in settings.items():
        if value is not None:
            change[key] = {"from": spec[key], "to": value}
            spec[key] = value
    net = build_net(spec)
    missing = net.load_state_dict(trained.state_dict(), strict=False).missing_keys
    if missing != (["hypergradient_weight"] if hypergradient_weight is not None else []):
        raise L2OError(f"{run}: unexpected weights missing after the change: {missing}")
    if hypergradient_weight is not None:
        with torch.no_grad():
            net.hypergradient_weight.fill_(hypergradient_weight)
    return save_changed(net, run, out, {"script": "scripts/adjust_step_size.py", **change})


def save_changed(net: torch.nn.Module, run: Path, out: Path, post_training: dict) -> Path:
    """Write OUT as a run folder: ``net``, RUN's config with ``post_training`` recorded, RUN's
    ``metrics.csv``. A RUN changed after training already keeps its record under ``previous``,
    so a chain of changes stays readable."""
    info = json.loads((run / "config.json").read_text())
    info.pop("architecture", None)
    if "post_training" in info:
        post_training = {**post_training, "previous": info["post_training"]}
    info["post_training"] = post_training
    out.mkdir(parents=True, exist_ok=True)
    path = save_optimizer(net, out, info)
    if (run / "metrics.csv").is_file():
        shutil.copyfile(run / "metrics.csv", out / "metrics.csv")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished l2o train folder")
    parser.add_argument("out", type=Path, help="the folder to write")
    parser.add_argument(
        "--hypergradient-weight", type=float, default=None, help="add the rule, with this weight"
    )
    parser.add_argument("--max-log-step", type=float, default=None, help="a new cap on s")
    parser.add_argument("--min-log-step", type=float, default=None, help="a new floor of s")
    parser.add_argument(
        "--max-log-step-boost",
        type=float,
        default=None,
        help="let the cap on s rise by up to this while the gradient is near its peak",
    )
    parser.add_argument(
        "--damping-eps", type=float, default=None, help="Adam's ε on each update (e.g. 1e-8)"
    )
    parser.add_argument(
        "--step-rise-decades",
        type=float,
        default=None,
        help="s rises less as the gradient falls, not at all this many decades below its peak",
    )
    args = parser.parse_args()
    try:
        path = adjust(
            args.run,
            args.out,
            args.hypergradient_weight,
            args.max_log_step,
            args.min_log_step,
            args.max_log_step_boost,
            args.damping_eps,
            args.step_rise_decades,
        )
    except L2OError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"wrote {path}: {l2o.load(args.out)}")


if __name__ == "__main__":
    main()
