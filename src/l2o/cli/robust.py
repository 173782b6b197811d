"""``l2o robust TASK``: every aggregator against its worst Byzantine attack (``robust.json``).

l2o robust digits-mlp --out runs/robust                      # K = 10, f = 1..4, all attacks
l2o robust quadratic --f 1,2 --attacks signflip,alie --out runs/rq
l2o robust digits-mlp --set held_out=["alie"] --set train.iterations=80 --out runs/r2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from l2o.cli.common import StageBars, add_common, add_key_values, say
from l2o.concurrent.attacks import attack_names
from l2o.concurrent.robust import load_robust_config, run_robust
from l2o.errors import L2OError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "robust", help="score aggregators (learned ones included) against their worst attack"
    )
    parser.add_argument("task", help="base task: digits-mlp or quadratic (noisy least squares)")
    parser.add_argument("--k", type=int, default=None, help="sources (default 10)")
    parser.add_argument("--f", default=None, help="Byzantine counts, e.g. 1,2,3,4 (the default)")
    parser.add_argument(
        "--attacks", default=None, help=f"comma-separated, default all: {','.join(attack_names())}"
    )
    parser.add_argument("--config", type=Path, help="TOML config file")
    add_key_values(
        parser,
        "--set",
        "overrides",
        'override a key: study (steps=30, held_out=["ipm"]) or meta-training (train.iterations=20)',
    )
    parser.add_argument("--force", action="store_true", help="overwrite a finished study in --out")
    add_common(parser)
    parser.set_defaults(run=run)


def _ints(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise L2OError(f"{flag} expects comma-separated integers, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    attacks = None if args.attacks is None else [a.strip() for a in args.attacks.split(",")]
    config = load_robust_config(
        args.config,
        args.overrides,
        args.task,
        k=args.k,
        f=_ints(args.f, "--f"),
        attacks=attacks,
        seed=args.seed,
    )
    out = args.out or Path("runs") / f"robust-{config.task}"
    if (out / "robust.json").exists() and not args.force:
        raise L2OError(f"{out} already holds a robust study; pass --force or choose another --out")
    bars = StageBars()
    try:
        results = run_robust(config, out, bars.update)
    finally:
        bars.close()
    fs = results["f"]
    say(f"worst-case clean loss over {', '.join(results['attacks'])} (K = {results['k']}):")
    say(f"{'aggregator':>18} " + " ".join(f"{'f=' + str(f):>10}" for f in fs) + "   ms/step")
    say(f"{'oracle':>18} " + " ".join(_num(results["oracle"][str(f)]) for f in fs))
    for name, agg in results["aggregators"].items():
        mark = "*" if agg["learned"] else ("†" if "advantage" in agg else " ")
        cells = " ".join(_num(agg["worst_case"][str(f)]) for f in fs)
        say(f"{name + mark:>18} {cells}   {agg['ms_per_step']:.2f}")
    held = results["held_out_attacks"]
    say(f"* learned; held out of its meta-training: {', '.join(held) or 'none'}")
    say("† sees a clean reference gradient the others do not")
    say(f"wrote {out}/robust.json, robust.png")
    return 0


def _num(x: float | None) -> str:
    return f"{'diverged':>10}" if x is None else f"{x:>10.4g}"
