"""Ctrl-C and SIGTERM that stop at a safe point, so the work done so far is kept.

An entry point (the CLI) wraps its work in :func:`handle_signals`. Loops that can stop cleanly
(meta-training after an iteration, tuning after a trial) run inside :func:`safe_points` and call
:func:`stop_if_requested` when their state is consistent: the first signal then only sets a flag,
and the loop checkpoints and raises :class:`Interrupted`. Outside such loops, and at a second
signal, the signal raises ``KeyboardInterrupt`` at once (the last checkpoint stays intact).

A data-parallel worker uses :func:`defer_signals` instead: every signal only sets the flag (its
launcher stops it hard at a second one), and a stop its launcher forwards arrives through
:func:`request`. The ranks then agree on the iteration to stop at (see
:func:`l2o.meta.distributed.agree_on_stop`).

Example:
    >>> with handle_signals(), safe_points():
    ...     stop_if_requested()  # nothing pending: returns
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_pending: str | None = None  # the name of a signal received inside a safe-point region
_depth = 0  # nesting of safe_points()
_raised: str | None = None  # a signal the handler raised as KeyboardInterrupt


class Interrupted(KeyboardInterrupt):
    """A run stopped at a safe point after a signal; ``str()`` says what was kept."""

    def __init__(self, message: str, signal_name: str = "SIGINT") -> None:
        super().__init__(message)
        self.message, self.signal_name = message, signal_name

    def __str__(self) -> str:
        return self.message


def _handler(signum: int, frame: FrameType | None) -> None:
    global _pending, _raised
    name = signal.Signals(signum).name
    if _depth > 0 and _pending is None:
        _pending = name  # a safe point will stop the loop
        return
    _raised = name
    raise KeyboardInterrupt(name)


@contextmanager
def handle_signals() -> Iterator[None]:
    """Route SIGINT and SIGTERM through the safe-point logic (main thread only; else a no-op).

    A signal whose ``KeyboardInterrupt`` was swallowed is raised again when the block ends:
    Python drops exceptions raised while a weakref callback or ``__del__`` runs, so a signal
    arriving then would otherwise be lost and the command would end as if never stopped.
    """
    global _pending, _raised
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    _pending = _raised = None
    for s in previous:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
        raised, _pending, _raised = _raised, None, None
    if raised is not None:  # the block ended normally after the handler raised: swallowed
        raise KeyboardInterrupt(raised)


@contextmanager
def safe_points() -> Iterator[None]:
    """A region whose loop calls :func:`stop_if_requested` at consistent states."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1


def defer_signals() -> None:
    """In a worker process: SIGINT and SIGTERM only request a stop at the next safe point; a
    second one is ignored (the launcher, which got it too, stops its workers hard)."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, _defer)


def _defer(signum: int, frame: FrameType | None) -> None:
    request(signal.Signals(signum).name)


def request(name: str) -> None:
    """Ask for a stop at the next safe point as if signal ``name`` had arrived (first one wins)."""
    global _pending
    if _pending is None:
        _pending = name


def pending() -> str | None:
    """The signal waiting for a safe point (``"SIGINT"``, ``"SIGTERM"``), or None."""
    return _pending


def stop_if_requested(message: str = "interrupted") -> None:
    """Raise :class:`Interrupted` with ``message`` if a signal is waiting."""
    if _pending is not None:
        stop(message, _pending)


def stop(message: str, name: str) -> None:
    """Raise :class:`Interrupted` for signal ``name`` (one agreed elsewhere), clearing the flag."""
    global _pending
    _pending = None
    raise Interrupted(message, name)
