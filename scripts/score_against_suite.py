"""Score candidate learned optimizers on finished comparisons, without retuning.

`l2o compare --generalization suite` tunes every baseline per setting (tens of minutes). To
compare candidates (seeds, ablations) this reruns only the learned optimizers, on the *same* test
instances of each setting, and divides their median final loss by the suite's tuned Adam and
best tuned baseline, read from each setting's ``results.json``.

    python scripts/score_against_suite.py --suite runs/general/suite-quadratic \
        --suite runs/general/suite-digits-mlp runs/cand-a runs/cand-b [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

import l2o
from l2o.errors import L2OError
from l2o.evaluate import LearnedRunner, evaluate
from l2o.records import read_json, read_json_object
from l2o.tasks import get_task


def settings_of(suite: Path) -> list[tuple[str, Path]]:
    """(name, folder with results.json) of a generalisation suite, or of one comparison."""
    if not (suite / "generalization.json").is_file():
        return [(suite.name, suite)]
    rows = read_json(suite / "generalization.json", "a generalisation table")
    return [(row["setting"], suite / "generalization" / row["setting"]) for row in rows]


def score(candidate: str, suites: list[Path], instances: int) -> list[dict]:
    net = l2o.load(candidate)
    out = []
    for suite in suites:
        for name, folder in settings_of(suite):
            results = read_json_object(
                folder / "results.json", "an l2o compare results.json",
                ("task", "task_options", "steps", "instances", "learned", "optimizers"),
            )  # fmt: skip
            family = get_task(results["task"], results["task_options"])
            n = min(instances, int(results["instances"]))
            evaluation = evaluate(
                family, [LearnedRunner(net)], steps=int(results["steps"]), instances=n,
                timing_steps=1,
            )  # fmt: skip
            finals = torch.from_numpy(evaluation.curves["l2o"][-1])
            diverged = int((~torch.isfinite(finals)).sum())
            median = float(finals.nanmedian())
            baselines = {k: v for k, v in results["optimizers"].items() if k != results["learned"]}
            best = min(baselines.items(), key=lambda kv: kv[1]["final_loss_median"])
            adam = baselines["adam"]["final_loss_median"]
            out.append({
                "setting": f"{results['task']}/{name}",
                "median": median,
                "vs_adam": median / adam,
                "vs_best": median / best[1]["final_loss_median"],
                "best": best[0],
                "best_median": best[1]["final_loss_median"],
                "adam_median": adam,
                "steps": int(results["steps"]),
                "suite": str(suite),
                "diverged": diverged,
                "instances": n,
            })  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", nargs="+")
    parser.add_argument(
        "--suite", action="append", type=Path, required=True,
        help="a `l2o compare --generalization` folder, or one `l2o compare` folder (repeatable)",
    )  # fmt: skip
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        table = {c: score(c, args.suite, args.instances) for c in args.candidates}
    except L2OError as exc:
        raise SystemExit(f"error: {exc}") from None
    for candidate, rows in table.items():
        print(f"## {candidate}")
        print("| setting | median | / tuned Adam | / best tuned | diverged |")
        print("|---|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['setting']} | {r['median']:.3g} | {r['vs_adam']:.3g} | "
                  f"{r['vs_best']:.3g} ({r['best']}) | {r['diverged']} |")  # fmt: skip
        worst = max((r["vs_adam"] for r in rows), default=math.nan)
        print(f"worst / tuned Adam: {worst:.3g}\n")
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
