"""The experiments of the project, in order, as ``l2o`` commands.

Each step is one ``l2o`` command line writing into its own sub-folder, so the report can quote
the exact command that produced every number, and anyone can rerun one step by hand. ``quick``
uses fewer instances, trials and iterations but the same commands and code paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from l2o import pretrained
from l2o.errors import L2OError


@dataclass(frozen=True)
class Step:
    """One experiment: ``l2o ARGS --out OUT/NAME``."""

    name: str
    title: str
    args: tuple[str, ...]
    kind: str  # train, compare, generalization, concurrent: how the report shows it
    notes: str = ""
    uses: tuple[str, ...] = field(default_factory=tuple)  # steps whose output it reads


def configs_dir() -> Path:
    """The repository's ``configs/`` (reproduce runs from a source checkout), relative to the
    working directory when it lies below it, so the report's commands can be pasted."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "configs" / "quadratic.toml").is_file():
            found = parent / "configs"
            try:
                return found.relative_to(Path.cwd().resolve())
            except ValueError:
                return found
    raise L2OError("configs/ not found: run `l2o reproduce` from a source checkout of l2o")


def plan(out: Path, quick: bool) -> list[Step]:
    """The steps of a full (or quick) reproduction writing under ``out``."""
    cfg = configs_dir()

    def sub(name: str) -> str:
        return str(out / name)

    q = quick
    # The quadratic trains in about two minutes, so even --quick trains it in full.
    compare_small = ("--instances", "20", "--trials", "8", "--tune-instances", "12") if q else ()
    compare_digits = (
        ("--instances", "12", "--trials", "6", "--tune-instances", "6")
        if q
        else ("--trials", "40", "--tune-instances", "24")
    )
    conc = (
        ("--set", "iterations=12", "--set", "eval_instances=8", "--set", "val_every=6") if q else ()
    )

    steps = [
        Step(
            "train-quadratic",
            "Meta-training on the quadratic",
            ("train", "quadratic", "--config", str(cfg / "quadratic.toml")),
            "train",
        ),
    ]
    if q and "digits-mlp" in pretrained.names():
        # quick: the pretrained one, trained by `l2o train digits-mlp --config
        # configs/digits-mlp.toml` (its card says so); training it takes ~8 minutes.
        digits_optimizer = "digits-mlp"
        digits_uses: tuple[str, ...] = ()
    else:
        steps.append(
            Step(
                "train-digits-mlp",
                "Meta-training on the digits MLP",
                (
                    "train",
                    "digits-mlp",
                    "--config",
                    str(cfg / "digits-mlp.toml"),
                    *(("--set", "iterations=4", "--set", "batch_size=2") if q else ()),
                ),
                "train",
            )
        )
        digits_optimizer = sub("train-digits-mlp")
        digits_uses = ("train-digits-mlp",)
    steps += [
        Step(
            "compare-quadratic",
            "Quadratic: learned vs tuned baselines (100 steps)",
            (
                "compare",
                "quadratic",
                "--optimizer",
                sub("train-quadratic"),
                "--steps",
                "100",
                "--generalization",
                "horizon",
                *compare_small,
            ),
            "compare",
            uses=("train-quadratic",),
        ),
        Step(
            "compare-digits-100",
            "Digits MLP: learned vs tuned baselines (100 steps)",
            (
                "compare",
                "digits-mlp",
                "--optimizer",
                digits_optimizer,
                "--steps",
                "100",
                *compare_digits,
            ),
            "compare",
            uses=digits_uses,
        ),
        Step(
            "compare-digits-200",
            "Digits MLP: learned vs tuned baselines (200 steps)",
            (
                "compare",
                "digits-mlp",
                "--optimizer",
                digits_optimizer,
                "--steps",
                "200",
                *compare_digits,
            ),
            "compare",
            uses=digits_uses,
        ),
        Step(
            "generalization",
            "Generalisation: horizon, wider, deeper, ReLU (digits MLP)",
            (
                "compare",
                "digits-mlp",
                "--optimizer",
                digits_optimizer,
                "--steps",
                "100",
                "--generalization",
                "all",
                *compare_digits,
            ),
            "generalization",
            uses=digits_uses,
        ),
        Step(
            "concurrent-noise",
            "Concurrent: noisy least squares, softmax λ",
            (
                "concurrent",
                "noise",
                "--config",
                str(cfg / "concurrent-noise.toml"),
                "--seed",
                "3",
                *conc,
            ),
            "concurrent",
        ),
        Step(
            "concurrent-rotation",
            "Concurrent: rotated digits, softmax λ",
            (
                "concurrent",
                "rotation",
                "--config",
                str(cfg / "concurrent-rotation.toml"),
                "--seed",
                "3",
                *conc,
            ),
            "concurrent",
        ),
        Step(
            "concurrent-poison-softmax",
            "Concurrent: poisoned labels, softmax λ",
            (
                "concurrent",
                "poison",
                "--config",
                str(cfg / "concurrent-poison.toml"),
                "--seed",
                "3",
                *conc,
            ),
            "concurrent",
        ),
        Step(
            "concurrent-poison-attention",
            "Concurrent: poisoned labels, attention",
            (
                "concurrent",
                "poison",
                "--config",
                str(cfg / "concurrent-poison.toml"),
                "--combiner",
                "attention",
                "--seed",
                "3",
                *conc,
            ),
            "concurrent",
        ),
    ]
    return steps
