"""Copy the readable part of an ``l2o reproduce`` folder (report, figures, JSON records,
training metrics) into ``docs/`` for the README; the bulky records (curves.csv, tuning.db,
checkpoints, weights) stay in the run folder.

    .venv/bin/python scripts/publish_report.py runs/full docs/reproduce    # or: make reproduce
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

KEEP = {".md", ".png", ".json"}
KEEP_NAMES = {"metrics.csv", "lambdas.csv"}


def publish(run: Path, dest: Path) -> int:
    if not (run / "REPORT.md").is_file():
        raise SystemExit(f"error: {run} has no REPORT.md; run `l2o reproduce --out {run}` first")
    if dest.exists():
        shutil.rmtree(dest)
    copied = 0
    for path in sorted(run.rglob("*")):
        if not path.is_file() or "checkpoint" in path.parts:
            continue
        if path.suffix in KEEP or path.name in KEEP_NAMES:
            target = dest / path.relative_to(run)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            copied += 1
    return copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("dest", type=Path)
    args = parser.parse_args()
    print(f"copied {publish(args.run, args.dest)} files to {args.dest}")


if __name__ == "__main__":
    main()
