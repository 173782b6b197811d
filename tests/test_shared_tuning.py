"""Several processes tuning one study: ``trials`` is the total between them, none lost or doubled.

The PostgreSQL tests need a server: ``.ci/run`` starts a throw-away one and exports its URL as
``L2O_TEST_POSTGRES`` (see ``.ci/postgres.sh``); without it they are skipped.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid

import optuna
import pytest

import l2o.compare.storage as storage_module
import l2o.compare.tuning as tuning
from l2o.compare.storage import driver_url
from l2o.compare.tuning import LIVE_MARK, tune
from l2o.errors import L2OError
from l2o.tasks import get_task

optuna.logging.set_verbosity(optuna.logging.WARNING)
POSTGRES = os.environ.get("L2O_TEST_POSTGRES")
needs_postgres = pytest.mark.skipif(not POSTGRES, reason="L2O_TEST_POSTGRES is not set")
TRIALS = 12


def _tune_in_child(storage: str, trials: int, seconds: float, queue: multiprocessing.Queue) -> None:
    real = tuning.validation_loss

    def slow(*args, **kwargs):  # long enough trials that both processes take some
        time.sleep(seconds)
        return real(*args, **kwargs)

    tuning.validation_loss = slow
    try:
        tuned = tune(get_task("quadratic"), "adam", 5, trials, instances=4, storage=storage)
    except Exception as exc:
        queue.put(repr(exc))
        raise
    queue.put((tuned.new_trials, tuned.trials, tuned.hyperparameters))


def _two_processes(storage: str, trials: int, seconds: float = 0.05) -> list[tuple]:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    args = (storage, trials, seconds, queue)
    procs = [ctx.Process(target=_tune_in_child, args=args) for _ in "ab"]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    assert all(isinstance(r, tuple) for r in results), results
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return results


def _assert_one_study(storage: str, trials: int, results: list[tuple]) -> None:
    (study_summary,) = optuna.get_all_study_summaries(driver_url(storage))
    study = optuna.load_study(study_name=study_summary.study_name, storage=driver_url(storage))
    states = [t.state for t in study.get_trials()]
    assert states == [optuna.trial.TrialState.COMPLETE] * trials  # none lost, none surplus
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == trials  # no point tried twice
    assert sum(new for new, _, _ in results) == trials
    assert all(total == trials for _, total, _ in results)
    assert all(new > 0 for new, _, _ in results), "both processes should have run trials"
    # Both choose from the whole shared study: its best trial.
    assert [hp for _, _, hp in results] == [study.best_params] * 2


def test_two_processes_share_an_sqlite_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'tuning.db'}"
    # 6 trials, not 12: SQLite commits cost ~10 ms each here, and this runs in the fast suite.
    _assert_one_study(storage, 6, _two_processes(storage, 6))


def _hang_in_child(storage: str, trials: int) -> None:
    tuning.validation_loss = lambda *a, **k: time.sleep(3600)  # killed mid-trial
    tune(get_task("quadratic"), "adam", 5, trials, instances=4, storage=storage)


@pytest.mark.slow
def test_the_trial_of_a_killed_process_is_made_up_for(tmp_path, monkeypatch):
    monkeypatch.setattr(storage_module, "HEARTBEAT_INTERVAL", 1)
    monkeypatch.setattr(storage_module, "GRACE_PERIOD", 2)
    storage = f"sqlite:///{tmp_path / 'tuning.db'}"
    child = multiprocessing.get_context("fork").Process(target=_hang_in_child, args=(storage, 4))
    child.start()
    # Generous: creating the tables takes seconds of fsyncs, far more on a busy disk.
    assert storage_module.wait_for(lambda: _running_trials(storage) == 1, timeout=300)
    os.kill(child.pid, signal.SIGKILL)  # its trial stays RUNNING, its heartbeat stops
    child.join()
    tuned = tune(get_task("quadratic"), "adam", 5, 4, instances=4, storage=storage)
    assert (tuned.trials, tuned.new_trials) == (4, 4)
    study = optuna.load_study(study_name=tuned.study_name, storage=storage)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 4 and states.count("FAIL") == 1


def _running_trials(storage: str) -> int:
    """RUNNING trials, read with sqlite3: Optuna itself would race the child to create tables."""
    path = storage.removeprefix("sqlite:///")
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=1)) as db:
            return db.execute("SELECT count(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0]
    except sqlite3.Error:  # no tables yet, or locked for a moment
        return 0


def test_running_trials_of_crashed_old_runs_are_ignored(tmp_path):
    storage = f"sqlite:///{tmp_path / 'tuning.db'}"
    family = get_task("quadratic")
    first = tune(family, "sgd", steps=3, trials=2, instances=2, storage=storage)
    study = optuna.load_study(study_name=first.study_name, storage=storage)
    study.ask()  # RUNNING, no heartbeat mark: what a crash of an older l2o leaves behind
    again = tune(family, "sgd", steps=3, trials=4, instances=2, storage=storage)
    assert (again.trials, again.new_trials) == (4, 2)
    marked = [t for t in study.get_trials() if t.user_attrs.get(LIVE_MARK)]
    assert len(marked) == 4


@pytest.mark.parametrize("marks", ["live", "none"])
def test_a_trial_killed_between_its_two_marks_is_failed_and_replayed(tmp_path, marks):
    """A process killed after asking for its new trial but before naming itself its owner
    leaves a RUNNING trial no pid check or heartbeat can fail. Marked live, the next run must
    not wait for it forever (it did, in `.ci/run`); marked or not, it must replay its draw,
    like a run never killed (unmarked, the rerun drew a new point: `.ci/run` again)."""
    family = get_task("quadratic")
    reference = tune(
        family, "sgd", steps=3, trials=4, instances=2, storage=f"sqlite:///{tmp_path / 'ref.db'}"
    )
    storage = f"sqlite:///{tmp_path / 'tuning.db'}"
    first = tune(family, "sgd", steps=3, trials=2, instances=2, storage=storage)
    study = optuna.load_study(study_name=first.study_name, storage=storage)
    trial = study.ask()  # killed here ("none") or after the live mark: no owner, no heartbeat
    if marks == "live":
        trial.set_user_attr(LIVE_MARK, True)
    result: list = []
    worker = threading.Thread(
        target=lambda: result.append(tune(family, "sgd", 3, 4, instances=2, storage=storage)),
        daemon=True,
    )
    worker.start()
    worker.join(timeout=120)
    assert result, "the rerun waited for the dead process's trial"
    (again,) = result
    assert (again.trials, again.new_trials) == (4, 2)
    assert again.hyperparameters == reference.hyperparameters
    (dead,) = [t for t in study.get_trials() if t.state.name == "FAIL"]
    assert dead.user_attrs.get(storage_module.CRASHED_MARK)


def test_postgres_without_a_driver_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("psycopg") else real(name, *a),
    )
    with pytest.raises(L2OError, match=r"pip install 'l2o\[postgres\]'") as info:
        tune(get_task("quadratic"), "sgd", 3, 1, 2, storage="postgresql://me@db/l2o")
    assert "\n" not in str(info.value)


def test_an_unreachable_server_is_one_line():
    with pytest.raises(L2OError, match="cannot open the Optuna storage") as info:
        tune(get_task("quadratic"), "sgd", 3, 1, 2, storage="postgresql://me@127.0.0.1:1/l2o")
    assert "\n" not in str(info.value) and "Connection refused" in str(info.value)


def test_bare_postgres_urls_get_an_installed_driver():
    assert driver_url("sqlite:///x.db") == "sqlite:///x.db"
    url = driver_url("postgresql://me@db/l2o")
    assert url in ("postgresql+psycopg://me@db/l2o", "postgresql+psycopg2://me@db/l2o")
    assert driver_url("postgres://me@db/l2o") == url


@pytest.fixture
def database():
    """A fresh database on the test server, dropped afterwards."""
    import sqlalchemy

    name = f"l2o_test_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(driver_url(POSTGRES), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    base, _, query = POSTGRES.partition("?")
    yield f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()


@pytest.mark.postgres
@needs_postgres
def test_two_processes_share_a_postgres_study(database):
    _assert_one_study(database, TRIALS, _two_processes(database, TRIALS))


@pytest.mark.postgres
@needs_postgres
def test_two_compare_commands_share_a_postgres_study(database, tmp_path):
    args = ["--optimizer", "sgd:lr=0.01", "--baselines", "adam", "--steps", "50"]
    args += ["--instances", "4", "--tune-instances", "32", "--trials", str(TRIALS)]
    args += ["--storage", database]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "l2o.cli.main", "compare", "quadratic", *args, "--out", out],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for out in (str(tmp_path / "a"), str(tmp_path / "b"))
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    results = [json.loads((tmp_path / x / "results.json").read_text()) for x in "ab"]
    tunings = [r["tuning"]["adam"] for r in results]
    assert [t["trials"] for t in tunings] == [TRIALS, TRIALS]
    assert sum(t["new_trials"] for t in tunings) == TRIALS
    assert "***" not in database and results[0]["comparison"]["storage"] == database
    study = optuna.load_study(study_name=tunings[0]["study"], storage=driver_url(database))
    assert len(study.trials) == TRIALS
    chosen = [r["optimizers"]["adam"]["hyperparameters"] for r in results]
    assert chosen == [study.best_params] * 2
