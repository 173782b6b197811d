"""Saving and loading learned optimizers: safetensors weights + the architecture in metadata.

Nothing here unpickles: weights are safetensors, everything else JSON. Loading checks the
format marker, the architecture and every tensor's name and shape, and says what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from l2o import checks
from l2o.errors import L2OError
from l2o.records import atomic_write_text, write_atomic

FORMAT = "l2o.optimizer/1"
WEIGHTS_FILE = "optimizer.safetensors"
CONFIG_FILE = "config.json"


def save_tensors_atomic(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> None:
    """safetensors file written atomically (temporary file + rename)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=dict(metadata)))


def save_optimizer(
    net: nn.Module, path: str | Path, extra: Mapping[str, Any] | None = None
) -> Path:
    """Save ``net`` as ``optimizer.safetensors`` (a file path, or a folder that gets one).

    The architecture goes into the file's metadata, so the file alone rebuilds the network;
    ``extra`` (e.g. the training config) is stored too, and a readable ``config.json`` beside it.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / WEIGHTS_FILE
    if not checks.all_finite(net.state_dict().values()):
        raise L2OError(f"refusing to save non-finite (NaN or inf) weights to {path}")
    arch = net.arch_config()
    info = {"architecture": arch, **(dict(extra) if extra else {})}
    save_tensors_atomic(path, net.state_dict(), {"format": FORMAT, "config": json.dumps(info)})
    atomic_write_text(
        path.with_name(CONFIG_FILE) if path.name == WEIGHTS_FILE else path.with_suffix(".json"),
        json.dumps(info, indent=2, sort_keys=True),
    )
    return path


def read_optimizer_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the stored config of an l2o safetensors file, checked."""
    if not path.is_file():
        raise L2OError(f"{path} does not exist; pass a run folder or an optimizer.safetensors")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise L2OError(
            f"{path} is not a readable safetensors file ({exc}); "
            "re-save it with l2o or point to another file"
        ) from None
    if not checks.all_finite(tensors.values()):
        raise L2OError(f"{path} holds non-finite (NaN or inf) weights; it cannot be used")
    if metadata.get("format") != FORMAT:
        raise L2OError(
            f"{path} is a safetensors file but not an l2o optimizer "
            f"(format {metadata.get('format')!r}, expected {FORMAT!r})"
        )
    try:
        info = json.loads(metadata["config"])
        info["architecture"]["optimizer"]
    except (KeyError, TypeError, json.JSONDecodeError):
        raise L2OError(f"{path} has no valid architecture config in its metadata") from None
    return tensors, info


def _check_size(path: Path, arch: Any, tensors: Mapping[str, torch.Tensor]) -> None:
    """Refuse an architecture far larger than the weights stored (crafted metadata) before
    building it: a network of H hidden units holds at least H² weights."""
    if not isinstance(arch, Mapping):
        raise L2OError(f"{path} has no valid architecture config in its metadata")
    hidden = arch.get("hidden_size")
    stored = sum(t.numel() for t in tensors.values())
    if isinstance(hidden, int) and not isinstance(hidden, bool) and hidden**2 > 4 * stored + 10**6:
        raise L2OError(
            f"{path}: its metadata says hidden_size {hidden}, but the file holds only "
            f"{stored} weights; the file is damaged"
        )


def load_optimizer_file(path: Path) -> nn.Module:
    """The learned optimizer in an l2o ``.safetensors`` file, checked (see :func:`l2o.load` for
    run folders and pretrained names)."""
    from l2o.nets import build_net

    path = Path(path)
    tensors, info = read_optimizer_file(path)
    _check_size(path, info["architecture"], tensors)
    net = build_net(info["architecture"])
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))
        wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
        raise L2OError(
            f"{path} does not match its architecture {info['architecture']}: "
            f"missing {missing}, wrong shapes {wrong}"
        )
    net.load_state_dict(tensors)
    net.info = info  # the training config and provenance, for reports
    return net
