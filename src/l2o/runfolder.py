"""Run folders that never lose work: one process per folder, and no silent overwrites.

Every command that writes an ``--out`` folder opens it with :func:`open_run`, which

1. checks the path (not empty, not a file, creatable and writable) before touching anything;
2. takes an exclusive lock on the folder (``flock`` on the directory itself, so no lock file is
   left behind), and refuses with the holder's pid when another process has it;
3. removes temporary files a killed writer left behind (safe: we hold the lock);
4. reads the folder's state, **new**, **interrupted** or **finished** (``run.json``, or for
   folders written before it existed, the files present), and decides whether this command may
   write there; every refusal names a command that works;
5. marks the folder ``running`` (with the pid), and ``finished`` when the work completes.

The rules: another command's results are never overwritten without ``--force``; a finished
training run is only extended with ``--resume``; an interrupted one continues with ``--resume``
(or starts over once there is no checkpoint to lose); ``compare``, ``evaluate`` and
``reproduce`` may rerun into their own folders (their reruns reuse what is finished).

Example:
    >>> import tempfile
    >>> with open_run(tempfile.mkdtemp(), "evaluate") as run:
    ...     run.state.status
    'new'
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from l2o.errors import L2OError
from l2o.records import atomic_write_bytes, clean_temporaries, read_json, write_json

MARKER = "run.json"
KINDS = ("train", "evaluate", "compare", "concurrent", "reproduce")
# Files and folders l2o commands write; --force removes these (and nothing else) first.
RESULT_FILES = (
    MARKER,
    "checkpoint",
    "config.json",
    "metrics.csv",
    "optimizer.safetensors",
    "results.json",
    "curves.csv",
    "comparison.png",
    "tuning.db",
    "generalization",
    "generalization.json",
    "generalization.md",
    "concurrent.json",
    "lambdas.csv",
    "lambdas.png",
)
# Commands whose rerun into their own folder is how they continue (nothing finished is lost).
RERUNNABLE = ("evaluate", "compare", "reproduce")


@dataclass(frozen=True)
class RunState:
    """What a folder holds: ``status`` new / interrupted / finished, and of which command."""

    status: str
    kind: str | None = None
    checkpoint: bool = False  # a training checkpoint to resume from

    def describe(self) -> str:
        article = "an interrupted" if self.status == "interrupted" else "a finished"
        return f"{article} `l2o {self.kind}` run"


def read_state(folder: Path) -> RunState:
    """The state of ``folder``, from ``run.json`` or, failing that, from the files it holds."""
    checkpoint = (folder / "checkpoint" / "state.safetensors").is_file()
    marker = folder / MARKER
    if marker.is_file():
        try:
            info = read_json(marker, "an l2o run marker")
        except L2OError:
            info = None
        if isinstance(info, dict) and info.get("kind") in KINDS:
            status = "finished" if info.get("status") == "finished" else "interrupted"
            return RunState(status, info["kind"], checkpoint)
    # Folders from before run.json (or with a damaged one): infer from the files.
    has = {name for name in RESULT_FILES if (folder / name).exists()} - {MARKER}
    if not has:
        return RunState("new")
    if "concurrent.json" in has:
        done = "results.json" in has
        return RunState("finished" if done else "interrupted", "concurrent", checkpoint)
    if "tuning.db" in has or "comparison.png" in has:
        return RunState("finished" if "results.json" in has else "interrupted", "compare")
    if "results.json" in has:
        return RunState("finished", "evaluate")
    if "optimizer.safetensors" in has:
        return RunState("finished", "train", checkpoint)
    return RunState("interrupted", "train", checkpoint)


def decide(folder: Path, state: RunState, kind: str, resume: bool, force: bool) -> str:
    """``fresh`` (start over), ``resume`` or ``rerun`` (reuse what is there); else an error."""
    if state.status != "new" and state.kind == kind and kind in RERUNNABLE:
        return "rerun"  # --force means something of its own there (reproduce: rerun the steps)
    if force:
        return "fresh"
    if state.status == "new":
        if resume:
            raise L2OError(f"nothing to resume: {folder} holds no run; run without --resume")
        return "fresh"
    where = f"{folder} holds {state.describe()}"
    if state.kind != kind:
        raise L2OError(f"{where}; pass --force to replace it, or choose another --out")
    if kind in RERUNNABLE:
        return "rerun"
    if kind in ("train", "concurrent"):  # both checkpoint and resume
        if resume and state.checkpoint:
            return "resume"
        if resume:
            raise L2OError(
                f"nothing to resume: {where} that stopped before its first checkpoint; "
                "run the same command without --resume to start it over"
            )
        if state.status == "interrupted" and not state.checkpoint:
            return "fresh"  # nothing was saved, so nothing is lost by starting over
        what = "continue it" if state.status == "interrupted" else "extend it (more iterations)"
        raise L2OError(
            f"{where}; pass --resume to {what}, --force to start over, or choose another --out"
        )
    raise L2OError(f"{where}; pass --force to run it again, or choose another --out")


def check_out(out: str | Path | None) -> Path:
    """An ``--out`` path, refused when empty or when it names something that is not a folder."""
    if out is None or str(out).strip() == "":
        raise L2OError("--out must name a folder, got an empty path")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise L2OError(f"--out {path} is a file, not a folder; choose another --out")
    return path


class RunFolder:
    """An open, locked run folder (see :func:`open_run`)."""

    def __init__(self, path: Path, kind: str, state: RunState, mode: str) -> None:
        self.path, self.kind, self.state, self.mode = path, kind, state, mode

    @property
    def resume(self) -> bool:
        return self.mode == "resume"

    def mark(self, status: str) -> None:
        write_json(self.path / MARKER, {"kind": self.kind, "status": status, "pid": os.getpid()})

    def finish(self) -> None:
        """Mark the work complete: the folder now holds a finished run of this kind."""
        self.mark("finished")


@contextmanager
def open_run(
    out: str | Path | None, kind: str, *, resume: bool = False, force: bool = False
) -> Iterator[RunFolder]:
    """Lock ``out`` for a ``kind`` command and decide how it may be written (see the module).

    The folder is marked finished only by :meth:`RunFolder.finish`; leaving the block by an
    exception leaves it marked interrupted, so the next command knows.
    """
    path = check_out(out)
    if not path.exists():
        decide(path, RunState("new"), kind, resume, force)  # refuse before creating anything
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise L2OError(f"cannot use --out {path}: {_reason(exc)}") from None
    try:
        _lock(fd, path)
        if not os.access(path, os.W_OK):
            raise L2OError(f"cannot write into --out {path}: permission denied")
        state = read_state(path)
        mode = decide(path, state, kind, resume, force)
        marker = path / MARKER
        previous = marker.read_bytes() if marker.is_file() else None
        try:
            clean_temporaries(path)
            if mode == "fresh" and state.status != "new":
                _clear(path)
            run = RunFolder(path, kind, state, mode)
            run.mark("running")
        except OSError as exc:
            raise L2OError(f"cannot write into --out {path}: {_reason(exc)}") from None
        try:
            yield run
        except L2OError:
            # Refused input found inside the work (e.g. a resume with another config): the
            # folder keeps the state it had, so its next command is told the same as before.
            if mode != "fresh" and previous is not None:
                atomic_write_bytes(marker, previous)
            elif mode != "fresh" or state.status == "new":
                marker.unlink(missing_ok=True)
            raise
    finally:
        os.close(fd)  # releases the lock


def _lock(fd: int, path: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = None
        try:
            info = read_json(path / MARKER, "an l2o run marker")
            running = isinstance(info, dict) and info.get("status") == "running"
            holder = info.get("pid") if running else None
        except L2OError:
            pass
        who = f"pid {holder}" if holder else "another process"
        raise L2OError(
            f"--out {path} is in use by another l2o process ({who}); wait for it to finish "
            "or choose another --out"
        ) from None


def _clear(path: Path) -> None:
    """Remove what earlier l2o runs wrote (and only that: --out may hold other files)."""
    for name in RESULT_FILES:
        target = path / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "too many levels of symbolic links"
    return exc.strerror or str(exc)
