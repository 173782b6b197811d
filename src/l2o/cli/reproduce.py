"""``l2o reproduce [--quick] --out DIR``: every experiment, end to end, with ``REPORT.md``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from l2o.cli.common import add_common, say
from l2o.errors import L2OError
from l2o.reproduce import Step, plan, run_steps
from l2o.reproduce.report import write_report
from l2o.runfolder import open_run


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
    parser.set_defaults(run=run, on_interrupt="rerun the same command (finished steps are reused)")


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    steps = plan(out, args.quick)
    selected = steps
    if args.only is not None:
        wanted = [name.strip() for name in args.only.split(",")]
        known = [s.name for s in steps]
        unknown = [name for name in wanted if name not in known]
        if unknown or not all(wanted):
            raise L2OError(
                f"--only: unknown step(s) {', '.join(repr(n) for n in unknown)}; "
                f"known: {', '.join(known)}"
            )
        selected = [s for s in steps if s.name in wanted]
    with open_run(out, "reproduce", force=args.force) as folder:
        _run(args, out, steps, selected)
        folder.finish()
    return 0


def run_command(argv: list[str]) -> int:
    """Run one ``l2o`` command line in this process (the steps of the plan)."""
    from l2o.cli.main import build_parser

    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


def _run(args: argparse.Namespace, out: Path, steps: list[Step], selected: list[Step]) -> None:
    start = time.perf_counter()

    def on_step(step, status: str) -> None:
        say(f"[{time.perf_counter() - start:6.0f} s] {step.name}: {status}")

    records = run_steps(selected, out, force=args.force, on_step=on_step, execute=run_command)
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
