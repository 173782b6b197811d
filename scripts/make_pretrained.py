"""Install a finished ``l2o train`` run as a pretrained optimizer shipped inside the package.

    l2o train quadratic --config configs/quadratic.toml --out runs/pretrained-quadratic
    l2o compare quadratic --optimizer runs/pretrained-quadratic \\
        --out runs/pretrained-quadratic/compare
    .venv/bin/python scripts/make_pretrained.py quadratic runs/pretrained-quadratic \\
        --train-command "l2o train quadratic --config configs/quadratic.toml --out ..." \\
        --compare-command "l2o compare quadratic --optimizer ... --out ..."

Copies ``optimizer.safetensors`` and its ``config.json`` to ``src/l2o/pretrained/NAME.*`` and
writes ``NAME.card.json``: the task, the horizon it was trained for, the commands, a summary of
``metrics.csv`` and the ``l2o compare`` results (``results.json`` of the compare folder), and
the one-line ``summary`` that ``l2o list`` prints.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

from l2o.records import read_metrics

ROOT = Path(__file__).resolve().parent.parent
PRETRAINED = ROOT / "src" / "l2o" / "pretrained"


def training_summary(run: Path) -> dict[str, Any]:
    """The metrics.csv of a run, summarised: iterations, time, best validation, its curve."""
    rows = read_metrics(run)
    val = [(r["iteration"], r["val_loss"]) for r in rows if math.isfinite(r["val_loss"])]
    best = min(val, key=lambda iv: iv[1]) if val else (None, None)
    last = rows[-1]
    return {
        "iterations": int(last["iteration"]),
        "wall_time_s": round(float(last["wall_time"]), 1),
        "skipped": int(last["skipped"]),
        "meta_loss_first": float(rows[0]["meta_loss"]),
        "meta_loss_last10_mean": sum(float(r["meta_loss"]) for r in rows[-10:]) / len(rows[-10:]),
        "best_iteration": best[0],
        "best_val_loss": best[1],
        "val_curve": [[i, float(f"{v:.3g}")] for i, v in val],  # 3 significant figures: 1e-12 stays
    }


def training_record(run: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The card's ``training``: :func:`training_summary`, and which network was kept when
    ``scripts/select_validated.py`` chose it (not the validation best, ``best_iteration``)."""
    record = training_summary(run)
    if "selection" in config:
        record["kept_iteration"] = config["selection"]["iteration"]
        record["selection"] = config["selection"]
    return record


def compare_summary(folder: Path) -> dict[str, Any]:
    """Final-loss statistics of every optimizer in an ``l2o compare`` results.json."""
    results = json.loads((folder / "results.json").read_text())
    learned = results.get("learned", "l2o")
    optimizers = {
        name: {
            k: stats.get(k)
            for k in ("final_loss_mean", "final_loss_median", "hyperparameters", "ms_per_step")
        }
        for name, stats in results["optimizers"].items()
    }

    def beaten(stat: str) -> list[str]:
        mine = optimizers[learned][stat]
        return sorted(
            name
            for name, stats in optimizers.items()
            if name != learned
            and mine is not None
            and (stats[stat] is None or mine < stats[stat])  # None: that baseline diverged
        )

    return {
        "task": results["task"],
        "task_options": results.get("task_options", {}),
        "steps": results["steps"],
        "instances": results["instances"],
        "learned": learned,
        "l2o_final_loss_mean": optimizers[learned]["final_loss_mean"],
        "l2o_final_loss_median": optimizers[learned]["final_loss_median"],
        "beats_on_mean": beaten("final_loss_mean"),
        "beats_on_median": beaten("final_loss_median"),
        "comparison": results.get("comparison", {}),
        "optimizers": optimizers,
    }


def suite_summary(folder: Path) -> list[dict[str, Any]]:
    """One row per setting of an ``l2o compare --generalization`` folder, with tuned Adam's too."""
    rows = []
    for entry in json.loads((folder / "generalization.json").read_text()):
        results = folder / "generalization" / entry["setting"] / "results.json"
        adam = None
        if results.is_file():
            stats = json.loads(results.read_text())["optimizers"].get("adam", {})
            adam = stats.get("final_loss_median")
        learned = entry["learned_median"]
        rows.append(
            {
                "setting": entry["setting"],
                "steps": entry["steps"],
                "learned_median": learned,
                "diverged": entry.get("learned_diverged", 0),
                "best_baseline": entry["best_baseline"],
                "best_baseline_median": entry["best_baseline_median"],
                "ratio_to_best": entry["ratio"],
                "adam_median": adam,
                "ratio_to_adam": learned / adam if adam and learned is not None else None,
            }
        )
    return rows


