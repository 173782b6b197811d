"""``l2o``: learned optimizers from the command line.

l2o list                              # tasks, baselines, pretrained optimizers
l2o train quadratic --out runs/quad   # meta-train the paper's LSTM optimizer
l2o evaluate runs/quad quadratic      # run it (or adam:lr=0.1) on test instances
"""

from __future__ import annotations

import importlib
import logging
import sys

from l2o.cli.common import ArgumentParser
from l2o.errors import L2OError
from l2o.interrupts import Interrupted, handle_signals

# Each module has register(subparsers), which adds its parser with set_defaults(run=...).
COMMAND_MODULES = [
    "l2o.cli.listing",
    "l2o.cli.train",
    "l2o.cli.evaluate",
    "l2o.cli.compare",
    "l2o.cli.concurrent",
    "l2o.cli.robust",
    "l2o.cli.reproduce",
]


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="l2o", description="Learned optimizers in PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a command not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    hint = "rerun the same command"
    try:
        with handle_signals():  # from the start: a signal while the commands load is one line too
            args = build_parser().parse_args(argv)
            hint = getattr(args, "on_interrupt", hint)
            return int(args.run(args) or 0)
    except L2OError as exc:
        return _error(str(exc), 2)
    except Interrupted as exc:
        return _error(f"{exc}; {hint}", 143 if exc.signal_name == "SIGTERM" else 130)
    except KeyboardInterrupt as exc:
        stopped = "SIGTERM" if str(exc) == "SIGTERM" else "Ctrl-C"
        return _error(f"interrupted ({stopped}); {hint}", 143 if stopped == "SIGTERM" else 130)
    except MemoryError:
        return _error("out of memory: choose smaller sizes (batch_size, instances, dims)", 2)
    except OSError as exc:  # the disk, not the input: full, read-only, gone
        where = f" ({exc.filename})" if exc.filename else ""
        return _error(f"{exc.strerror or exc}{where}", 1)


def _error(message: str, status: int) -> int:
    """The one ``error:`` line (a message spanning lines is joined into one)."""
    sys.stderr.write("error: " + " ".join(message.split()) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
