"""Run folders: states, --force/--resume, stale temporaries, file modes, and the records module."""

from __future__ import annotations

import json
import logging
import math
import os

import pytest

from l2o.cli.main import main
from l2o.errors import L2OError
from l2o.records import read_csv, read_metrics, write_results
from l2o.runfolder import MARKER, open_run, read_state

TINY = [
    *("--set", "iterations=3", "--set", "batch_size=2", "--set", "horizon=4"),
    *("--set", "truncation=2", "--set", "val_instances=2", "--set", "checkpoint_every=1"),
]


def train(out, *extra: str) -> int:
    return main(["train", "quadratic", *TINY, *extra, "--out", str(out)])


def test_states_follow_the_run(tmp_path):
    out = tmp_path / "run"
    assert read_state(out).status == "new"
    assert train(out) == 0
    state = read_state(out)
    assert (state.status, state.kind, state.checkpoint) == ("finished", "train", True)
    assert json.loads((out / MARKER).read_text())["status"] == "finished"


def test_force_replaces_another_commands_results(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["evaluate", "adam", "quadratic", "--steps", "2", "--instances", "2",
                 "--out", str(out)]) == 0  # fmt: skip
    (out / "mine.txt").write_text("the user's own file")
    assert train(out) == 2
    assert "`l2o evaluate` run" in capsys.readouterr().err
    assert train(out, "--force") == 0
    assert not (out / "results.json").exists()  # the evaluation's records are gone ...
    assert (out / "mine.txt").read_text() == "the user's own file"  # ... nothing else is
    assert read_state(out).kind == "train"


def test_legacy_folder_with_weights_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "old"
    assert train(out) == 0
    (out / MARKER).unlink()  # as written before run.json existed
    for leftover in (out / "checkpoint").iterdir():
        leftover.unlink()
    (out / "checkpoint").rmdir()
    before = (out / "optimizer.safetensors").read_bytes()
    assert train(out) == 2
    assert "finished `l2o train` run" in capsys.readouterr().err
    assert (out / "optimizer.safetensors").read_bytes() == before


def test_interrupted_before_the_first_checkpoint(tmp_path, capsys):
    """E.g. the first checkpoint failed to write: every message points at a command that works."""
    out = tmp_path / "run"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"kind": "train", "status": "running", "pid": 1}))
    (out / "metrics.csv").write_text("iteration,meta_loss\n")
    (out / "checkpoint").mkdir()
    assert train(out, "--resume") == 2
    err = capsys.readouterr().err
    assert "without --resume" in err
    assert train(out) == 0  # ... and that command works
    assert read_state(out).status == "finished"


def test_interrupted_with_a_checkpoint_needs_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out) == 0
    (out / MARKER).write_text(json.dumps({"kind": "train", "status": "running", "pid": 1}))
    assert train(out) == 2
    assert "pass --resume to continue it" in capsys.readouterr().err
    assert train(out, "--resume") == 0


def test_a_failed_command_leaves_a_new_folder_new(tmp_path):
    out = tmp_path / "c"
    status = main(["compare", "quadratic", "--optimizer", "sgd", "--baselines", "adam",
                   "--storage", "bogus://x", "--out", str(out)])  # fmt: skip
    assert status == 2
    assert read_state(out).status == "new"


