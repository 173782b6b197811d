"""The LSTM layer's elementwise loops in C (``lstm_kernels.c``), built on first use.

Meta-training runs the LSTM on a few thousand rows per step, where the eager cell's ~15 small
kernels per layer and direction cost more than its matmuls. The C loops do that work in one
pass each way (and the linear output, its zero-gradient mask and the log-sign preprocessing in
one each). Up to one chunk of rows, a whole layer step runs in one call, its matmuls included:
they go to the ``sgemm_`` that torch's own library exports (the kernels behind ``torch.mm``),
which saves a torch dispatch, an allocation and a Python call per matmul and the ``[x, h]``
concatenation; without that symbol the matmuls stay with torch.
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
import math
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
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


def _build(compiler: str, flags: list[str]) -> Path:
    source = SOURCE.read_bytes()
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
    flags = _flags()
    try:
        try:
            lib = ctypes.CDLL(str(_build(compiler, flags)))
        except subprocess.CalledProcessError:
            if not flags[-1].startswith("-march"):
                raise
            # an older compiler without the x86-64-v3/v4 names: the baseline vector width
            lib = ctypes.CDLL(str(_build(compiler, flags[:-1])))
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or str(error)
        log.warning("building the LSTM kernels failed, using eager PyTorch: %s", detail.strip())
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.lstm_forward.argtypes = [i64, i64, ptr, ptr, ptr, ptr, i64, ptr, ptr, ptr]
    lib.lstm_backward.argtypes = [i64, i64, ptr, i64, ptr, i64, ptr, ptr, ptr, i64]
    lib.lstm_backward.argtypes += [ptr, ptr, i64, ptr, ptr, ptr, ptr, ptr]
    f32 = ctypes.c_float
    lib.lstm_output.argtypes = [i64, i64, ptr, ptr, f32, f32, ptr, ptr]
    lib.lstm_output_backward.argtypes = [i64, i64, ptr, f32, ptr, ptr, ptr, ptr, ptr]
    lib.log_sign.argtypes = [i64, ptr, f32, f32, f32, ptr]
    lib.lstm_layer_forward.argtypes = [i64, i64, i64, ptr, i64, ptr, i64, ptr, ptr, ptr, ptr]
    lib.lstm_layer_forward.argtypes += [i64, ptr, ptr, ptr, ptr, ptr]
    lib.lstm_layer_backward.argtypes = [i64, *lib.lstm_backward.argtypes, ptr, ptr, ptr, ptr, i64]
    lib.lstm_set_sgemm.argtypes = [ptr]
    for name in ("lstm_forward", "lstm_backward", "lstm_output", "lstm_output_backward"):
        getattr(lib, name).restype = None
    for name in ("log_sign", "lstm_layer_forward", "lstm_layer_backward", "lstm_set_sgemm"):
        getattr(lib, name).restype = None
    _lib = lib
    _use_sgemm(lib)
    return _lib


_sgemm = False  # whether the whole-layer loops have torch's sgemm_ (set by _load)


def _sgemm_address() -> int | None:
    """Where torch's CPU library exports the Fortran ``sgemm_`` of its BLAS, if it does."""
    for path in sorted(Path(torch.__file__).with_name("lib").glob("*torch_cpu.*")):
        try:
            return ctypes.cast(ctypes.CDLL(str(path)).sgemm_, ctypes.c_void_p).value
        except (OSError, AttributeError):
            continue
    return None


def _use_sgemm(lib: ctypes.CDLL) -> None:
    """Hand ``sgemm_`` to the C loops and check one small layer against ``torch.mm``."""
    global _sgemm
    address = _sgemm_address()
    if address is None:
        log.info("torch exports no sgemm_: the LSTM's matmuls stay with torch.mm")
        return
    lib.lstm_set_sgemm(address)
    _sgemm = True
    g = torch.Generator().manual_seed(0)
    with torch.device("cpu"):  # whatever default device the caller set
        x, h, c = (torch.randn(5, k, generator=g) for k in (3, 4, 4))
        weight, bias = torch.randn(7, 16, generator=g), torch.randn(16, generator=g)
        *_, gates = layer_forward(x, h, c, weight, bias, torch.ones(16))
        expected = (torch.cat((x, h), 1) @ weight + bias).sigmoid()
    if not torch.allclose(gates, expected, rtol=1e-4, atol=1e-5):
        log.warning("torch's sgemm_ gave another product: the LSTM's matmuls stay with torch.mm")
        _sgemm = False


