"""Hostile input, CLI and API: every case is refused with exit status 2 (or L2OError), exactly one
``error:`` line, no traceback, and a finished run folder left byte-identical.

CLI cases run in-process through ``l2o.cli.main.main`` (fast); the signal cases of
``test_interrupts.py`` use real processes.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import l2o
from l2o.cli.main import main
from l2o.errors import L2OError

TINY = [
    *("--set", "iterations=2", "--set", "batch_size=2", "--set", "horizon=4"),
    *("--set", "truncation=2", "--set", "val_instances=2", "--set", "checkpoint_every=1"),
]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _crafted(path: Path, metadata: dict[str, str], tensors=None) -> str:
    save_file(tensors or {"w": torch.zeros(2)}, str(path), metadata=metadata)
    return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, str]:
    """A finished training run (``fin``) and a gallery of damaged and hostile files."""
    root = tmp_path_factory.mktemp("hostile")
    fin = root / "fin"
    assert main(["train", "quadratic", *TINY, "--out", str(fin)]) == 0
    w: dict[str, str] = {"fin": str(fin), "root": str(root)}

    def file(name: str, data: bytes | str) -> str:
        path = root / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(path)

    w["file"] = file("plain.txt", "not a folder")
    w["baddb"] = file("bad.db", "not a database")
    w["notutf8"] = file("notutf8.toml", b"\xff\xfe\x00bad")
    w["broken"] = file("broken.toml", "horizon = ")
    w["unknownkey"] = file("unknown.toml", "bogus = 1\n")
    w["wrongtype"] = file("wrongtype.toml", 'batch_size = "8"\n')
    w["missing"] = str(root / "missing.toml")
    w["corrupt"] = file("corrupt.safetensors", os.urandom(64))
    w["empty"] = file("empty.safetensors", b"")
    w["foreign"] = _crafted(root / "foreign.safetensors", {"format": "pt"})
    w["nometa"] = _crafted(root / "nometa.safetensors", {"format": "l2o.optimizer/1"})
    w["badjson"] = _crafted(
        root / "badjson.safetensors", {"format": "l2o.optimizer/1", "config": "{not json"}
    )
    w["notobject"] = _crafted(
        root / "notobject.safetensors", {"format": "l2o.optimizer/1", "config": "[1, 2]"}
    )
    arch = json.loads((fin / "config.json").read_text())["architecture"]
    for name, change in {
        "badarch": {"hidden_size": -1},
        "hugearch": {"hidden_size": 10**9},
        "kindarch": {"optimizer": "bogus"},
        "strarch": {"hidden_size": "20"},
    }.items():
        meta = {"architecture": {**arch, **change}}
        w[name] = _crafted(
            root / f"{name}.safetensors",
            {"format": "l2o.optimizer/1", "config": json.dumps(meta)},
        )
    net = l2o.load(fin)
    nan_state = {k: torch.full_like(v, float("nan")) for k, v in net.state_dict().items()}
    meta = {"format": "l2o.optimizer/1", "config": json.dumps({"architecture": arch})}
    w["nan"] = _crafted(root / "nan.safetensors", meta, nan_state)
    # A concurrent optimizer's folder (K gradients per coordinate): not a single-task OPTIMIZER.
    from l2o.concurrent.combiners import build_combiner

    conc = root / "concurrent"
    l2o.save_optimizer(build_combiner("softmax", 3, seed=0), conc)
    w["concurrent"] = str(conc)
    (root / "nothing").mkdir()
    w["noweights"] = str(root / "nothing")
    # Damaged records for --replot
    for name, results, curves in [
        ("rp-notjson", "{", "optimizer,instance,step,loss\n"),
        ("rp-list", '{"optimizers": []}', "optimizer,instance,step,loss\n"),
        ("rp-badline", '{"optimizers": {}}', "optimizer,instance,step,loss\nadam,0,x,1.0\n"),
        ("rp-header", '{"optimizers": {}}', "a,b\n1,2\n"),
        ("rp-huge", '{"optimizers": {}}', "optimizer,instance,step,loss\nadam,0,99999999999,1\n"),
        ("rp-binary", '{"optimizers": {}}', b"\xff\xfe\x00\x00"),
    ]:
        folder = root / name
        folder.mkdir()
        (folder / "results.json").write_text(results)
        data = curves.encode() if isinstance(curves, str) else curves
        (folder / "curves.csv").write_bytes(data)
        w[name] = str(folder)
    return w


CLI_CASES: list[tuple[str, list[str], str]] = [
    # --- train: config values ---
    ("iterations-float", ["train", "quadratic", "--set", "iterations=2.5"], "integer"),
    ("batch-string", ["train", "quadratic", "--set", 'batch_size="8"'], "integer"),
    ("meta-lr-inf", ["train", "quadratic", "--set", "meta_lr=inf"], "finite"),
    ("meta-lr-1e38", ["train", "quadratic", "--set", "meta_lr=1e38"], "meta_lr must be <="),
    ("meta-lr-nan", ["train", "quadratic", "--set", "meta_lr=nan"], "finite"),
    ("meta-lr-zero", ["train", "quadratic", "--set", "meta_lr=0"], "meta_lr"),
    ("output-scale-inf", ["train", "quadratic", "--set", "output_scale=inf"], "output_scale"),
    ("preprocess-p-inf", ["train", "quadratic", "--set", "preprocess_p=inf"], "preprocess_p"),
    ("noise-std-inf", ["train", "quadratic", "--set", "task_options.noise_std=inf"], "noise_std"),
    ("grad-clip-nan", ["train", "quadratic", "--set", "grad_clip=nan"], "grad_clip"),
    ("threads-huge", ["train", "quadratic", "--set", "threads=100000"], "threads"),
    ("threads-zero", ["train", "quadratic", "--set", "threads=0"], "threads"),
    ("hidden-zero", ["train", "quadratic", "--set", "hidden_size=0"], "hidden_size"),
    ("hidden-huge", ["train", "quadratic", "--set", "hidden_size=1000000000"], "memory"),
    ("batch-huge", ["train", "quadratic", "--set", "batch_size=10000000"], "memory"),
    ("layers-bool", ["train", "quadratic", "--set", "layers=true"], "layers"),
    ("truncation-gt-horizon", ["train", "quadratic", "--set", "truncation=500"], "truncation"),
    ("second-order-int", ["train", "quadratic", "--set", "second_order=1"], "true or false"),
    ("loss-weights-bogus", ["train", "quadratic", "--set", "loss_weights=bogus"], "loss_weights"),
    ("iterations-negative", ["train", "quadratic", "--set", "iterations=-1"], "iterations"),
    ("val-every-zero", ["train", "quadratic", "--set", "val_every=0"], "val_every"),
    ("unknown-key", ["train", "quadratic", "--set", "bogus=1"], "unknown config key"),
    ("set-no-equals", ["train", "quadratic", "--set", "horizon"], "key=value"),
    ("set-no-key", ["train", "quadratic", "--set", "=3"], "key=value"),
    ("set-task-conflict", ["train", "quadratic", "--set", "task=digits-mlp"], "contradicts"),
    ("set-task-empty", ["train", "quadratic", "--set", "task="], "contradicts"),
    ("task-options-scalar", ["train", "quadratic", "--set", "task_options=3"], "task_options"),
    ("dim-zero", ["train", "quadratic", "--set", "task_options.dim=0"], "dim"),
    ("dim-float", ["train", "quadratic", "--set", "task_options.dim=2.5"], "dim"),
    ("dim-huge", ["train", "quadratic", "--set", "task_options.dim=100000000"], "dim"),
    ("task-option-unknown", ["train", "quadratic", "--set", "task_options.bogus=1"], "bogus"),
    ("digits-hidden-bad", ["train", "digits-mlp", "--set", "task_options.hidden=[0]"], "hidden"),
    ("unknown-task", ["train", "nosuchtask"], "unknown task"),
    ("seed-huge", ["train", "quadratic", "--seed", str(10**30)], "seed"),
    ("seed-negative", ["train", "quadratic", "--seed", "-1"], "seed"),
    ("seed-text", ["train", "quadratic", "--seed", "x"], "invalid int"),
    ("workers-zero", ["train", "quadratic", "--workers", "0"], "--workers"),
    ("workers-negative", ["train", "quadratic", "--workers", "-3"], "--workers"),
    ("workers-huge", ["train", "quadratic", "--workers", "100000"], "--workers"),
    ("workers-indivisible", ["train", "quadratic", *TINY, "--workers", "3"], "multiple"),
    # --- train: config files ---
    ("config-not-utf8", ["train", "quadratic", "--config", "{notutf8}"], "notutf8.toml"),
    ("config-broken", ["train", "quadratic", "--config", "{broken}"], "not valid TOML"),
    ("config-unknown-key", ["train", "quadratic", "--config", "{unknownkey}"], "unknown"),
    ("config-wrong-type", ["train", "quadratic", "--config", "{wrongtype}"], "integer"),
    ("config-missing", ["train", "quadratic", "--config", "{missing}"], "does not exist"),
    ("config-is-folder", ["train", "quadratic", "--config", "{root}"], "does not exist"),
    # --- train: run folders ---
    ("out-empty", ["train", "quadratic", "--out", ""], "empty path"),
    ("out-blank", ["train", "quadratic", "--out", "  "], "empty path"),
    ("out-is-file", ["train", "quadratic", *TINY, "--out", "{file}"], "is a file"),
    ("out-under-file", ["train", "quadratic", *TINY, "--out", "{file}/sub"], "--out"),
    ("out-finished", ["train", "quadratic", *TINY, "--out", "{fin}"], "--resume"),
    ("resume-nothing", ["train", "quadratic", *TINY, "--resume", "--out", "{tmp}/new"], "resume"),
    (
        "resume-other-hidden",
        ["train", "quadratic", *TINY, "--set", "hidden_size=7", "--resume", "--out", "{fin}"],
        "hidden_size 20 → 7",
    ),
    (
        "resume-other-horizon",
        ["train", "quadratic", *TINY, "--set", "horizon=6", "--resume", "--out", "{fin}"],
        "another config (horizon 4 → 6)",
    ),
    # --- other commands into a finished training run ---
    ("concurrent-into-train", ["concurrent", "noise", "--out", "{fin}"], "--force"),
    ("evaluate-into-train", ["evaluate", "adam", "quadratic", "--out", "{fin}"], "--force"),
    (
        "compare-into-train",
        ["compare", "quadratic", "--optimizer", "sgd", "--baselines", "adam", "--out", "{fin}"],
        "--force",
    ),
    (
        "reproduce-into-train",
        ["reproduce", "--only", "train-quadratic", "--out", "{fin}"],
        "--force",
    ),
    # --- evaluate: OPTIMIZER strings ---
    ("opt-concurrent-folder", ["evaluate", "{concurrent}", "quadratic"], "concurrent"),
    ("opt-no-weights", ["evaluate", "{noweights}", "quadratic"], "optimizer.safetensors"),
    ("opt-foreign", ["evaluate", "{foreign}", "quadratic"], "not an l2o optimizer"),
    ("opt-corrupt", ["evaluate", "{corrupt}", "quadratic"], "not a readable"),
    ("opt-empty-file", ["evaluate", "{empty}", "quadratic"], "safetensors"),
    ("opt-no-config", ["evaluate", "{nometa}", "quadratic"], "architecture"),
    ("opt-bad-json", ["evaluate", "{badjson}", "quadratic"], "architecture"),
    ("opt-json-list", ["evaluate", "{notobject}", "quadratic"], "architecture"),
    ("opt-bad-arch", ["evaluate", "{badarch}", "quadratic"], "hidden_size"),
    ("opt-huge-arch", ["evaluate", "{hugearch}", "quadratic"], "damaged"),
    ("opt-unknown-kind", ["evaluate", "{kindarch}", "quadratic"], "unknown learned optimizer"),
    ("opt-string-arch", ["evaluate", "{strarch}", "quadratic"], "hidden_size"),
    ("opt-nan-weights", ["evaluate", "{nan}", "quadratic"], "non-finite"),
    ("opt-missing-file", ["evaluate", "{root}/none.safetensors", "quadratic"], "does not exist"),
    ("opt-unknown", ["evaluate", "nosuchopt", "quadratic"], "unknown optimizer"),
    ("opt-empty", ["evaluate", "", "quadratic"], "OPTIMIZER"),
    ("baseline-lr-bool", ["evaluate", "adam:lr=true", "quadratic"], "number"),
    ("baseline-lr-inf", ["evaluate", "adam:lr=inf", "quadratic"], "finite"),
    ("baseline-lr-negative", ["evaluate", "adam:lr=-1", "quadratic"], "adam"),
    ("baseline-betas-short", ["evaluate", "adam:betas=[0.9]", "quadratic"], "betas"),
    ("baseline-betas-range", ["evaluate", "adam:betas=[0.9,2]", "quadratic"], "beta"),
    ("baseline-unknown-hp", ["evaluate", "adam:bogus=1", "quadratic"], "unknown hyperparameter"),
    ("baseline-no-value", ["evaluate", "adam:lr", "quadratic"], "key=value"),
    ("baseline-text-value", ["evaluate", "sgd:lr=fast", "quadratic"], "number"),
    # --- evaluate: sizes and options ---
    ("steps-zero", ["evaluate", "adam", "quadratic", "--steps", "0"], "--steps"),
    ("steps-float", ["evaluate", "adam", "quadratic", "--steps", "2.5"], "invalid int"),
    ("steps-huge", ["evaluate", "adam", "quadratic", "--steps", str(10**12)], "--steps"),
    ("instances-huge", ["evaluate", "adam", "digits-mlp", "--instances", "9000000"], "memory"),
    (
        "compare-instances-huge",
        ["compare", "digits-mlp", "--optimizer", "sgd", "--instances", "9000000"],
        "memory",
    ),
    ("instances-negative", ["evaluate", "adam", "quadratic", "--instances", "-1"], "--instances"),
    ("eval-threads-zero", ["evaluate", "adam", "quadratic", "--threads", "0"], "--threads"),
    ("eval-threads-huge", ["evaluate", "adam", "quadratic", "--threads", "100000"], "--threads"),
    ("eval-seed-huge", ["evaluate", "adam", "quadratic", "--seed", str(10**20)], "--seed"),
    ("eval-dim-zero", ["evaluate", "adam", "quadratic", "--task-option", "dim=0"], "dim"),
    ("eval-option-unknown", ["evaluate", "adam", "quadratic", "--task-option", "x=1"], "x"),
    ("eval-option-no-equals", ["evaluate", "adam", "quadratic", "--task-option", "dim"], "="),
    ("eval-task-unknown", ["evaluate", "adam", "nosuchtask"], "unknown task"),
    ("eval-out-file", ["evaluate", "adam", "quadratic", "--out", "{file}"], "is a file"),
    ("eval-out-empty", ["evaluate", "adam", "quadratic", "--out", ""], "empty path"),
    ("eval-same-name", ["evaluate", "adam", "adam", "quadratic", "--out", "{tmp}/e"], "named"),
    # --- compare ---
    ("baselines-empty", ["compare", "quadratic", "--optimizer", "sgd", "--baselines", ""], "base"),
    (
        "baselines-gap",
        ["compare", "quadratic", "--optimizer", "sgd", "--baselines", "adam,,rmsprop"],
        "base",
    ),
    (
        "baselines-unknown",
        ["compare", "quadratic", "--optimizer", "sgd", "--baselines", "x"],
        "unknown baseline",
    ),
    (
        "baselines-clash",
        ["compare", "quadratic", "--optimizer", "sgd", "--baselines", "sgd"],
        "like a baseline",
    ),
    ("compare-no-optimizer", ["compare", "quadratic"], "--optimizer is required"),
    (
        "compare-trials-zero",
        ["compare", "quadratic", "--optimizer", "sgd", "--trials", "0"],
        "--trials",
    ),
    (
        "compare-tune-zero",
        ["compare", "quadratic", "--optimizer", "sgd", "--tune-instances", "0"],
        "--tune-instances",
    ),
    (
        "compare-objective",
        ["compare", "quadratic", "--optimizer", "sgd", "--objective", "max"],
        "invalid choice",
    ),
    (
        "compare-generalization",
        ["compare", "quadratic", "--optimizer", "sgd", "--generalization", "bogus"],
        "bogus",
    ),
    (
        "compare-concurrent-folder",
        ["compare", "quadratic", "--optimizer", "{concurrent}"],
        "concurrent",
    ),
    ("compare-nan-weights", ["compare", "quadratic", "--optimizer", "{nan}"], "non-finite"),
    (
        "compare-bad-storage",
        [
            "compare",
            "quadratic",
            "--optimizer",
            "sgd",
            "--baselines",
            "adam",
            "--trials",
            "1",
            "--steps",
            "2",
            "--instances",
            "2",
            "--tune-instances",
            "2",
            "--storage",
            "bogus://x",
            "--out",
            "{tmp}/c",
        ],
        "storage",
    ),
    (
        "compare-garbage-db",
        [
            "compare",
            "quadratic",
            "--optimizer",
            "sgd",
            "--baselines",
            "adam",
            "--storage",
            "sqlite:///{baddb}",
            "--trials",
            "1",
            "--steps",
            "2",
            "--instances",
            "2",
            "--tune-instances",
            "2",
        ],
        "file is not a database",
    ),
    (
        "compare-unreachable-db",
        [
            "compare",
            "quadratic",
            "--optimizer",
            "sgd",
            "--baselines",
            "adam",
            "--storage",
            "sqlite:////nonexistent/dir/x.db",
            "--trials",
            "1",
            "--steps",
            "2",
            "--instances",
            "2",
            "--tune-instances",
            "2",
        ],
        "unable to open database file",
    ),
    (
        "replot-missing",
        ["compare", "quadratic", "--replot", "--out", "{tmp}/none"],
        "does not exist",
    ),
    (
        "replot-not-json",
        ["compare", "quadratic", "--replot", "--out", "{rp-notjson}"],
        "results.json",
    ),
    ("replot-list", ["compare", "quadratic", "--replot", "--out", "{rp-list}"], "results"),
    (
        "replot-bad-line",
        ["compare", "quadratic", "--replot", "--out", "{rp-badline}"],
        "curves.csv:2",
    ),
    (
        "replot-bad-header",
        ["compare", "quadratic", "--replot", "--out", "{rp-header}"],
        "curves.csv:1",
    ),
    ("replot-huge-index", ["compare", "quadratic", "--replot", "--out", "{rp-huge}"], "range"),
    ("replot-binary", ["compare", "quadratic", "--replot", "--out", "{rp-binary}"], "curves.csv"),
    # --- concurrent ---
    ("conc-unknown-initializer", ["concurrent", "bogus"], "bogus"),
    ("conc-unknown-combiner", ["concurrent", "noise", "--combiner", "bogus"], "combiner"),
    ("conc-references-unknown", ["concurrent", "noise", "--set", "references=bogus"], "bogus"),
    ("conc-references-number", ["concurrent", "noise", "--set", "references=3"], "references"),
    ("conc-clean-slot-negative", ["concurrent", "noise", "--set", "clean_slot=-2"], "clean_slot"),
    ("conc-clean-slot-too-big", ["concurrent", "noise", "--set", "clean_slot=99"], "clean_slot"),
    ("conc-logit-inf", ["concurrent", "noise", "--set", "logit_scale=inf"], "logit_scale"),
    ("conc-levels-inf", ["concurrent", "noise", "--set", "options.levels=[0.1,inf]"], "levels"),
    ("conc-levels-empty", ["concurrent", "noise", "--set", "options.levels=[]"], "levels"),
    ("conc-option-unknown", ["concurrent", "noise", "--set", "options.bogus=1"], "bogus"),
    (
        "conc-task-conflict",
        ["concurrent", "noise", "--task", "quadratic", "--set", "task=digits-mlp"],
        "contradicts",
    ),
    (
        "conc-eval-instances-float",
        ["concurrent", "noise", "--set", "eval_instances=2.5"],
        "integer",
    ),
    ("conc-adam-lrs-gone", ["concurrent", "noise", "--set", "adam_lrs=[0]"], "adam_lrs is gone"),
    ("conc-adam-a-reference", ["concurrent", "noise", "--set", "references=adam"], "baselines"),
    ("conc-baselines-unknown", ["concurrent", "noise", "--set", "baselines=bogus"], "bogus"),
    ("conc-trials-zero", ["concurrent", "noise", "--set", "trials=0"], "trials"),
    ("conc-meta-lr-inf", ["concurrent", "noise", "--set", "meta_lr=inf"], "finite"),
    ("conc-config-not-utf8", ["concurrent", "noise", "--config", "{notutf8}"], "notutf8.toml"),
    ("conc-slot-mode", ["concurrent", "noise", "--set", "slot_mode=bogus"], "slot_mode"),
    ("conc-oracle-shards", ["concurrent", "shards", "--combiner", "oracle"], "oracle"),
    # --- reproduce and the top level ---
    ("reproduce-only-typo", ["reproduce", "--only", "typo", "--out", "{tmp}/r"], "unknown step"),
    ("reproduce-only-empty", ["reproduce", "--only", "", "--out", "{tmp}/r"], "unknown step"),
    ("reproduce-only-commas", ["reproduce", "--only", ",", "--out", "{tmp}/r"], "unknown step"),
    (
        "reproduce-out-file",
        ["reproduce", "--only", "train-quadratic", "--out", "{file}"],
        "is a file",
    ),
    ("no-command", [], "required"),
    ("unknown-command", ["bogus"], "invalid choice"),
    ("unknown-flag", ["train", "quadratic", "--bogus"], "unrecognized"),
]


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    captured = capsys.readouterr()
    return status, captured.err


def assert_refused(status: int, err: str, expected: str) -> None:
    assert status == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines[0]
    assert expected in lines[0], lines[0]


@pytest.mark.parametrize(
    ("argv", "expected"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES]
)
def test_cli_refuses(world, tmp_path, capsys, argv, expected):
    before = snapshot(Path(world["fin"]))
    subs = {**world, "tmp": str(tmp_path)}
    argv = [a.format(**subs) if "{" in a else a for a in argv]
    if argv[:1] in (["train"], ["evaluate"], ["concurrent"], ["compare"]) and "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    status, err = run_cli(argv, capsys)
    assert_refused(status, err, expected)
    assert snapshot(Path(world["fin"])) == before


def test_cli_refuses_a_locked_folder(world, capsys):
    """A second process on the same --out is told who holds it (here: another open file)."""
    fin = world["fin"]
    before = snapshot(Path(fin))
    fd = os.open(fin, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        status, err = run_cli(["train", "quadratic", *TINY, "--resume", "--out", fin], capsys)
    finally:
        os.close(fd)
    assert_refused(status, err, "in use by another l2o process")
    assert snapshot(Path(fin)) == before


def test_cli_refuses_a_read_only_folder(world, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    status, err = run_cli(["train", "quadratic", *TINY, "--out", str(folder)], capsys)
    folder.chmod(0o700)
    assert_refused(status, err, "permission denied")


def test_cli_refuses_a_symlink_loop(world, tmp_path, capsys):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    status, err = run_cli(["train", "quadratic", *TINY, "--out", str(loop / "x")], capsys)
    assert_refused(status, err, "--out")


# --- the Python API: every bad value is an L2OError with a one-line message ---


def _net():
    return l2o.load(l2o.pretrained.names()[0]) if l2o.pretrained.names() else l2o.LSTMOptimizer()


def _api_cases(w: dict[str, str]):
    from l2o.baselines import parse_baseline
    from l2o.concurrent.experiment import load_concurrent_config
    from l2o.config import load_config
    from l2o.evaluate import evaluate, resolve_optimizer
    from l2o.tasks import get_task

    model = torch.nn.Linear(2, 1)
    tiny = {"iterations": 3, "batch_size": 2, "horizon": 4, "truncation": 2, "val_instances": 2}
    return {
        "config-batch-string": lambda: l2o.TrainConfig(batch_size="8"),
        "config-iterations-float": lambda: l2o.TrainConfig(iterations=2.5),
        "config-meta-lr-inf": lambda: l2o.TrainConfig(meta_lr=float("inf")),
        "config-meta-lr-1e38": lambda: l2o.TrainConfig(meta_lr=1e38),
        "config-threads-huge": lambda: l2o.TrainConfig(threads=10**6),
        "config-seed-negative": lambda: l2o.TrainConfig(seed=-1),
        "config-second-order-int": lambda: l2o.TrainConfig(second_order=1),
        "config-task-options-int": lambda: l2o.TrainConfig(task_options=3),
        "config-output-scale-inf": lambda: l2o.TrainConfig(output_scale=float("inf")),
        "config-unknown-key": lambda: l2o.TrainConfig(bogus=1),
        "config-toml-not-utf8": lambda: load_config(w["notutf8"]),
        "optimizer-lr-inf": lambda: l2o.LearnedOptimizer(model.parameters(), _net(), lr=math_inf),
        "optimizer-lr-nan": lambda: l2o.LearnedOptimizer(model.parameters(), _net(), lr=math_nan),
        "optimizer-lr-bool": lambda: l2o.LearnedOptimizer(model.parameters(), _net(), lr=True),
        "optimizer-lr-negative": lambda: l2o.LearnedOptimizer(model.parameters(), _net(), lr=-1),
        "optimizer-not-a-net": lambda: l2o.LearnedOptimizer(model.parameters(), model),
        "load-nan": lambda: l2o.load(w["nan"]),
        "load-foreign": lambda: l2o.load(w["foreign"]),
        "load-huge-arch": lambda: l2o.load(w["hugearch"]),
        "load-missing": lambda: l2o.load(w["missing"]),
        "load-no-weights": lambda: l2o.load(w["noweights"]),
        "resolve-concurrent": lambda: resolve_optimizer(w["concurrent"]),
        "resolve-unknown": lambda: resolve_optimizer("nosuchopt"),
        "save-nan": lambda: l2o.save_optimizer(_nan_net(), Path(w["root"]) / "never"),
        "meta-train-all-skipped": lambda: l2o.meta_train(
            l2o.TrainConfig(**tiny, output_scale=1e30)
        ),
        "baseline-lr-bool": lambda: parse_baseline("adam:lr=true"),
        "baseline-betas": lambda: parse_baseline("adam:betas=[0.9]"),
        "task-dim-float": lambda: get_task("quadratic", {"dim": 2.5}),
        "task-noise-inf": lambda: get_task("quadratic", {"noise_std": float("inf")}),
        "concurrent-references": lambda: load_concurrent_config(None, ["references=x"], "noise"),
        "concurrent-clean-slot": lambda: load_concurrent_config(None, ["clean_slot=-5"], "noise"),
        "evaluate-steps-zero": lambda: evaluate(get_task("quadratic"), [], steps=0),
    }


math_inf, math_nan = float("inf"), float("nan")


def _nan_net():
    net = l2o.LSTMOptimizer(seed=0)
    with torch.no_grad():
        next(iter(net.parameters())).fill_(float("nan"))
    return net


API_NAMES = sorted(
    _api_cases(
        {
            k: ""
            for k in (
                "notutf8",
                "nan",
                "foreign",
                "hugearch",
                "missing",
                "noweights",
                "concurrent",
                "root",
            )
        }
    )
)


@pytest.mark.parametrize("name", API_NAMES)
def test_api_refuses(world, name):
    before = snapshot(Path(world["fin"]))
    with pytest.raises(L2OError) as info:
        _api_cases(world)[name]()
    message = str(info.value)
    assert message and "\n" not in message, message
    assert snapshot(Path(world["fin"])) == before
    assert not (Path(world["root"]) / "never").exists()


def test_the_battery_is_large():
    assert len(CLI_CASES) + len(API_NAMES) + 3 >= 100
