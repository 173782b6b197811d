"""``l2o reproduce [--quick] --out DIR``: every experiment, end to end, with ``REPORT.md``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from l2o.cli.common import add_common, say
from l2o.reproduce import plan, run_steps
from l2o.reproduce.report import write_report


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "reproduce",
        help="run every experiment (training, comparisons, generalisation, concurrent) "
        "and write REPORT.md",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer instances, trials and iterations; the same code paths",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="rerun steps that already finished (they are reused by default)",
    )
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated step names to run (the report shows all finished)",
    )
    add_common(parser, default_out="runs/reproduce")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    steps = plan(out, args.quick)
    selected = steps
    if args.only:
        wanted = set(args.only.split(","))
        selected = [s for s in steps if s.name in wanted]
    start = time.perf_counter()

    def on_step(step, status: str) -> None:
        say(f"[{time.perf_counter() - start:6.0f} s] {step.name}: {status}")

    records = run_steps(selected, out, force=args.force, on_step=on_step)
    from l2o.reproduce.runner import finished

    for step in steps:  # steps finished earlier still belong in the report
        if step.name not in records and (record := finished(out, step)) is not None:
            records[step.name] = {**record, "reused": True}
    invocation = (
        "l2o " + " ".join(sys.argv[1:])
        if sys.argv[1:2] == ["reproduce"]
        else f"l2o reproduce{' --quick' if args.quick else ''} --out {out}"
    )
    report = write_report(out, steps, records, args.quick, time.perf_counter() - start, invocation)
    say(f"wrote {report}")
    return 0
