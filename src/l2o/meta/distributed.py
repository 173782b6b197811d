"""Data-parallel meta-training over processes with ``torch.distributed``.

One code path for one worker and many: each rank unrolls its share of the meta-batch, the
meta-gradients are averaged with one ``all_reduce`` per truncation window, and every rank takes
the same Adam step, so N workers compute what one process would with the whole batch. Rank 0
alone writes files and reports progress.

    l2o train quadratic --workers 2                   # spawns 2 local processes (gloo)
    torchrun --nproc-per-node 2 -m l2o.cli.main train quadratic   # or any torchrun launch
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from l2o.errors import L2OError


def rank_and_size() -> tuple[int, int]:
    """(rank, world size), (0, 1) outside a distributed run."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env() -> None:
    """Join the process group a launcher such as ``torchrun`` describes in the environment."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")


def shard(indices: Sequence[int], rank: int, size: int) -> list[int]:
    """This rank's contiguous share of a batch of instance indices."""
    per = len(indices) // size
    return list(indices[rank * per : (rank + 1) * per])


def average_gradients(net: nn.Module, finite: bool) -> bool:
    """Average the meta-gradients over ranks; True when every rank's window was finite."""
    params = list(net.parameters())
    flat = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
        + [torch.tensor([1.0 if finite else 0.0])]
    )
    if not finite:
        flat[:-1] = 0.0
    dist.all_reduce(flat)
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
    pair = torch.tensor([value * weight, weight], dtype=torch.float64)
    dist.all_reduce(pair)
    return float(pair[0] / pair[1])


def broadcast_weights(net: nn.Module) -> None:
    for p in net.parameters():
        dist.broadcast(p.data, src=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, size: int, port: int, fn: Callable[..., Any], args: tuple) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size)
    )
    dist.init_process_group("gloo", rank=rank, world_size=size)
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()


def spawn(workers: int, fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` in ``workers`` local processes joined in one gloo process group.

    ``fn`` must be importable (a module-level function) and its arguments picklable.
    """
    if workers < 1:
        raise L2OError(f"workers must be >= 1, got {workers}")
    import torch.multiprocessing as mp

    try:
        mp.spawn(_worker, args=(workers, _free_port(), fn, args), nprocs=workers, join=True)
    except mp.ProcessRaisedException as exc:
        # A worker's bad-input error reaches the user as the same one-line error.
        last = str(exc).strip().splitlines()[-1]
        prefix = "l2o.errors.L2OError: "
        if last.startswith(prefix):
            raise L2OError(last[len(prefix) :]) from None
        raise
