"""Faults in data-parallel meta-training: a dead or hung worker ends the job, --resume continues.

The run is driven through the CLI in a subprocess, and a worker process is killed (or stopped)
once the run has written a checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from l2o.meta.checkpoint import checkpoint_path
from l2o.runfolder import read_state

pytestmark = pytest.mark.distributed

SETTINGS = [
    *("--set", "iterations=40", "--set", "batch_size=8", "--set", "horizon=40"),
    *("--set", "truncation=5", "--set", "val_instances=4", "--set", "val_every=10"),
    *("--set", "checkpoint_every=2"),
]


def _l2o(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "l2o.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def _workers_of(pid: int) -> list[int]:
    """The worker processes a launcher started (its children, minus multiprocessing's helpers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and "spawn_main" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def _rank_of(pid: int) -> int:
    """A worker's rank, from the name it gives its process (``l2o-rank-N``)."""
    name = Path(f"/proc/{pid}/comm").read_text().strip()
    assert name.startswith("l2o-rank-"), name
    return int(name.rsplit("-", 1)[1])


def _wait_for_checkpoint(run: Path, proc: subprocess.Popen, iteration: int = 4) -> None:
    """Until metrics.csv shows ``iteration`` (so checkpoints exist) and both workers run."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, _finish(proc)
        metrics = run / "metrics.csv"
        rows = metrics.read_text().splitlines()[1:] if metrics.is_file() else []
        if len(rows) >= iteration and checkpoint_path(run).is_file():
            return
        time.sleep(0.2)
    raise AssertionError("the run wrote no checkpoint in time")


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "optimizer.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("full") / "run"
    code, err = _finish(_l2o("train", "quadratic", "--workers", "2", "--out", str(run), *SETTINGS))
    assert code == 0, err
    return run


def test_a_killed_worker_ends_the_job_and_resume_is_bit_identical(tmp_path, uninterrupted):
    run = tmp_path / "run"
    proc = _l2o("train", "quadratic", "--workers", "2", "--out", str(run), *SETTINGS)
    _wait_for_checkpoint(run, proc)
    victim = _workers_of(proc.pid)[-1]
    rank = _rank_of(victim)
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    code, err = _finish(proc, timeout=90)
    assert time.monotonic() - killed <= 60
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: worker "), err
    assert f"worker {rank} of 2 died (killed by SIGKILL)" in lines[0] and "--resume" in lines[0]
    state = load_file(checkpoint_path(run))  # intact: loads, and is a past iteration
    assert "rng.torch" in state

    again = _l2o("train", "quadratic", "--workers", "2", "--out", str(run), "--resume", *SETTINGS)
    code, err = _finish(again)
    assert code == 0, err
    full, resumed = _weights(uninterrupted), _weights(run)
    assert full.keys() == resumed.keys()
    for name, value in full.items():
        assert torch.equal(resumed[name], value), name  # bit-identical


@pytest.mark.parametrize(
    ("sig", "whom"),
    [(signal.SIGINT, "group"), (signal.SIGTERM, "launcher")],
    ids=["SIGINT-to-the-terminal-group", "SIGTERM-to-the-launcher"],
)
def test_a_signal_stops_every_worker_at_one_iteration_and_resume_is_bit_identical(
    tmp_path, uninterrupted, sig, whom
):
    """Ctrl-C on a terminal reaches the launcher and its workers; SIGTERM (a scheduler) only the
    launcher, which forwards it. Either way the ranks stop together, with a checkpoint."""
    run = tmp_path / "run"
    proc = _l2o(
        "train", "quadratic", "--workers", "2", "--out", str(run), *SETTINGS,
        start_new_session=True,
    )  # fmt: skip
    _wait_for_checkpoint(run, proc)
    if whom == "group":
        os.killpg(proc.pid, sig)
    else:
        os.kill(proc.pid, sig)
    code, err = _finish(proc, timeout=90)
    assert code == 128 + sig, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: stopped after meta-iteration "), err
    assert "checkpoint written" in lines[0] and "--resume" in lines[0]
    stopped = int(lines[0].split("meta-iteration ")[1].split(";")[0])
    assert 4 <= stopped < 40, "finished before the signal: make the run longer"
    assert len((run / "metrics.csv").read_text().splitlines()) - 1 == stopped
    with safe_open(str(checkpoint_path(run)), framework="pt") as f:
        assert json.loads(f.metadata()["state"])["iteration"] == stopped
    assert read_state(run).status == "interrupted"

    again = _l2o("train", "quadratic", "--workers", "2", "--out", str(run), "--resume", *SETTINGS)
    code, err = _finish(again)
    assert code == 0, err
    full, resumed = _weights(uninterrupted), _weights(run)
    for name, value in full.items():
        assert torch.equal(resumed[name], value), name  # bit-identical


def test_a_second_ctrl_c_stops_the_workers_at_once(tmp_path):
    """A worker that cannot reach the next safe point (stopped) does not hold up a second Ctrl-C."""
    run = tmp_path / "run"
    proc = _l2o("train", "quadratic", "--workers", "2", "--out", str(run), *SETTINGS)
    _wait_for_checkpoint(run, proc)
    workers = _workers_of(proc.pid)
    os.kill(workers[-1], signal.SIGSTOP)
    proc.send_signal(signal.SIGINT)
    time.sleep(2.0)
    assert proc.poll() is None  # the first one waits for a safe point the stopped worker lacks
    proc.send_signal(signal.SIGINT)
    second = time.monotonic()
    code, err = _finish(proc, timeout=60)
    assert time.monotonic() - second < 10
    assert code == 130
    lines = err.strip().splitlines()
    assert lines == [
        "error: interrupted (Ctrl-C); continue with the same command and --resume (OUT/checkpoint)"
    ], err
    assert all(not Path(f"/proc/{pid}").exists() or _is_zombie(pid) for pid in workers)
    assert "rng.torch" in load_file(checkpoint_path(run))  # intact


def test_resume_with_another_number_of_workers(tmp_path, uninterrupted):
    run = tmp_path / "run"
    proc = _l2o("train", "quadratic", "--workers", "2", "--out", str(run), *SETTINGS)
    _wait_for_checkpoint(run, proc)
    os.kill(_workers_of(proc.pid)[0], signal.SIGKILL)
    assert _finish(proc, timeout=90)[0] == 2
    with safe_open(str(checkpoint_path(run)), framework="pt") as f:
        done = json.loads(f.metadata()["state"])["iteration"]
    code, err = _finish(_l2o("train", "quadratic", "--out", str(run), "--resume", *SETTINGS))
    assert code == 0, err
    full, resumed = _metrics(uninterrupted), _metrics(run)
    assert len(resumed) == 40 and resumed[:done] == full[:done]  # the same history up to it
    # The next iteration sums the same gradients in another order: equal to float tolerance.
    # (Later ones drift apart: meta-training amplifies rounding differences over iterations.)
    assert math.isclose(resumed[done][1], full[done][1], rel_tol=1e-4)


def _metrics(run: Path) -> list[list[float]]:
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    return [[float(x) for x in row.split(",")[:2]] for row in rows]


def test_a_hung_worker_ends_the_job_naming_its_rank(tmp_path):
    run = tmp_path / "run"
    timeout = "5"
    proc = _l2o(
        "train",
        "quadratic",
        "--workers",
        "2",
        "--worker-timeout",
        timeout,
        "--out",
        str(run),
        *SETTINGS,
    )
    _wait_for_checkpoint(run, proc)
    victim = _workers_of(proc.pid)[-1]
    rank = _rank_of(victim)
    os.kill(victim, signal.SIGSTOP)
    stopped = time.monotonic()
    code, err = _finish(proc, timeout=90)
    assert time.monotonic() - stopped <= 60
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"worker {rank} of 2 hung" in lines[0], err
    assert "for 5 s" in lines[0]
    assert not Path(f"/proc/{victim}").exists() or _is_zombie(victim)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_loopback_train_what_one_process_does(tmp_path):
    """``torchrun --nnodes 2 --rdzv-backend c10d``: two "nodes" on this machine, one rank each."""
    tiny = SETTINGS[:-2]
    tiny = [*tiny[:1], "iterations=3", *tiny[2:]]
    one = tmp_path / "one"
    code, err = _finish(_l2o("train", "quadratic", "--out", str(one), *tiny))
    assert code == 0, err
    endpoint = f"127.0.0.1:{_free_port()}"
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc-per-node",
                "1",
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                endpoint,
                "--rdzv-id",
                "l2o-test",
                "-m",
                "l2o.cli.main",
                "train",
                "quadratic",
                "--out",
                str(tmp_path / "two"),
                *tiny,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        for _ in range(2)
    ]
    results = [_finish(node, timeout=600) for node in nodes]
    assert [code for code, _ in results] == [0, 0], [err[-3000:] for _, err in results]
    a, b = _weights(one), _weights(tmp_path / "two")
    for name, value in a.items():
        torch.testing.assert_close(b[name], value, rtol=1e-4, atol=1e-6)
