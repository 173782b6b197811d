"""Every file of a run folder, written one way and read one way.

Writers are atomic (a temporary file in the same folder, then a rename) and create files with
the user's umask; ``results.json`` is strict JSON (non-finite numbers become ``null`` and the
file says so); CSV readers are tolerant: a damaged line is reported with its file and line
number, and skipped or refused as the caller asks.

Example:
    >>> fmt_number(0.000123456), fmt_number(None), fmt_number(float("nan"))
    ('0.0001235', 'diverged', 'diverged')
    >>> csv_value(3), csv_value(0.1), csv_value(0.1, digits=3)
    ('3', '0.1', '0.1')
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from l2o.errors import L2OError

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"
METRICS_FILE = "metrics.csv"
METRIC_FIELDS = ("iteration", "meta_loss", "val_loss", "grad_norm", "skipped", "wall_time")
RESULTS_FILE = "results.json"
CURVES_FILE = "curves.csv"
CURVE_FIELDS = ("optimizer", "instance", "step", "loss")
LAMBDAS_FILE = "lambdas.csv"
LAMBDA_FIELDS = ("iteration", "slot", "variant", "label", "clean", "lambda")
LAMBDA_DIGITS = 6  # significant digits of λ in lambdas.csv (and in memory: see LambdaRecorder)
NON_FINITE_FLAG = "non_finite_as_null"  # set in a results.json where a value was not finite


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# --- numbers ---


def fmt_number(value: Any, digits: int = 4) -> str:
    """A number for people: ``digits`` significant digits; ``None``/NaN/inf read "diverged"."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "diverged"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.{digits}g}"


