"""The LSTM layer's elementwise loops in C (``lstm_kernels.c``), built on first use.

Meta-training runs the LSTM on a few thousand rows per step, where the eager cell's ~30 small
kernels per layer cost more than its matmuls. The C loops do that work in one pass each way.
They are built once per machine with the system's C compiler (``cc``, ``gcc`` or ``clang``;
no torch headers, well under a second) into a cache folder and loaded with ctypes.

Used for float32 CPU tensors when the build succeeds; anything else (no compiler, another dtype
or device, ``L2O_NATIVE=0`` in the environment) takes the eager PyTorch path, which computes the
same maths (tested to float tolerance). A failed build is logged once, never raised.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("lstm_kernels.c")
# x86-64 feature levels by the vector width torch itself found on this CPU; the default (-O3
# alone) vectorises for the baseline of the architecture.
_MARCH = {"AVX512": "-march=x86-64-v4", "AVX2": "-march=x86-64-v3"}

_lib: ctypes.CDLL | None = None
_tried = False
_off = 0  # nesting depth of disabled()


def _flags() -> list[str]:
    flags = ["-O3", "-fopenmp-simd", "-shared", "-fPIC", "-ffp-contract=off", "-fno-math-errno"]
    if platform.machine() in ("x86_64", "AMD64"):
        march = _MARCH.get(torch.backends.cpu.get_cpu_capability())
        if march:
            flags.append(march)
    return flags


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "l2o" / "kernels"


def _build(compiler: str) -> Path:
    source = SOURCE.read_bytes()
    flags = _flags()
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=True
    ).stdout
    key = hashlib.sha256(b"\0".join([source, " ".join(flags).encode(), version.encode()]))
    target = _cache_dir() / f"lstm_kernels-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the target and renamed into place: processes building at once never load a
    # half-written library.
    fd, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run(
            [compiler, *flags, str(SOURCE), "-o", partial],
            capture_output=True,
            text=True,
            check=True,
        )
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


def _load() -> ctypes.CDLL | None:
    global _lib, _tried
    if _tried:
        return _lib
    _tried = True
    if os.environ.get("L2O_NATIVE", "1") == "0":
        return None
    compiler = _compiler()
    if compiler is None:
        log.info("no C compiler found: the LSTM cell runs on the eager PyTorch path")
        return None
    try:
        lib = ctypes.CDLL(str(_build(compiler)))
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or str(error)
        log.warning("building the LSTM kernels failed, using eager PyTorch: %s", detail.strip())
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.lstm_forward.argtypes = [i64, i64, ptr, ptr, ptr, i64, ptr, ptr, ptr]
    lib.lstm_forward.restype = None
    lib.lstm_backward.argtypes = [i64, i64, ptr, i64, ptr, i64, ptr, ptr, i64, ptr, ptr, ptr]
    lib.lstm_backward.argtypes += [ptr, ptr, ptr]
    lib.lstm_backward.restype = None
    _lib = lib
    return _lib


def available() -> bool:
    """Whether the C loops are built and loaded (builds them on the first call)."""
    return _load() is not None


def usable(*tensors: Tensor) -> bool:
    """Whether the C loops apply to these tensors: float32, on the CPU, built and not disabled."""
    return (
        not _off
        and all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors)
        and available()
    )


@contextmanager
def disabled() -> Iterator[None]:
    """The eager PyTorch path inside (tests and benchmarks compare the two)."""
    global _off
    _off += 1
    try:
        yield
    finally:
        _off -= 1


def _rows(t: Tensor) -> Tensor:
    """``t`` with unit column stride (a view when it has one already)."""
    return t if t.stride(1) == 1 and t.stride(0) >= t.shape[1] else t.contiguous()


def forward(gates: Tensor, bias: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``gates`` (n, 4H, contiguous) ← σ(gates + bias) in place; the new ``(h, c, tanh c)``."""
    n, H = c.shape
    c, bias = _rows(c), bias.contiguous()
    c_new, tanh_c, h_new = (torch.empty(n, H) for _ in range(3))
    _lib.lstm_forward(
        n,
        H,
        gates.data_ptr(),
        bias.data_ptr(),
        c.data_ptr(),
        c.stride(0),
        c_new.data_ptr(),
        tanh_c.data_ptr(),
        h_new.data_ptr(),
    )
    return h_new, c_new, tanh_c


def backward(
    dh: Tensor | None, dc: Tensor | None, gates: Tensor, c: Tensor, tanh_c: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The gradients with respect to the pre-activations ``(n, 4H)``, the bias (their sum over
    rows, accumulated in double) and the old ``c``."""
    n, H = c.shape
    dh = None if dh is None else _rows(dh)
    dc = None if dc is None else _rows(dc)
    c = _rows(c)
    dz, dc_prev, d_bias = torch.empty(n, 4 * H), torch.empty(n, H), torch.empty(4 * H)
    sums = torch.empty(4 * H, dtype=torch.float64)
    zeros = torch.zeros(H) if dh is None or dc is None else None
    _lib.lstm_backward(
        n,
        H,
        None if dh is None else dh.data_ptr(),
        0 if dh is None else dh.stride(0),
        None if dc is None else dc.data_ptr(),
        0 if dc is None else dc.stride(0),
        gates.data_ptr(),
        c.data_ptr(),
        c.stride(0),
        tanh_c.data_ptr(),
        dz.data_ptr(),
        dc_prev.data_ptr(),
        d_bias.data_ptr(),
        None if zeros is None else zeros.data_ptr(),
        sums.data_ptr(),
    )
    return dz, d_bias, dc_prev
