"""Running the steps: each into its own folder, finished ones reused, interrupted ones redone."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from l2o.errors import L2OError
from l2o.records import read_json, write_json
from l2o.reproduce.plan import Step

DONE_FILE = "step.json"  # written last: its presence means the step finished


def step_dir(out: Path, step: Step) -> Path:
    return out / step.name


def command_line(step: Step, out: Path) -> list[str]:
    return [*step.args, "--out", str(step_dir(out, step))]


def finished(out: Path, step: Step) -> dict | None:
    """The record of a finished step with the same command, else None."""
    path = step_dir(out, step) / DONE_FILE
    if not path.is_file():
        return None
    try:
        record = read_json(path, "a step record")
    except L2OError:  # a damaged record: the step did not finish cleanly, so it runs again
        return None
    return (
        record
        if isinstance(record, dict) and record.get("command") == command_line(step, out)
        else None
    )


def run_steps(
    steps: list[Step],
    out: Path,
    force: bool = False,
    on_step: Callable[[Step, str], None] | None = None,
    execute: Callable[[list[str]], int] | None = None,
) -> dict[str, dict]:
    """Run every step not already finished; return each step's record (command, wall time).

    A step whose folder exists without a finished record (an interrupted run) is started over;
    ``force`` reruns everything. ``execute(argv)`` runs one ``l2o`` command line and returns
    its exit status (the CLI passes its own dispatcher: the library never imports the CLI).
    """
    if execute is None:
        raise L2OError("run_steps needs execute(argv), the function that runs an l2o command")

    records: dict[str, dict] = {}
    for step in steps:
        record = None if force else finished(out, step)
        if record is not None:
            records[step.name] = {**record, "reused": True}
            if on_step:
                on_step(step, "reused")
            continue
        folder = step_dir(out, step)
        if folder.exists():
            shutil.rmtree(folder)
        if on_step:
            on_step(step, "running")
        argv = command_line(step, out)
        start = time.perf_counter()
        try:
            status = execute(argv)
        except L2OError as exc:
            raise L2OError(f"step {step.name} (l2o {' '.join(argv)}): {exc}") from None
        if status:
            raise L2OError(f"step {step.name} failed (exit {status}): l2o {' '.join(argv)}")
        record = {"command": argv, "wall_seconds": time.perf_counter() - start}
        write_json(folder / DONE_FILE, record)
        records[step.name] = {**record, "reused": False}
        if on_step:
            on_step(step, "done")
    return records
