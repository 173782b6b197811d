"""Score candidate learned optimizers on finished comparisons, without retuning.

`l2o compare --generalization suite` tunes every baseline per setting (tens of minutes). To
compare candidates (seeds, ablations) this reruns only the learned optimizers, on the *same* test
instances of each setting, and divides their median final loss by the suite's tuned Adam and
best tuned baseline, read from each setting's ``results.json``.

    python scripts/score_against_suite.py --suite runs/general/suite-quadratic \
        --suite runs/general/suite-digits-mlp runs/cand-a runs/cand-b [--json out.json]

Without the suite's folders (a fresh clone), ``--card general`` takes the tuned baselines from a
shipped network's card instead, and rebuilds each setting's test instances from the suite's
definition (``l2o.compare.generalization.SETTINGS``): the same instances, so the shipped network
scores its card's numbers: exactly on the CPU that made the card; on other CPUs the quadratic's
matrix products round differently and the rollout amplifies it (0.0058 against 0.0053 at 100 steps
on an AVX-512 machine).

    python scripts/score_against_suite.py --card general runs/cand-a --instances 50
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

import l2o
from l2o.compare.generalization import SETTINGS
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


def _row(setting: str, median: float, finals: torch.Tensor, reference: dict) -> dict:
    """One line of the table: ``reference`` holds the baselines' medians and where they came
    from (``best``, ``best_median``, ``adam_median``, ``steps``, ``suite``)."""
    return {
        "setting": setting,
        "median": median,
        "vs_adam": median / reference["adam_median"],
        "vs_best": median / reference["best_median"],
        **reference,
        "diverged": int((~torch.isfinite(finals)).sum()),
        "instances": len(finals),
    }


def _finals(net: torch.nn.Module, task: str, options: dict, steps: int, n: int) -> torch.Tensor:
    """The learned optimizer's final losses on the first ``n`` test instances of a setting."""
    evaluation = evaluate(
        get_task(task, options), [LearnedRunner(net)], steps=steps, instances=n, timing_steps=1
    )
    return torch.from_numpy(evaluation.curves["l2o"][-1])


def score_against_card(
    candidate: str, card_name: str, instances: int, only: list[str] | None = None
) -> list[dict]:
    """Like :func:`score`, with the baselines of a pretrained network's card (its suite need not
    be on this machine)."""
    card = l2o.pretrained.card(card_name)
    if not card:
        known = ", ".join(l2o.pretrained.names())
        raise L2OError(f"no shipped network {card_name!r} with a card; known: {known}")
    net = l2o.load(candidate)
    out = []
    for group in card.get("generalization", []):
        for entry in group.get("settings", []):
            task, name = entry["setting"].split("/", 1)
            if only and entry["setting"] not in only:
                continue
            if name not in SETTINGS or "adam_median" not in entry:
                raise L2OError(
                    f"card {card_name!r}: setting {entry['setting']!r} is not one of the "
                    "suite's or holds no tuned Adam median; score against its suite with --suite"
                )
            finals = _finals(
                net, task, dict(SETTINGS[name].task_options), int(entry["steps"]), instances
            )
            out.append(_row(entry["setting"], float(finals.nanmedian()), finals, {
                "best": entry["best_baseline"],
                "best_median": entry["best_baseline_median"],
                "adam_median": entry["adam_median"],
                "steps": int(entry["steps"]),
                # where the card's baselines were tuned (the suite folder of its own scoring)
                "suite": entry.get("baselines_from", f"card:{card_name}"),
            }))  # fmt: skip
    if not out:
        raise L2OError(
            f"card {card_name!r} holds no generalisation setting to score against"
            + (f" among {', '.join(only)}" if only else "")
        )
    return out


def score(candidate: str, suites: list[Path], instances: int) -> list[dict]:
    net = l2o.load(candidate)
    out = []
    for suite in suites:
        for name, folder in settings_of(suite):
            results = read_json_object(
                folder / "results.json", "an l2o compare results.json",
                ("task", "task_options", "steps", "instances", "learned", "optimizers"),
            )  # fmt: skip
            n = min(instances, int(results["instances"]))
            steps = int(results["steps"])
            finals = _finals(net, results["task"], results["task_options"], steps, n)
            baselines = {k: v for k, v in results["optimizers"].items() if k != results["learned"]}
            best = min(baselines.items(), key=lambda kv: kv[1]["final_loss_median"])
            out.append(_row(f"{results['task']}/{name}", float(finals.nanmedian()), finals, {
                "best": best[0],
                "best_median": best[1]["final_loss_median"],
                "adam_median": baselines["adam"]["final_loss_median"],
                "steps": steps,
                "suite": str(suite),
            }))  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", nargs="+")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--suite", action="append", type=Path,
        help="a `l2o compare --generalization` folder, or one `l2o compare` folder (repeatable)",
    )  # fmt: skip
    where.add_argument(
        "--card", help="a shipped network (e.g. general) whose card holds the tuned baselines"
    )
    parser.add_argument(
        "--only", action="append", help="with --card: only this setting, e.g. quadratic/horizon-1x"
    )
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.only and not args.card:
        parser.error("--only needs --card (a suite folder scores every setting it holds)")
    torch.set_num_threads(1)
    try:
        table = {
            c: score_against_card(c, args.card, args.instances, args.only)
            if args.card
            else score(c, args.suite, args.instances)
            for c in args.candidates
        }
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