def scores_summary(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``scripts/score_against_suite.py --json`` file (one candidate), shaped like
    :func:`suite_summary`'s: the learned optimizer scored on a finished suite's test instances
    against that suite's tuned baselines."""
    (rows,) = json.loads(path.read_text()).values()
    return [
        {
            "setting": row["setting"],
            "steps": row["steps"],
            "learned_median": row["median"],
            "diverged": row["diverged"],
            "best_baseline": row["best"],
            "best_baseline_median": row["best_median"],
            "ratio_to_best": row["vs_best"],
            "adam_median": row["adam_median"],
            "ratio_to_adam": row["vs_adam"],
            "baselines_from": row["suite"],
        }
        for row in rows
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("run", type=Path)
    parser.add_argument("--compare", type=Path, help="l2o compare folder (default RUN/compare)")
    parser.add_argument("--train-command", required=True)
    parser.add_argument("--compare-command", default="")
    parser.add_argument(
        "--also-compare",
        nargs=2,
        action="append",
        default=[],
        metavar=("DIR", "COMMAND"),
        help="another l2o compare folder (e.g. at other steps) and its command, recorded too",
    )
    parser.add_argument(
        "--suite",
        nargs=2,
        action="append",
        default=[],
        metavar=("DIR", "COMMAND"),
        help="an l2o compare --generalization folder and its command: a table in the card",
    )
    parser.add_argument(
        "--scores",
        nargs=2,
        action="append",
        default=[],
        metavar=("JSON", "COMMAND"),
        help="a scripts/score_against_suite.py --json file (one candidate) and its command",
    )
    parser.add_argument("--summary", default="", help="the line `l2o list` prints (optional)")
    parser.add_argument("--note", default="", help="anything a user of it should know")
    args = parser.parse_args()
    run: Path = args.run
    config = json.loads((run / "config.json").read_text())
    train_config = config.get("train_config", config)
    shutil.copyfile(run / "optimizer.safetensors", PRETRAINED / f"{args.name}.safetensors")
    shutil.copyfile(run / "config.json", PRETRAINED / f"{args.name}.json")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    card: dict[str, Any] = {
        "name": args.name,
        "task": train_config["task"],
        "task_options": train_config.get("task_options", {}),
        "horizon": train_config["horizon"],
        "command": args.train_command,
        "repo_commit_when_installed": commit,
        "train_config": train_config,
        "training": training_record(run, config),
    }
    compare_dir = args.compare or run / "compare"
    if (compare_dir / "results.json").is_file():
        result = compare_summary(compare_dir)
        card["compare"] = {"command": args.compare_command, **result}
        both = [n for n in result["beats_on_mean"] if n in result["beats_on_median"]]
        total = len(result["optimizers"]) - 1
        beats = f"all {total} tuned baselines" if len(both) == total else ", ".join(both) or "none"
        card["summary"] = (
            f"{card['task']}, trained for T={card['horizon']}: beats {beats} "
            f"(mean and median loss, {result['steps']} steps, {result['instances']} test instances)"
        )
    else:
        card["summary"] = f"{card['task']}, trained for T={card['horizon']} (no comparison run)"
    if args.also_compare:
        card["other_comparisons"] = [
            {"command": command, **compare_summary(Path(folder))}
            for folder, command in args.also_compare
        ]
    if args.suite:
        card["generalization"] = [
            {"command": command, "settings": suite_summary(Path(folder))}
            for folder, command in args.suite
        ]
    if args.scores:
        card.setdefault("generalization", []).extend(
            {"command": command, "settings": scores_summary(Path(path))}
            for path, command in args.scores
        )
    if args.summary:
        card["summary"] = args.summary
    if args.note:
        card["note"] = args.note
    path = PRETRAINED / f"{args.name}.card.json"
    path.write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {path} and {args.name}.safetensors, {args.name}.json beside it")
    print(card["summary"])


if __name__ == "__main__":
    main()
