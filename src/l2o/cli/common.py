"""What every command shares: --out/--seed, progress bars, the error convention."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the house error format: one ``error:`` line on stderr, exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def out_folder(text: str) -> Path:
    """``--out``: a non-empty path (argparse would turn ``''`` into the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a folder, got an empty path")
    return Path(text)


def add_common(parser: argparse.ArgumentParser, default_out: str | None = None) -> None:
    parser.add_argument(
        "--out",
        type=out_folder,
        default=Path(default_out) if default_out else None,
        help="output folder (created if missing)"
        + (f"; default {default_out}" if default_out else ""),
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed")


def add_force(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace the results another l2o command left in --out (they are deleted)",
    )


def add_device(parser: argparse.ArgumentParser, default: str | None = "cpu") -> None:
    parser.add_argument(
        "--device",
        default=default,
        help="where tensors live: cpu, cuda, cuda:N or auto (a GPU when there is one); "
        + (f"default {default}" if default else "default: the config's device key (cpu)"),
    )


def add_key_values(parser: argparse.ArgumentParser, flag: str, dest: str, help: str) -> None:
    """A repeatable ``FLAG KEY=VALUE`` option gathered in a list (``--set``, ``--task-option``)."""
    parser.add_argument(
        flag, dest=dest, action="append", default=[], metavar="KEY=VALUE", help=help
    )


class StageBars:
    """One progress bar per stage of a multi-stage run (a new stage closes the previous bar)."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None
        self.stage: str | None = None

    def update(self, stage: str, done: int, total: int, loss: float | None = None) -> None:
        if stage != self.stage:
            self.close()
            self.bar, self.stage = progress(total, stage), stage
        self.bar.n = done
        if loss is not None and math.isfinite(loss):
            self.bar.set_postfix({"meta_loss": f"{loss:.4g}"}, refresh=False)
        self.bar.update(0)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.stage = None, None


def progress(total: int, desc: str, **kwargs: Any) -> tqdm:
    """A progress bar on stderr, off when stderr is not a terminal (or ``disable=True``)."""
    disable = kwargs.pop("disable", False) or not sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=desc,
        disable=disable,
        dynamic_ncols=True,
        leave=False,
        **kwargs,
    )


def say(message: str) -> None:
    print(message, flush=True)


def quiet_optuna() -> None:
    """Optuna logs a line per trial at INFO (the progress bar says the same, once) and a trial
    stopped by a second Ctrl-C as a WARNING with a traceback (the CLI says it in one line)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
