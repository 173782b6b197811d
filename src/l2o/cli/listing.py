"""``l2o list``: tasks, learned optimizers, baselines and pretrained optimizers, one line each."""

from __future__ import annotations

import argparse

from l2o import pretrained
from l2o.baselines import BASELINES
from l2o.cli.common import say
from l2o.nets import describe_nets
from l2o.tasks import list_tasks


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("list", help="list tasks, optimizers, baselines, pretrained")
    parser.set_defaults(run=run)


def sections() -> dict[str, dict[str, str]]:
    """Section title → {name: one-line description}. Other modules may add sections."""
    result = {
        "tasks": list_tasks(),
        "learned optimizers": describe_nets(),
        "baselines": {name: b.description for name, b in BASELINES.items()},
        "pretrained": {},
    }
    for name in pretrained.names():
        card = pretrained.card(name)
        result["pretrained"][name] = card.get("summary", "")
    try:
        from l2o.concurrent import initializers

        result["initializers"] = initializers.describe_all()
    except ImportError:
        pass
    return result


def run(args: argparse.Namespace) -> int:
    for title, entries in sections().items():
        say(f"{title}:")
        if not entries:
            say("  (none)")
        width = max((len(n) for n in entries), default=0)
        for name, text in entries.items():
            say(f"  {name.ljust(width)}  {text}".rstrip())
    return 0