def test_stale_temporaries_are_removed(tmp_path):
    out = tmp_path / "run"
    assert train(out) == 0
    stale = [out / ".metrics.csv.x1.tmp", out / "checkpoint" / ".state.safetensors.x2.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    assert train(out, "--resume", "--set", "iterations=4") == 0
    assert not any(p.exists() for p in stale)


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        assert train(tmp_path / "run") == 0
    finally:
        os.umask(old)
    for name in (
        "optimizer.safetensors",
        "config.json",
        "metrics.csv",
        "checkpoint/state.safetensors",
    ):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o640, name


def test_resume_skips_a_damaged_metrics_line(tmp_path, caplog):
    out = tmp_path / "run"
    assert train(out) == 0
    with open(out / "metrics.csv", "a") as f:
        f.write("garbage,,\n")
    with caplog.at_level(logging.WARNING):
        assert train(out, "--resume", "--set", "iterations=5") == 0
    assert any("metrics.csv:5: damaged line" in r.getMessage() for r in caplog.records)
    assert [r["iteration"] for r in read_metrics(out)] == [1, 2, 3, 4, 5]


def test_read_csv_names_the_damaged_line(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n3\n")
    with pytest.raises(L2OError, match=r"x.csv:3: damaged line"):
        read_csv(path, {"a": int, "b": int})
    assert read_csv(path, {"a": int, "b": int}, strict_lines=False) == [{"a": 1, "b": 2}]


def test_results_json_is_strict(tmp_path):
    path = tmp_path / "results.json"
    written = write_results(path, {"loss": math.inf, "ok": 1.5, "curve": [1.0, math.nan]})

    def refuse(name: str) -> None:
        raise AssertionError(f"non-JSON constant {name}")

    loaded = json.loads(path.read_text(), parse_constant=refuse)
    assert (
        loaded
        == written
        == {
            "loss": None,
            "ok": 1.5,
            "curve": [1.0, None],
            "non_finite_as_null": True,
        }
    )


def test_open_run_locks_the_folder(tmp_path):
    with open_run(tmp_path / "a", "evaluate") as run:
        assert json.loads((run.path / MARKER).read_text())["pid"] == os.getpid()
        busy = rf"in use by another l2o process \(pid {os.getpid()}\)"
        with pytest.raises(L2OError, match=busy), open_run(tmp_path / "a", "evaluate"):
            pass
        run.finish()
    with open_run(tmp_path / "a", "evaluate"):  # released
        pass


def test_a_first_checkpoint_that_fails_to_write(tmp_path, capsys, monkeypatch):
    """The disk refuses the first checkpoint (e.g. a file-size limit): one error line, and then
    the plain command starts over while --resume points at it."""
    import errno

    import l2o.meta.train as train_module

    def refuse(*args, **kwargs):
        raise OSError(errno.EFBIG, "File too large", str(tmp_path / "run" / "checkpoint"))

    monkeypatch.setattr(train_module, "save_checkpoint", refuse)
    out = tmp_path / "run"
    assert train(out) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: File too large"), err
    monkeypatch.undo()
    assert train(out, "--resume") == 2
    assert "run the same command without --resume" in capsys.readouterr().err
    assert train(out) == 0
    assert read_state(out).status == "finished"


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("bytes", "is corrupt"),
        ("iteration", "iteration must be an integer"),
        ("not-object", "is corrupt"),
        ("config", "is corrupt"),
    ],
)
def test_a_damaged_checkpoint_is_one_error_line(tmp_path, capsys, damage, expected):
    from safetensors import safe_open
    from safetensors.torch import save_file

    out = tmp_path / "run"
    assert train(out) == 0
    path = out / "checkpoint" / "state.safetensors"
    if damage == "bytes":
        path.write_bytes(path.read_bytes()[:100])
    else:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
        state = json.loads(metadata["state"])
        if damage == "iteration":
            state["iteration"] = "three"
        elif damage == "config":
            state["config"] = [1]
        metadata["state"] = json.dumps(state) if damage != "not-object" else "[1, 2]"
        save_file(tensors, str(path), metadata=metadata)
    capsys.readouterr()
    assert train(out, "--resume", "--set", "iterations=4") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err, err
    assert "Traceback" not in err
    assert read_state(out).status == "finished"  # the refused resume left the state as it was


def test_force_in_a_rerunnable_folder_of_the_same_kind_deletes_nothing(tmp_path):
    out = tmp_path / "r"
    with open_run(out, "reproduce") as run:
        (out / "generalization").mkdir()  # a step folder named like a result
        (out / "generalization" / "step.json").write_text("{}")
        run.finish()
    with open_run(out, "reproduce", force=True) as run:
        assert run.mode == "rerun"
    assert (out / "generalization" / "step.json").is_file()