def available() -> bool:
    """Whether the C loops are built and loaded (builds them on the first call)."""
    return _load() is not None


def usable(*tensors: Tensor) -> bool:
    """Whether the C loops apply to these tensors: float32, on the CPU, built and not disabled."""
    f32 = torch.float32
    return not _off and all(t.dtype is f32 and t.is_cpu for t in tensors) and available()


@contextmanager
def disabled() -> Iterator[None]:
    """The eager PyTorch path inside (tests and benchmarks compare the two)."""
    global _off
    _off += 1
    try:
        yield
    finally:
        _off -= 1


_ZEROS: dict[int, Tensor] = {}


def _zeros(size: int) -> Tensor:
    """A cached float32 zero vector (read, never written, by the C loops)."""
    if size not in _ZEROS:
        _ZEROS[size] = torch.zeros(size)
    return _ZEROS[size]


def _rows(t: Tensor) -> Tensor:
    """``t`` with unit column stride (a view when it has one already)."""
    return t if t.stride(1) == 1 and t.stride(0) >= t.shape[1] else t.contiguous()


# Rows per call of a C loop. Chunks run on torch's threads (ctypes lets go of the GIL); the
# chunking does not depend on the thread count, so neither do the results.
CHUNK = 4096
_pool: tuple[int, int, ThreadPoolExecutor] | None = None


def _each_chunk(n: int, call: Callable[[int, int], None]) -> None:
    """``call(start, stop)`` for every chunk of ``n`` rows, in parallel when torch has threads."""
    global _pool
    if n <= CHUNK:
        call(0, n)
        return
    chunks = [(start, min(n, start + CHUNK)) for start in range(0, n, CHUNK)]
    threads = min(torch.get_num_threads(), len(chunks))
    if threads <= 1:
        for start, stop in chunks:
            call(start, stop)
        return
    if _pool is None or _pool[:2] != (os.getpid(), threads):  # a forked child needs its own
        _pool = (os.getpid(), threads, ThreadPoolExecutor(threads, "l2o-native"))
    for future in [_pool[2].submit(call, start, stop) for start, stop in chunks]:
        future.result()