def csv_value(value: Any, digits: int | None = None) -> str:
    """A CSV cell: ints as ints, floats exactly (``repr``) or to ``digits``; text quoted."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if digits is None else f"{value:.{digits}g}"
    text = str(value)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


# --- atomic files ---


def temp_path(path: Path) -> Path:
    """A fresh temporary file beside ``path`` (mode from the umask), for a later rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 whatever the umask
    os.close(fd)
    return Path(tmp)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` then rename ``tmp`` onto ``path``: never a half-written file."""
    tmp = temp_path(path)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # some writers (safetensors) recreate the file
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (synced before the rename)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    write_atomic(Path(path), write)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def clean_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files a killed writer left in ``folder`` (and one level below).

    Only call this while holding the folder's lock: a live writer's temporary looks the same.
    """
    removed = []
    for pattern in (f".*{TEMP_SUFFIX}", f"*/.*{TEMP_SUFFIX}"):
        for tmp in folder.glob(pattern):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


# --- JSON ---


def strict(value: Any) -> tuple[Any, bool]:
    """``value`` with every non-finite float replaced by ``None``; and whether any was."""
    if isinstance(value, float) and not math.isfinite(value):
        return None, True
    if isinstance(value, Mapping):
        items = [(k, strict(v)) for k, v in value.items()]
        return {k: v for k, (v, _) in items}, any(f for _, (_, f) in items)
    if isinstance(value, (list, tuple)):
        items = [strict(v) for v in value]
        return [v for v, _ in items], any(f for _, f in items)
    return value, False


def to_json(value: Any, sort_keys: bool = False) -> str:
    """Strict JSON text (non-finite numbers as ``null``), indented, with a final newline."""
    clean, _ = strict(value)
    return json.dumps(clean, indent=2, sort_keys=sort_keys, allow_nan=False) + "\n"


def write_json(path: Path, value: Any, sort_keys: bool = False) -> None:
    atomic_write_text(Path(path), to_json(value, sort_keys))


def write_results(path: Path, results: Mapping[str, Any]) -> dict[str, Any]:
    """``results.json``: strict JSON; ``non_finite_as_null: true`` marks a replaced value."""
    clean, replaced = strict(dict(results))
    if replaced:
        clean[NON_FINITE_FLAG] = True
    write_json(path, clean)
    return clean


def read_json(path: Path, what: str = "an l2o record") -> Any:
    """A JSON file, or an :class:`L2OError` that names the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise L2OError(f"{path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        line = getattr(exc, "lineno", None)
        where = f"{path}:{line}" if line else str(path)
        raise L2OError(f"{where}: not {what} ({_first_line(exc)})") from None


def read_json_object(path: Path, what: str, keys: Iterable[str] = ()) -> dict[str, Any]:
    """Like :func:`read_json`, for a JSON object that must hold ``keys``."""
    value = read_json(path, what)
    missing = [k for k in keys if not isinstance(value, dict) or k not in value]
    if not isinstance(value, dict) or missing:
        raise L2OError(f"{path}: not {what} (missing {', '.join(missing) or 'an object'})")
    return value


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


# --- CSV ---


def write_csv(
    path: Path, fields: Sequence[str], rows: Iterable[Mapping[str, Any]], digits: int | None = None
) -> None:
    lines = [",".join(fields)]
    lines += [",".join(csv_value(row[k], digits) for k in fields) for row in rows]
    atomic_write_text(Path(path), "\n".join(lines) + "\n")


def append_csv(
    path: Path, fields: Sequence[str], rows: Iterable[Mapping[str, Any]], digits: int | None = None
) -> None:
    """Rows appended (written in one call, so a kill leaves at most one damaged line)."""
    text = "".join(",".join(csv_value(row[k], digits) for k in fields) + "\n" for row in rows)
    with open(path, "a") as f:
        f.write(text)


Parser = Callable[[str], Any]


def read_csv(
    path: Path,
    columns: Mapping[str, Parser],
    strict_lines: bool = True,
) -> list[dict[str, Any]]:
    """Rows of a CSV file with a header, each ``columns[name]`` parsing its cell.

    A line that does not parse is a damaged line: with ``strict_lines`` the read fails with
    ``file:line: what is wrong``; without, the line is skipped with a warning that says so.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise L2OError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise L2OError(f"{path}: cannot be read ({_first_line(exc)})") from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None or any(c not in header for c in columns):
        missing = [c for c in columns if header is None or c not in header]
        raise L2OError(f"{path}:1: header lacks {', '.join(missing)}")
    where = {c: header.index(c) for c in columns}
    rows = []
    for number, cells in enumerate(reader, start=2):
        try:
            if len(cells) != len(header):
                raise ValueError(f"expected {len(header)} fields, got {len(cells)}")
            rows.append({c: parse(cells[where[c]]) for c, parse in columns.items()})
        except (ValueError, TypeError, OverflowError) as exc:
            message = f"{path}:{number}: damaged line ({_first_line(exc)})"
            if strict_lines:
                raise L2OError(message) from None
            log.warning("%s; skipped", message)
    return rows


def integer(text: str) -> int:
    """An integer cell (``"3"``, also ``"3.0"`` as written by older files)."""
    value = float(text)
    if not value.is_integer():
        raise ValueError(f"{text!r} is not an integer")
    return int(value)


# --- curves.csv (evaluations), lambdas.csv (concurrent runs) ---

CURVE_COLUMNS: dict[str, Parser] = {
    "optimizer": str,
    "instance": integer,
    "step": integer,
    "loss": float,
}


def read_curve_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``curves.csv``; a damaged line is an error naming it."""
    return read_csv(path, CURVE_COLUMNS)


def _slot(text: str) -> int | str:
    return text if text == "*" else integer(text)


LAMBDA_COLUMNS: dict[str, Parser] = {
    "iteration": integer,
    "slot": _slot,
    "variant": integer,
    "label": str,
    "clean": integer,
    "lambda": float,
}


def read_lambda_rows(path: Path, strict_lines: bool = True) -> list[dict[str, Any]]:
    """The rows of a ``lambdas.csv``; a damaged line is an error naming it (or, without
    ``strict_lines``, skipped with a warning: a kill can cut the last appended line)."""
    return read_csv(path, LAMBDA_COLUMNS, strict_lines=strict_lines)


def write_lambda_rows(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    write_csv(path, LAMBDA_FIELDS, rows, digits=LAMBDA_DIGITS)


def append_lambda_rows(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """One meta-iteration's λ rows, appended before its checkpoint (like ``metrics.csv``)."""
    append_csv(path, LAMBDA_FIELDS, rows, digits=LAMBDA_DIGITS)


# --- metrics.csv (meta-training) ---

METRIC_COLUMNS: dict[str, Parser] = {
    "iteration": integer,
    "meta_loss": float,
    "val_loss": float,
    "grad_norm": float,
    "skipped": integer,
    "wall_time": float,
}


def write_metrics(run_dir: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    write_csv(Path(run_dir) / METRICS_FILE, METRIC_FIELDS, rows)


def append_metrics(run_dir: Path, row: Mapping[str, Any]) -> None:
    append_csv(Path(run_dir) / METRICS_FILE, METRIC_FIELDS, [row])


def read_metrics(run_dir: Path, upto: int | None = None) -> list[dict[str, Any]]:
    """The rows of ``metrics.csv`` (damaged lines skipped with a warning), up to ``upto``."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    rows = read_csv(path, METRIC_COLUMNS, strict_lines=False)
    return [r for r in rows if upto is None or r["iteration"] <= upto]
