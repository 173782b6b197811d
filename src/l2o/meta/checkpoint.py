"""The whole meta-training state in one safetensors file, written atomically.

Tensors (network and best weights, Adam's moments, the RNG state) are safetensors; everything
else (iteration, counters, Adam's hyperparameters, the config) is JSON in the file's metadata.
One file renamed into place means a kill at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from l2o import checks, interrupts
from l2o.errors import L2OError
from l2o.serialization import CONFIG_FILE, WEIGHTS_FILE, save_tensors_atomic

FORMAT = "l2o.checkpoint/1"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "state.safetensors"
VALIDATED_DIR = "validated"  # validated/ITERATION/: the network as each validation saw it
RESUMABLE = ("iterations", "device")  # config keys a resumed run may change


@dataclass
class TrainingState:
    """What resuming needs beyond the network and meta-optimizer themselves."""

    iteration: int  # meta-iterations completed
    best_val: float
    best_iteration: int
    skipped: int
    elapsed: float  # seconds of training so far
    best_weights: dict[str, torch.Tensor]


def checkpoint_path(run_dir: Path) -> Path:
    return run_dir / CHECKPOINT_DIR / CHECKPOINT_FILE


def validated_networks(run_dir: Path, since: int = 0) -> list[tuple[int, Path]]:
    """(iteration, folder) of each complete validated network of a run from ``since`` on, in
    order (empty if none)."""
    folder = run_dir / VALIDATED_DIR
    if not folder.is_dir():
        return []
    found = sorted(
        (int(p.name), p) for p in folder.glob("*")
        if p.name.isdigit() and (p / WEIGHTS_FILE).is_file() and (p / CONFIG_FILE).is_file()
    )  # fmt: skip
    return [(i, p) for i, p in found if i >= since]


def save_checkpoint(
    run_dir: Path,
    net: nn.Module,
    meta_opt: torch.optim.Optimizer,
    training: TrainingState,
    config: dict[str, Any],
) -> Path:
    tensors: dict[str, torch.Tensor] = {}
    tensors.update({f"net.{k}": v for k, v in net.state_dict().items()})
    tensors.update({f"best.{k}": v for k, v in training.best_weights.items()})
    opt_state = meta_opt.state_dict()
    scalars: dict[str, dict[str, float]] = {}
    for index, entry in opt_state["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {
        "iteration": training.iteration,
        "best_val": training.best_val,
        "best_iteration": training.best_iteration,
        "skipped": training.skipped,
        "elapsed": training.elapsed,
        "opt_param_groups": opt_state["param_groups"],
        "opt_scalars": scalars,
        "config": config,
    }
    path = checkpoint_path(run_dir)
    save_tensors_atomic(path, tensors, {"format": FORMAT, "state": json.dumps(meta)})
    return path


def check_resumable(run_dir: Path, config: dict[str, Any]) -> None:
    """Refuse, before anything is loaded, a resume whose config differs from the checkpoint's
    (only ``iterations`` may change): one line naming the keys that differ."""
    from safetensors import SafetensorError, safe_open

    path = checkpoint_path(run_dir)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["state"])
        saved = meta["config"]
        if not isinstance(saved, dict):
            raise TypeError("config is not an object")
    except (SafetensorError, OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise L2OError(
            f"checkpoint {path} is corrupt ({_first_line(exc)}); "
            "start over with --force or choose another --out"
        ) from None
    current = json.loads(json.dumps(config))
    keys = (set(saved) | set(current)) - set(RESUMABLE)
    differ = sorted(k for k in keys if saved.get(k) != current.get(k))
    if differ:
        change = ", ".join(f"{k} {saved.get(k)!r} → {current.get(k)!r}" for k in differ[:4])
        raise L2OError(
            f"cannot resume {run_dir} with another config ({change}); resume with the config "
            "it was written with (only iterations and device may change), or use --force or a "
            "new --out"
        )


def _check_meta(meta: Any) -> None:
    """The JSON part of a checkpoint, type-checked (it may have been edited by hand)."""
    if not isinstance(meta, dict):
        raise L2OError("its state is not a JSON object")
    checks.integer("iteration", meta["iteration"], 0)
    checks.integer("best_iteration", meta["best_iteration"], -1)
    checks.integer("skipped", meta["skipped"], 0)
    checks.number("elapsed", meta["elapsed"], 0)
    if not isinstance(meta["best_val"], (int, float)) or isinstance(meta["best_val"], bool):
        raise L2OError(f"best_val must be a number, got {meta['best_val']!r}")
    for key in ("opt_scalars", "config"):
        if not isinstance(meta[key], dict):
            raise L2OError(f"{key} must be a JSON object")
    if not isinstance(meta["opt_param_groups"], list):
        raise L2OError("opt_param_groups must be a JSON list")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def stop_if_interrupted(
    run_dir: Path | None,
    net: nn.Module,
    meta_opt: torch.optim.Optimizer,
    training: TrainingState,
    config: dict[str, Any],
    saved: bool,
    stop: str | None,
) -> None:
    """After a meta-iteration: on a stop (``"SIGINT"``/``"SIGTERM"``: the pending signal, agreed
    by every rank), checkpoint (unless just done) and raise :class:`l2o.interrupts.Interrupted`
    saying what was kept."""
    if stop is None:
        return
    if run_dir is not None and not saved:
        save_checkpoint(run_dir, net, meta_opt, training, config)
    kept = f"checkpoint written to {run_dir / CHECKPOINT_DIR}" if run_dir else "nothing written"
    interrupts.stop(f"stopped after meta-iteration {training.iteration}; {kept}", stop)


def load_checkpoint(
    run_dir: Path, net: nn.Module, meta_opt: torch.optim.Optimizer
) -> tuple[TrainingState, dict[str, Any]]:
    """Restore ``net`` and ``meta_opt`` in place; return the training state and saved config."""
    from safetensors import SafetensorError, safe_open

    path = checkpoint_path(run_dir)
    if not path.is_file():
        raise L2OError(f"no checkpoint at {path}: nothing to resume (run without --resume)")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
        if metadata.get("format") != FORMAT:
            raise L2OError(f"{path} is not an l2o checkpoint (format {metadata.get('format')!r})")
        meta = json.loads(metadata["state"])
        _check_meta(meta)
    except (SafetensorError, OSError, KeyError, TypeError, json.JSONDecodeError, L2OError) as exc:
        raise L2OError(
            f"checkpoint {path} is corrupt ({_first_line(exc)}); "
            "start over with --force or choose another --out"
        ) from None

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    try:
        net.load_state_dict(part("net."))
        state: dict[int, dict[str, Any]] = {}
        for key, value in part("opt.").items():
            index, name = key.split(".", 1)
            state.setdefault(int(index), {})[name] = value
        for index, values in meta["opt_scalars"].items():
            state.setdefault(int(index), {}).update(values)
        meta_opt.load_state_dict({"state": state, "param_groups": meta["opt_param_groups"]})
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise L2OError(
            f"checkpoint {path} does not fit this network ({_first_line(exc)}); "
            "resume with the config it was written with"
        ) from None
    try:
        torch.set_rng_state(tensors["rng.torch"])
    except (KeyError, RuntimeError, TypeError) as exc:
        raise L2OError(f"checkpoint {path} has no valid RNG state ({_first_line(exc)})") from None
    training = TrainingState(
        meta["iteration"],
        meta["best_val"],
        meta["best_iteration"],
        meta["skipped"],
        meta["elapsed"],
        part("best."),
    )
    return training, meta["config"]
