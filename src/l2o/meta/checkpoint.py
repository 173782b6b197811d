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

from l2o import interrupts
from l2o.errors import L2OError
from l2o.serialization import save_tensors_atomic

FORMAT = "l2o.checkpoint/1"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "state.safetensors"


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


def stop_if_interrupted(
    run_dir: Path | None,
    net: nn.Module,
    meta_opt: torch.optim.Optimizer,
    training: TrainingState,
    config: dict[str, Any],
    saved: bool,
) -> None:
    """After a meta-iteration: on a pending Ctrl-C/SIGTERM, checkpoint (unless just done) and
    raise :class:`l2o.interrupts.Interrupted` saying what was kept."""
    if interrupts.pending() is None:
        return
    if run_dir is not None and not saved:
        save_checkpoint(run_dir, net, meta_opt, training, config)
    kept = f"checkpoint written to {run_dir / CHECKPOINT_DIR}" if run_dir else "nothing written"
    interrupts.stop_if_requested(f"stopped after meta-iteration {training.iteration}; {kept}")


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
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as exc:
        raise L2OError(f"checkpoint {path} is corrupt ({exc}); delete it to start over") from None

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
    except (RuntimeError, ValueError, KeyError) as exc:
        raise L2OError(
            f"checkpoint {path} does not fit this network ({exc}); "
            "resume with the config it was written with"
        ) from None
    torch.set_rng_state(tensors["rng.torch"])
    training = TrainingState(
        meta["iteration"],
        meta["best_val"],
        meta["best_iteration"],
        meta["skipped"],
        meta["elapsed"],
        part("best."),
    )
    return training, meta["config"]
