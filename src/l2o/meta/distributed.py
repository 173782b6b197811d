"""Data-parallel meta-training over processes with ``torch.distributed``.

One code path for one worker and many: each rank unrolls its share of the meta-batch, the
meta-gradients are averaged with one ``all_reduce`` per truncation window, and every rank takes
the same Adam step, so N workers compute what one process would with the whole batch. Rank 0
alone writes files and reports progress.

    l2o train quadratic --workers 2                   # spawns 2 local processes (gloo)
    torchrun --nproc-per-node 2 -m l2o.cli.main train quadratic   # or any torchrun launch

A worker that dies or hangs ends the job within :func:`worker_timeout` seconds with a one-line
error (:class:`PeerLost` on the survivors; the local launcher names the culprit's rank), and the
last checkpoint, written atomically by rank 0, stays intact for ``--resume``. Ctrl-C or SIGTERM
on any rank (or on the local launcher, which forwards it) stops every rank after the same
meta-iteration (:func:`agree_on_stop`), with a checkpoint.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from l2o.errors import L2OError

TIMEOUT_ENV = "L2O_WORKER_TIMEOUT"
DEFAULT_TIMEOUT = 30.0  # seconds; see worker_timeout()
STARTUP_TIMEOUT = 600.0  # seconds the ranks may start apart (the process group's own timeout)


def rank_and_size() -> tuple[int, int]:
    """(rank, world size), (0, 1) outside a distributed run."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def worker_timeout() -> float:
    """Seconds a worker waits for the others before the job is given up (``L2O_WORKER_TIMEOUT``).

    Long enough for any one truncation window or validation between two collectives, short
    enough that a dead or hung worker ends the job within a minute.
    """
    value = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT))
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise L2OError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {value!r}")
    return seconds


def init_from_env(backend: str = "gloo") -> None:
    """Join the process group a launcher such as ``torchrun`` describes in the environment.

    ``backend`` is ``gloo`` for CPUs, ``nccl`` for GPUs (see :func:`l2o.devices.backend_for`).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if backend == "nccl":  # one GPU per process: this one's is cuda:LOCAL_RANK
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local % torch.cuda.device_count())
        dist.init_process_group(backend, timeout=timedelta(seconds=STARTUP_TIMEOUT))


def _collective_device() -> torch.device:
    """Where small tensors made for a collective must live (NCCL only moves GPU tensors)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _collective(op: Callable[[], Any]) -> None:
    """Run one collective (``op`` launches it with ``async_op=True``) and wait for it at most
    :func:`worker_timeout` seconds; a peer that died or timed out becomes a one-line error.

    The process group itself is created with :data:`STARTUP_TIMEOUT`: ranks may start far apart
    (importing torch on a busy machine), but once running they answer within a window.
    """
    from l2o.meta import watchdog

    watchdog.entered_collective()
    try:
        work = op()
        work.wait(timedelta(seconds=worker_timeout()))
    except RuntimeError as exc:  # torch.distributed.DistError and its kin
        rank, size = rank_and_size()
        raise PeerLost(
            f"worker {rank} of {size} lost the others ({_first_line(exc)}): a worker died or "
            "hung; the last checkpoint is intact, continue with --resume"
        ) from exc


class PeerLost(L2OError):
    """A collective failed because another worker died or stopped answering."""


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:160] if lines else type(exc).__name__


def shard(indices: Sequence[int], rank: int, size: int) -> list[int]:
    """This rank's contiguous share of a batch of instance indices."""
    per = len(indices) // size
    return list(indices[rank * per : (rank + 1) * per])


def average_gradients(net: nn.Module, finite: bool) -> bool:
    """Average the meta-gradients over ranks; True when every rank's window was finite."""
    params = list(net.parameters())
    flat = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
        + [torch.tensor([1.0 if finite else 0.0], device=params[0].device)]
    )
    if not finite:
        flat[:-1] = 0.0
    _collective(lambda: dist.all_reduce(flat, async_op=True))
    size = dist.get_world_size()
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = (flat[offset : offset + n] / size).view_as(p)
        offset += n
    return bool(flat[-1] == size)


def all_mean(value: float, weight: float = 1.0) -> float:
    """The weighted mean of ``value`` over ranks (weights: e.g. instances per rank)."""
    if rank_and_size()[1] == 1:
        return value
    pair = torch.tensor([value * weight, weight], dtype=torch.float64, device=_collective_device())
    _collective(lambda: dist.all_reduce(pair, async_op=True))
    return float(pair[0] / pair[1])


def agree_on_stop(pending: str | None) -> str | None:
    """The stop every rank takes at this iteration boundary: a signal name if any rank has one
    pending (SIGTERM over SIGINT), else None. One small ``all_reduce`` with several workers."""
    if rank_and_size()[1] == 1:
        return pending
    code = signal.Signals[pending].value if pending is not None else 0
    flag = torch.tensor([code], dtype=torch.int64, device=_collective_device())
    _collective(lambda: dist.all_reduce(flag, op=dist.ReduceOp.MAX, async_op=True))
    return signal.Signals(int(flag)).name if int(flag) else None


def broadcast_weights(net: nn.Module) -> None:
    for p in net.parameters():
        _collective(lambda p=p: dist.broadcast(p.data, src=0, async_op=True))


def spawn(
    workers: int,
    fn: Callable[..., Any],
    *args: Any,
    timeout: float | None = None,
    backend: str = "gloo",
) -> None:
    """Run ``fn(*args)`` in ``workers`` local processes joined in one process group.

    ``backend`` is ``gloo`` (CPUs) or ``nccl`` (one GPU per worker: ``cuda:RANK``).
    ``fn`` must be importable (a module-level function) and its arguments picklable. A worker
    that dies, fails or hangs (no progress for ``timeout`` seconds while the others wait for it;
    default :func:`worker_timeout`) stops the others at once; see :mod:`l2o.meta.watchdog`.
    """
    if workers < 1:
        raise L2OError(f"workers must be >= 1, got {workers}")
    from l2o.meta.watchdog import run_workers

    seconds = worker_timeout() if timeout is None else timeout
    run_workers(workers, fn, args, seconds, backend)