def forward(gates: Tensor, bias: Tensor, scale: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``gates`` (n, 4H, contiguous) ← σ((gates + bias) · scale) in place (``scale`` (4H,): 1 for
    i, f, o and 2 for g); the new ``(h, c, tanh c)``."""
    n, H = c.shape
    c, bias = _rows(c), bias.contiguous()
    # three tensors, not views of one: they leave as independent outputs and state
    h_new, c_new, tanh_c = torch.empty(n, H), torch.empty(n, H), torch.empty(n, H)
    g, b, m, c_at, c_stride = (
        gates.data_ptr(),
        bias.data_ptr(),
        scale.data_ptr(),
        c.data_ptr(),
        c.stride(0),
    )
    cn, tc, hn = c_new.data_ptr(), tanh_c.data_ptr(), h_new.data_ptr()

    def rows(start: int, stop: int) -> None:
        at = 4 * start  # bytes per float
        _lib.lstm_forward(
            stop - start,
            H,
            g + at * 4 * H,
            b,
            m,
            c_at + at * c_stride,
            c_stride,
            cn + at * H,
            tc + at * H,
            hn + at * H,
        )

    _each_chunk(n, rows)
    return h_new, c_new, tanh_c


def backward(
    dh: Tensor | None,
    dc: Tensor | None,
    gates: Tensor,
    c: Tensor,
    tanh_c: Tensor,
    dh2: Tensor | None = None,
    d_out: Tensor | None = None,
    w_out: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The gradients with respect to the pre-activations ``(n, 4H)``, the bias (their sum over
    rows, accumulated in double) and the old ``c``.

    The gradient reaching ``h`` is ``dh + dh2 + outer(d_out, w_out)`` (each term optional): the
    next step's, the layer above's, and a linear output's ``d_out`` ``(n,)`` through its
    weights ``w_out`` ``(H,)``.
    """
    n, H = c.shape
    zeros = _zeros(H)

    def rows_of(t: Tensor | None) -> tuple[int, int]:  # absent: H zeros read with stride 0
        if t is None:
            return zeros.data_ptr(), 0
        t = _rows(t)
        keep.append(t)
        return t.data_ptr(), t.stride(0)

    keep: list[Tensor] = []  # contiguous copies made here live until the loops are done
    (dh_at, dh_s), (dh2_at, dh2_s), (dc_at, dc_s) = rows_of(dh), rows_of(dh2), rows_of(dc)
    c = _rows(c)
    if d_out is not None:
        d_out, w_out = d_out.contiguous(), w_out.contiguous()
    d_out_at = None if d_out is None else d_out.data_ptr()
    w_at = (zeros if w_out is None else w_out).data_ptr()
    dz, dc_prev, d_bias = torch.empty(n, 4 * H), torch.empty(n, H), torch.empty(4 * H)
    chunks = max(1, (n + CHUNK - 1) // CHUNK)  # one row of sums even for no rows
    sums = torch.empty(chunks, 4 * H, dtype=torch.float64)
    d_bias_at = d_bias.data_ptr() if chunks == 1 else None  # else the chunks' sums, added below
    g, c_at, c_s, tc = gates.data_ptr(), c.data_ptr(), c.stride(0), tanh_c.data_ptr()
    dz_at, dcp_at, sums_at = dz.data_ptr(), dc_prev.data_ptr(), sums.data_ptr()

    def rows(start: int, stop: int) -> None:
        at = 4 * start  # bytes per float
        _lib.lstm_backward(
            stop - start,
            H,
            dh_at + at * dh_s,
            dh_s,
            dh2_at + at * dh2_s,
            dh2_s,
            None if d_out_at is None else d_out_at + at,
            w_at,
            dc_at + at * dc_s,
            dc_s,
            g + at * 4 * H,
            c_at + at * c_s,
            c_s,
            tc + at * H,
            dz_at + at * 4 * H,
            dcp_at + at * H,
            sums_at + 8 * 4 * H * (start // CHUNK),
            d_bias_at,
        )

    _each_chunk(n, rows)
    if chunks > 1:  # the chunks' sums added in chunk order, whatever the thread count
        d_bias = sums.sum(0).to(torch.float32)
    return dz, d_bias, dc_prev


def whole_layers(n: int) -> bool:
    """Whether :func:`layer_forward` and :func:`layer_backward` apply to ``n`` rows: torch's
    ``sgemm_`` found, and one chunk of rows (more are split over torch's threads instead)."""
    return _sgemm and 0 < n <= CHUNK


def layer_forward(
    x: Tensor, h: Tensor, c: Tensor, weight: Tensor, bias: Tensor, scale: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """A layer step in one C call: ``[x, h]``, its matmul and :func:`forward`'s loops.

    Returns ``(h, c, tanh c)`` and, for the backward, ``xh = [x, h]`` and the gates.
    """
    n, H = c.shape
    F = x.shape[1]
    x, h, c, weight, bias = _rows(x), _rows(h), _rows(c), weight.contiguous(), bias.contiguous()
    xh, gates = torch.empty(n, F + H), torch.empty(n, 4 * H)
    h_new, c_new, tanh_c = torch.empty(n, H), torch.empty(n, H), torch.empty(n, H)
    _lib.lstm_layer_forward(
        n,
        F,
        H,
        x.data_ptr(),
        x.stride(0),
        h.data_ptr(),
        h.stride(0),
        weight.data_ptr(),
        bias.data_ptr(),
        scale.data_ptr(),
        c.data_ptr(),
        c.stride(0),
        xh.data_ptr(),
        gates.data_ptr(),
        c_new.data_ptr(),
        tanh_c.data_ptr(),
        h_new.data_ptr(),
    )
    return h_new, c_new, tanh_c, xh, gates


def layer_backward(
    dh: Tensor | None,
    dc: Tensor | None,
    gates: Tensor,
    c: Tensor,
    tanh_c: Tensor,
    xh: Tensor,
    weight: Tensor,
    need_x: bool,
    need_h: bool,
    dh2: Tensor | None = None,
    d_out: Tensor | None = None,
    w_out: Tensor | None = None,
) -> tuple[Tensor | None, Tensor | None, Tensor, Tensor, Tensor]:
    """:func:`layer_forward`'s backward in one C call (``dh``, ``dh2``, ``d_out`` and ``w_out``
    as in :func:`backward`): the gradients of ``x`` and ``h`` (``None`` unless needed), of the
    old ``c``, of the weight and of the bias."""
    n, H = c.shape
    F = xh.shape[1] - H
    zeros = _zeros(H)
    keep = [_rows(t) if t is not None else zeros for t in (dh, dh2, dc)]
    (dh_, dh2_, dc_), c = keep, _rows(c)
    d_out = None if d_out is None else d_out.contiguous()
    w_out = zeros if w_out is None else w_out.contiguous()
    weight = weight.contiguous()
    dz, dc_prev, d_bias = torch.empty(n, 4 * H), torch.empty(n, H), torch.empty(4 * H)
    sums, d_weight = torch.empty(4 * H, dtype=torch.float64), torch.empty(F + H, 4 * H)
    which = (1 if need_x else 0) + (2 if need_h else 0)
    d_xh = torch.empty(n, (F if need_x else 0) + (H if need_h else 0))
    _lib.lstm_layer_backward(
        n,
        F,
        H,
        dh_.data_ptr(),
        0 if dh is None else dh_.stride(0),  # absent: H zeros read with stride 0
        dh2_.data_ptr(),
        0 if dh2 is None else dh2_.stride(0),
        None if d_out is None else d_out.data_ptr(),
        w_out.data_ptr(),
        dc_.data_ptr(),
        0 if dc is None else dc_.stride(0),
        gates.data_ptr(),
        c.data_ptr(),
        c.stride(0),
        tanh_c.data_ptr(),
        dz.data_ptr(),
        dc_prev.data_ptr(),
        sums.data_ptr(),
        d_bias.data_ptr(),
        xh.data_ptr(),
        weight.data_ptr(),
        d_weight.data_ptr(),
        d_xh.data_ptr(),
        which,
    )
    d_x = d_xh[:, :F] if need_x else None
    d_h = (d_xh[:, F:] if need_x else d_xh) if need_h else None
    return d_x, d_h, dc_prev, d_weight, d_bias


def output(h: Tensor, weight: Tensor, bias: Tensor, scale: float, grads: Tensor | None) -> Tensor:
    """``(h @ weight + bias) · scale`` ``(n,)``, 0 where ``grads`` (when given) is exactly 0."""
    n, H = h.shape
    weight = weight.contiguous()
    grads = None if grads is None else grads.contiguous()
    out = torch.empty(n)
    _lib.lstm_output(
        n,
        H,
        h.data_ptr(),
        weight.data_ptr(),
        float(bias),
        scale,
        None if grads is None else grads.data_ptr(),
        out.data_ptr(),
    )
    return out


def output_backward(
    d_update: Tensor, scale: float, grads: Tensor | None, h: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`output`'s backward: the gradient before the scale ``(n,)`` (0 where masked), and
    those of the weight ``(H,)`` and the bias ``()`` (sums over rows in double)."""
    n, H = h.shape
    d_update = d_update.contiguous()
    grads = None if grads is None else grads.contiguous()
    d_out, d_w, d_b = torch.empty(n), torch.empty(H), torch.empty(())
    _lib.lstm_output_backward(
        n,
        H,
        d_update.data_ptr(),
        scale,
        None if grads is None else grads.data_ptr(),
        h.data_ptr(),
        d_out.data_ptr(),
        d_w.data_ptr(),
        d_b.data_ptr(),
    )
    return d_out, d_w, d_b


def log_sign(grads: Tensor, p: float) -> Tensor:
    """:func:`l2o.nets.preprocess.log_sign` of a float32 CPU tensor in one loop (no autograd)."""
    flat = grads.contiguous()
    out = torch.empty(*grads.shape, 2)
    _lib.log_sign(flat.numel(), flat.data_ptr(), math.exp(-p), p, math.exp(p), out.data_ptr())
    return out
