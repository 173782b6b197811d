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
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except L2OError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted (a training run resumes with --resume)\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
