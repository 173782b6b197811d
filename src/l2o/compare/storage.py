"""Optuna storages that several processes (or machines) can tune one study in.

Three things on top of Optuna's RDB storage make ``--trials N`` the study's total across
processes:

- :func:`open_storage` turns a URL into an :class:`optuna.storages.RDBStorage` with heartbeats,
  so the RUNNING trial of a killed process is failed after :data:`GRACE_PERIOD` seconds instead of
  being counted for ever; plain ``postgresql://`` URLs use psycopg 3 when psycopg2 is absent.
- :func:`study_lock` serialises "count the live trials, then ask for one" between processes: a
  PostgreSQL advisory lock (any machine), or a lock file beside an SQLite database (one disk).
- :func:`heartbeat` keeps a trial's heartbeat fresh while it runs.

Example:
    >>> storage = open_storage("sqlite:///:memory:")
    >>> with study_lock(storage, "sqlite:///:memory:", "my-study"):
    ...     pass
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import sqlalchemy
from sqlalchemy.exc import SQLAlchemyError

from l2o.errors import L2OError

HEARTBEAT_INTERVAL = 5  # seconds between a running trial's heartbeats
GRACE_PERIOD = 30  # a RUNNING trial without a heartbeat this long belongs to a dead process
POSTGRES_SCHEMES = ("postgresql", "postgres")
INSTALL_HINT = "pip install 'l2o[postgres]' (installs psycopg 3)"
_SETUP_LOCK = 0x6C326F  # "l2o": the advisory lock held while Optuna creates its tables


def driver_url(url: str) -> str:
    """``url`` with a PostgreSQL driver SQLAlchemy can load; a clear error when none is installed.

    SQLAlchemy reads a bare ``postgresql://`` as psycopg2; psycopg 3 (what ``l2o[postgres]``
    installs) needs ``postgresql+psycopg://``, so a bare URL picks whichever is installed.
    """
    scheme, sep, rest = url.partition("://")
    dialect, _, driver = scheme.partition("+")
    if not sep or dialect.lower() not in POSTGRES_SCHEMES:
        return url
    wanted = {"": ("psycopg", "psycopg2"), "psycopg": ("psycopg",), "psycopg2": ("psycopg2",)}
    for module in wanted.get(driver.lower(), ()):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{module}://{rest}"
    if driver.lower() in wanted:
        raise L2OError(
            f"--storage {dialect}:// needs a PostgreSQL driver ({driver or 'psycopg'}), "
            f"which is not installed: {INSTALL_HINT}"
        )
    return f"postgresql+{driver}://{rest}"  # another driver: SQLAlchemy says if it is missing


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats for ``url`` (tables created once, even when racing).

    Reads :data:`HEARTBEAT_INTERVAL` and :data:`GRACE_PERIOD` at each call (tests shorten them).
    """
    real = driver_url(url)
    kwargs = {"pool_pre_ping": True} if _is_postgres(real) else {}
    with _setup_lock(real), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats
        return optuna.storages.RDBStorage(
            real,
            engine_kwargs=kwargs,
            heartbeat_interval=HEARTBEAT_INTERVAL,
            grace_period=GRACE_PERIOD,
        )


@contextlib.contextmanager
def study_lock(storage: optuna.storages.RDBStorage, url: str, study: str) -> Iterator[None]:
    """Hold a lock on ``study`` shared by every process using this storage.

    PostgreSQL: a session advisory lock keyed by the study's name. SQLite: ``flock`` on a file
    beside the database. Other storages (an in-memory SQLite, MySQL): no lock; the caller's
    check after asking for a trial still keeps the total exact.
    """
    if _is_postgres(driver_url(url)):
        key = int.from_bytes(hashlib.sha1(study.encode()).digest()[:8], "big", signed=True)
        with storage.engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        return
    with _file_lock(sqlite_file(url)):
        yield


@contextlib.contextmanager
def heartbeat(storage: optuna.storages.RDBStorage, trial_id: int) -> Iterator[None]:
    """Record ``trial_id``'s heartbeat every :data:`HEARTBEAT_INTERVAL` seconds meanwhile."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            with contextlib.suppress(SQLAlchemyError, optuna.exceptions.StorageInternalError):
                storage.record_heartbeat(trial_id)
            if stop.wait(HEARTBEAT_INTERVAL):
                return

    thread = threading.Thread(target=beat, name=f"l2o-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


OWNER_MARK = "l2o_owner"  # "host:pid" of the process running a trial
CRASHED_MARK = "l2o_crashed"  # set on a trial failed because its process on this host is gone


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def fail_stale_trials(study: optuna.Study) -> None:
    """Mark the RUNNING trials of dead processes FAIL, so they stop counting towards the total.

    A process of this host that is gone (killed) is known at once; elsewhere the heartbeat's
    grace period decides.
    """
    host = socket.gethostname()
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in running:
        where, _, pid = str(trial.user_attrs.get(OWNER_MARK, "")).rpartition(":")
        if where == host and pid.isdigit() and not _alive(int(pid)):
            fail_as_crashed(study, trial)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def fail_as_crashed(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Fail a RUNNING trial whose process is gone, marked so that its draw is replayed."""
    storage = study._storage  # Optuna's storage of the study (no public accessor)
    storage.set_trial_user_attr(trial._trial_id, CRASHED_MARK, True)
    storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_for(predicate: Callable[[], bool], timeout: float, poll: float = 0.5) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def sqlite_file(url: str) -> Path | None:
    """The database file of an ``sqlite:///`` URL (None for other URLs and in-memory ones)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    path = url[len(prefix) :].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def _is_postgres(url: str) -> bool:
    return url.partition("://")[0].partition("+")[0].lower() in POSTGRES_SCHEMES


@contextlib.contextmanager
def _setup_lock(url: str) -> Iterator[None]:
    """Serialise Optuna's table creation (two processes creating them at once collide)."""
    if not _is_postgres(url):
        with _file_lock(sqlite_file(url)):
            yield
        return
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _SETUP_LOCK})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _SETUP_LOCK})
    finally:
        engine.dispose()


@contextlib.contextmanager
def _file_lock(database: Path | None) -> Iterator[None]:
    """``flock`` on a file beside an SQLite database (nothing for an in-memory one)."""
    if database is None:
        yield
        return
    try:
        handle = open(f"{database}.lock", "a")  # noqa: SIM115 - closed below
    except OSError:  # no such folder: SQLite will say so, in its own words
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
