"""The experiments of the project, in order, as ``l2o`` commands.

Each step is one ``l2o`` command line writing into its own sub-folder, so the report can quote
the exact command that produced every number, and anyone can rerun one step by hand. ``quick``
uses fewer instances, trials and iterations but the same commands and code paths.
"""

from __future__ import annotations

from collections.abc import Callable
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
    if any(c.isspace() for c in str(out)):
        raise L2OError(f"--out {str(out)!r} contains white space; choose a folder without")

    def args(line: str, *extra: str) -> tuple[str, ...]:
        """An ``l2o`` command line; ``{configs}`` and ``{out}`` are filled in."""
        return (*line.format(configs=cfg, out=out).split(), *extra)

    q = quick
    # Fewer test instances, trials and iterations in --quick; the same commands.
    tune_q = "--instances 20 --trials 8 --tune-instances 12" if q else ""
    tune_q_horizon = "--instances 20 --trials 8 --tune-instances 12" if q else "--trials 30"
    tune_d = (
        "--instances 12 --trials 6 --tune-instances 6" if q else ("--trials 40 --tune-instances 24")
    )
    tune_d_gen = (
        "--instances 8 --trials 4 --tune-instances 4" if q else ("--trials 20 --tune-instances 16")
    )
    conc = (
        "--set iterations=12 --set eval_instances=8 --set val_every=6 --set trials=4 "
        "--set tune_instances=6"
        if q
        else ""
    )

    # The quadratic trains in about two minutes, so even --quick trains it in full.
    steps = [
        Step(
            "train-quadratic",
            "Meta-training on the quadratic",
            args("train quadratic --config {configs}/quadratic.toml"),
            "train",
        )
    ]
    if q and "digits-mlp" in pretrained.names():
        # quick: the pretrained optimizer, trained by `l2o train digits-mlp --config
        # configs/digits-mlp.toml` (its card says so); training it takes ~8 minutes.
        digits, digits_uses = "digits-mlp", ()
        notes = (
            "With --quick the digits optimizer is the pretrained `digits-mlp`, trained by "
            "`l2o train digits-mlp --config configs/digits-mlp.toml` (see its card)."
        )
    else:
        steps.append(
            Step(
                "train-digits-mlp",
                "Meta-training on the digits MLP",
                args("train digits-mlp --config {configs}/digits-mlp.toml"),
                "train",
            )
        )
        digits, digits_uses, notes = str(out / "train-digits-mlp"), ("train-digits-mlp",), ""
    quad = str(out / "train-quadratic")
    steps += [
        Step(
            "compare-quadratic",
            "Quadratic: learned vs tuned baselines (100 steps)",
            args(f"compare quadratic --optimizer {quad} --steps 100 {tune_q}"),
            "compare",
            uses=("train-quadratic",),
        ),
        Step(
            "generalization-quadratic",
            "Generalisation on the quadratic: horizon 1×, 2×, 10×",
            args(
                f"compare quadratic --optimizer {quad} --steps 100 --generalization horizon "
                f"{tune_q_horizon}"
            ),
            "generalization",
            uses=("train-quadratic",),
        ),
        Step(
            "compare-digits-100",
            "Digits MLP: learned vs tuned baselines (100 steps)",
            args(f"compare digits-mlp --optimizer {digits} --steps 100 {tune_d}"),
            "compare",
            notes=notes,
            uses=digits_uses,
        ),
        Step(
            "compare-digits-200",
            "Digits MLP: learned vs tuned baselines (200 steps)",
            args(f"compare digits-mlp --optimizer {digits} --steps 200 {tune_d}"),
            "compare",
            notes=notes,
            uses=digits_uses,
        ),
        Step(
            "generalization",
            "Generalisation on the digits MLP: horizon, wider, deeper, ReLU",
            args(
                f"compare digits-mlp --optimizer {digits} --steps 100 --generalization all "
                f"{tune_d_gen}"
            ),
            "generalization",
            notes=notes,
            uses=digits_uses,
        ),
        Step(
            "concurrent-noise",
            "Concurrent: noisy least squares, softmax λ",
            args(f"concurrent noise --config {{configs}}/concurrent-noise.toml --seed 3 {conc}"),
            "concurrent",
        ),
        Step(
            "concurrent-rotation",
            "Concurrent: rotated digits, softmax λ",
            args(
                f"concurrent rotation --config {{configs}}/concurrent-rotation.toml --seed 3 {conc}"
            ),
            "concurrent",
        ),
        Step(
            "concurrent-poison-softmax",
            "Concurrent: poisoned labels, softmax λ",
            args(f"concurrent poison --config {{configs}}/concurrent-poison.toml --seed 3 {conc}"),
            "concurrent",
        ),
        Step(
            "concurrent-poison-attention",
            "Concurrent: poisoned labels, attention (clean slot shuffled per instance)",
            args(
                f"concurrent poison --config {{configs}}/concurrent-poison.toml "
                f"--combiner attention --seed 3 {conc}"
            ),
            "concurrent",
        ),
    ]
    if "general" in pretrained.names():  # the shipped general-purpose optimizer (issue 10)
        at = next(i for i, s in enumerate(steps) if s.kind == "concurrent")
        steps[at:at] = suite_steps(args, quick)
    return steps


def suite_steps(args: Callable[[str], tuple[str, ...]], quick: bool) -> list[Step]:
    """The generalisation suite for the pretrained ``general`` optimizer, untuned, per task."""
    tune = "--instances 8 --trials 4 --tune-instances 4" if quick else "--trials 20"
    # --quick: a few settings of the suite (make demo stays within minutes), the full run all
    settings = {
        "quadratic": "horizon-1x,horizon-10x" if quick else "suite",
        "digits-mlp": "sigmoid-100,relu-100,relu-1000" if quick else "suite",
    }
    return [
        Step(
            f"suite-{task}",
            f"Generalisation suite, {task}: the shipped `general` optimizer vs tuned baselines",
            args(
                f"compare {task} --optimizer general --steps 100 "
                f"--generalization {settings[task]} {tune}"
            ),
            "generalization",
        )
        for task in ("quadratic", "digits-mlp")
    ]
