"""Local data-parallel workers under a watchdog: a dead or hung worker ends the whole job.

:func:`run_workers` starts one process per rank (``spawn``), joins them in a gloo process group
and watches them:

- a worker that **exits** with an error or a signal stops the others at once;
- a worker that **hangs** is found two ways. A thread in every worker stamps the time ten
  times a second; a process that is stopped, or stuck in native code holding the GIL, stops
  stamping and after ``timeout`` seconds of silence is the hung one (even inside a collective,
  where the others wait too). A worker stuck in a Python loop of its own keeps stamping; for
  it, every rank counts the collectives it has entered (:func:`entered_collective`): when the
  counts differ and none has moved for ``timeout`` seconds, the ranks behind are the hung ones.

Either way the error is one line naming the rank. Killing a worker is safe for the run folder:
rank 0 writes every checkpoint to a temporary file and renames it into place.

Ctrl-C or SIGTERM on the launcher is forwarded: it sets a stop flag every worker reads, the ranks
agree on the iteration to stop at (:func:`l2o.meta.distributed.agree_on_stop`), rank 0 writes the
checkpoint, and the launcher raises :class:`l2o.interrupts.Interrupted` as a single process would.
The workers themselves only defer signals (a terminal's Ctrl-C reaches them too); a second signal
on the launcher stops them all at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta
from multiprocessing import resource_tracker
from typing import Any

from l2o import interrupts
from l2o.errors import L2OError

POLL = 0.1  # seconds between the watchdog's looks (and its workers' stamps): a stop's delay
GRACE = 0.5  # seconds the survivors get to report a lost peer after a worker failed
# The survivors' own gloo timeout comes later than the watchdog's, so the watchdog, which knows
# which rank is behind, reports a hang first.
GLOO_EXTRA = 30.0
_counters: Any = None  # this worker's view of the shared progress counters (None: not a worker)
_rank = 0

# What a worker reports when it fails or stops: (rank, kind, message); kind is "error" (an
# L2OError: bad input, reported as is), "peer" (it lost the others: a symptom, not the cause),
# "crash", or a signal name ("SIGINT", "SIGTERM") when it stopped at a safe point.
Report = tuple[int, str, str]
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def entered_collective() -> None:
    """Count one collective for this rank (no-op outside :func:`run_workers`)."""
    if _counters is not None:
        _counters[_rank] += 1


def run_workers(
    size: int,
    fn: Callable[..., Any],
    args: Sequence[Any],
    timeout: float,
    backend: str = "gloo",
) -> None:
    """Run ``fn(*args)`` on ``size`` local ranks; raise :class:`L2OError` naming a failed rank."""
    import torch.distributed as dist

    from l2o.meta.distributed import STARTUP_TIMEOUT

    # The launcher hosts the rendezvous store on a port the kernel picks and it keeps bound: a
    # port found free and handed on could be taken by another process before rank 0 binds it.
    store = dist.TCPStore(
        "127.0.0.1", 0, is_master=True, wait_for_workers=False,
        timeout=timedelta(seconds=STARTUP_TIMEOUT),
    )  # fmt: skip
    port = store.port
    ctx = multiprocessing.get_context("spawn")
    counters = ctx.Array("q", size, lock=False)  # no lock: each rank writes its own slot
    beats = ctx.Array("d", size, lock=False)  # time.monotonic() of each rank's last sign of life
    stop = ctx.Value("i", 0, lock=False)  # the signal number the launcher forwards (0: none)
    shared = (counters, beats, stop)
    # One pipe per worker for its failure report (no semaphores for a killed worker to leak).
    pipes = [ctx.Pipe(duplex=False) for _ in range(size)]
    procs = [
        ctx.Process(
            target=_worker,
            args=(rank, size, port, timeout, backend, shared, pipes[rank][1], fn, tuple(args)),
            name=f"l2o-worker-{rank}",
        )
        for rank in range(size)
    ]
    reports = [receive for receive, _ in pipes]
    try:
        # A first signal only sets a flag (forwarded by _watch); a second one stops them all now.
        with interrupts.safe_points():
            # The workers start with SIGINT/SIGTERM blocked (the mask is inherited), so a Ctrl-C
            # while they import torch waits for their own handlers instead of a traceback. The
            # resource tracker unblocks both when it first starts: start it before.
            resource_tracker.ensure_running()
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
            try:
                for proc in procs:
                    proc.start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            _watch(procs, counters, beats, reports, timeout, stop)
        stopped = [r for r in sorted(_drain(reports)) if r[1] in ("SIGINT", "SIGTERM")]
        if stopped:  # every rank stopped at the same safe point; rank 0 says what it kept
            interrupts.stop(stopped[0][2], stopped[0][1])
    finally:
        for proc in procs:  # on success they are gone; on failure or Ctrl-C, stop them all
            if proc.is_alive():
                proc.kill()
            proc.join()


def _watch(
    procs: list[multiprocessing.Process],
    counters: Any,
    beats: Any,
    reports: list[Any],
    timeout: float,
    stop: Any,
) -> None:
    size = len(procs)
    last, moved = list(counters), time.monotonic()
    pending = {p.sentinel: rank for rank, p in enumerate(procs)}
    while pending:
        asked = interrupts.pending()
        if asked is not None and not stop.value:
            stop.value = signal.Signals[asked].value  # the workers stop at their next safe point
        ready = multiprocessing.connection.wait(list(pending), timeout=POLL)
        failed = []
        for sentinel in ready:
            rank = pending.pop(sentinel)
            procs[rank].join()
            if procs[rank].exitcode:
                failed.append(rank)
        if failed:
            time.sleep(GRACE)  # let the survivors' reports of a lost peer arrive too
            raise L2OError(_failure(procs, failed, _drain(reports), size))
        now, counts = time.monotonic(), list(counters)
        silent = [rank for rank, beat in enumerate(beats) if beat and now - beat > timeout]
        if silent:
            who = ", ".join(map(str, silent))
            raise L2OError(
                f"worker {who} of {size} hung: no sign of life for {timeout:.0f} s; all workers "
                "were stopped, the last checkpoint is intact (continue with --resume)"
            )
        if counts != last:
            last, moved = counts, now
        elif len(set(counts)) > 1 and now - moved > timeout:
            behind = [rank for rank, c in enumerate(counts) if c == min(counts)]
            who = ", ".join(map(str, behind))
            raise L2OError(
                f"worker {who} of {size} hung: no progress for {timeout:.0f} s while the others "
                "waited for it; all workers were stopped, the last checkpoint is intact "
                "(continue with --resume)"
            )


def _failure(
    procs: list[multiprocessing.Process], failed: list[int], reports: list[Report], size: int
) -> str:
    """One line about the first cause among the failed ranks (a lost peer is only a symptom)."""
    by_rank = {rank: (kind, message) for rank, kind, message in reports}
    errors = [m for _, (k, m) in sorted(by_rank.items()) if k == "error"]
    if errors:
        return errors[0]  # bad input: every rank says the same, once is enough
    causes = [r for r in failed if by_rank.get(r, ("", ""))[0] != "peer"] or failed
    rank = causes[0]
    code = procs[rank].exitcode or 0
    if by_rank.get(rank, ("", ""))[0] == "peer":
        return by_rank[rank][1]  # nobody else said why: the survivor's own account
    if rank in by_rank:
        what = f"failed: {by_rank[rank][1]}"
    elif code < 0:
        what = f"died (killed by {signal.Signals(-code).name})"
    else:
        what = f"died (exit status {code})"
    return (
        f"worker {rank} of {size} {what}; all workers were stopped, the last checkpoint is "
        "intact (continue with --resume)"
    )


def _drain(pipes: list[Any]) -> list[Report]:
    out = []
    for pipe in pipes:
        with contextlib.suppress(EOFError, OSError):
            while pipe.poll():
                out.append(pipe.recv())
    return out


def _worker(
    rank: int,
    size: int,
    port: int,
    timeout: float,
    backend: str,
    shared: tuple[Any, Any],
    reports: Any,
    fn: Callable[..., Any],
    args: tuple,
) -> None:
    global _counters, _rank
    interrupts.defer_signals()  # a Ctrl-C on the terminal reaches the workers too
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # blocked since the start
    _die_with_parent(rank)
    import threading

    import torch.distributed as dist
    from tqdm import tqdm

    # tqdm's default lock is a multiprocessing semaphore, which a killed worker would leak (and
    # Python warn about at exit); rank 0 alone draws a bar, a thread lock is all it needs.
    tqdm.set_lock(threading.RLock())

    from l2o.meta.distributed import STARTUP_TIMEOUT, TIMEOUT_ENV, PeerLost

    _counters, _rank = shared[0], rank
    _start_beating(shared[1], shared[2], rank)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),  # device "cuda" is cuda:LOCAL_RANK (l2o.devices)
        WORLD_SIZE=str(size),
    )
    try:
        if backend == "nccl":
            import torch

            torch.cuda.set_device(rank % torch.cuda.device_count())
        startup = timedelta(seconds=STARTUP_TIMEOUT)
        store = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=startup)
        dist.init_process_group(backend, store=store, rank=rank, world_size=size, timeout=startup)
        os.environ[TIMEOUT_ENV] = str(timeout + GLOO_EXTRA)  # each collective's own limit
        fn(*args)
    except interrupts.Interrupted as exc:  # all ranks agreed to stop here: leave together
        with contextlib.suppress(Exception):
            reports.send((rank, exc.signal_name, exc.message))
    except PeerLost as exc:
        _fail(reports, (rank, "peer", str(exc)))
    except L2OError as exc:
        _fail(reports, (rank, "error", str(exc)))
    except Exception as exc:
        traceback.print_exc()  # a bug: its traceback helps, once, from the rank it happened on
        _fail(reports, (rank, "crash", f"{type(exc).__name__}: {exc}".splitlines()[0]))
    # Done: wait for every rank, then leave without the process group's teardown (see below).
    with contextlib.suppress(Exception):
        dist.barrier()
    leave_without_teardown(0)


def _fail(reports: Any, report: Report) -> None:
    """Send the report and leave at once."""
    with contextlib.suppress(Exception):
        reports.send(report)
    leave_without_teardown(1)


def leave_without_teardown(code: int) -> None:
    """Exit without ``destroy_process_group`` or the interpreter's shutdown.

    Tearing gloo down can destroy one of its C++ threads while it is still running, which
    aborts the worker (SIGABRT, "terminate called without an active exception"): seen both
    after a peer died and at the end of a successful run. Everything a worker writes is
    already on disk (checkpoints are atomic renames), so only the standard streams need a flush.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _start_beating(beats: Any, stop: Any, rank: int) -> None:
    """Stamp ``beats[rank]`` from a daemon thread (stops when the process does), and pass on a
    stop the launcher forwards."""
    import threading

    def beat() -> None:
        while True:
            beats[rank] = time.monotonic()  # CLOCK_MONOTONIC: one clock for all processes
            if stop.value:
                interrupts.request(signal.Signals(stop.value).name)
            time.sleep(POLL)

    threading.Thread(target=beat, name="l2o-sign-of-life", daemon=True).start()


def _die_with_parent(rank: int) -> None:
    """Linux: receive SIGKILL when the launching process dies, so no worker is orphaned; and
    name the process ``l2o-rank-N`` (what ``ps`` and ``top`` show)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        libc.prctl(15, f"l2o-rank-{rank}".encode()[:15], 0, 0, 0)  # PR_SET_NAME
