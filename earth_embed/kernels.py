"""Fused CPU kernels (Numba): the texture layer's local standard deviation and the int8 rule, each one pass
over memory instead of the ten or so whole-tensor passes that the same arithmetic costs in torch ops.

Both run on channels-last views (``(B, H, W, C)``: the channels of one pixel side by side, as the engines hold
the model's features), split their rows among Numba's threads, and take as many threads as torch is set to use
(``torch.get_num_threads()``), so ``--threads`` and ``OMP_NUM_THREADS`` bound them too; torch's own state is not
touched. Numba compiles each kernel on its first call and caches the machine code on disk (``cache=True``), so a
process pays the compilation once per machine. ``import earth_embed`` does not import Numba: the first kernel call
does.

* :func:`local_std_into`: per-channel population std over clipped k x k windows (what
  :class:`~earth_embed.local_stats.LocalStats` computes), by running sums in float64 along rows then columns:
  about eight additions per value and window whatever k, and no float32 cancellation.
* :func:`normalize_into`: raw digital numbers to the model's input (``(dn + offset) / scale``, then per band
  ``(x - mean) / std``, 0 where a pixel is not valid), in the layout the model runs in: the bits of
  :meth:`~earth_embed.encoder.EarthEncoder.normalize` and ``torch.where``.
* :func:`quantize_into`: the int8 rule of :mod:`earth_embed.quantize` (scale = max |v| / 127, code =
  round-half-even(v / scale)) from float32 or bfloat16 values straight into a ``(C, h, w)`` code array and an
  ``(h, w)`` scale array, only where ``take`` is set: the same bits as :func:`~earth_embed.quantize.quantize_tensor`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

#: Rows per parallel task of :func:`local_std_into` (each task first sums its window's rows in full, then slides).
_ROWS_PER_TASK = 32

# Numba's threads come from its "workqueue" layer, chosen here unless NUMBA_THREADING_LAYER says otherwise: its
# OpenMP layer shares torch's OpenMP runtime, and its first parallel call set torch's thread count from 1 to 2 in
# the same process (measured: torch.get_num_threads() 1 before a kernel, 2 after; the forward then changed by an
# ulp between the first run of a process and the next). The workqueue layer must not be entered from two Python
# threads at once: one kernel call at a time per process.
_LOCK = threading.Lock()


@functools.cache
def _kernels() -> Any:
    """Compile (or load from Numba's cache) the kernels; imported here so that ``import earth_embed`` stays light."""
    import numba

    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "workqueue"  # type: ignore[attr-defined]
    from . import _numba_kernels

    return _numba_kernels


_WARM: list[threading.Thread] = []


def warm_up(wait: bool = False) -> None:
    """Ready Numba in a background thread (once per process), so that the first kernel call does not pay it; with
    ``wait``, return when it is ready.

    Numba's first dispatch in a process, even of a cached kernel, builds its CPU target: 0.7-0.8 s on the 2-core
    CPU, after 0.4 s to import it (``benchmarks/region_throughput.py``'s stages row times it apart). Started by the
    local engine beside the model's load, it gained nothing measurable (issue 36, 2026-12-08: the two hold the GIL
    in turn), so the engines do not call it; a server can, at start. A kernel called meanwhile waits for it."""
    with _LOCK:
        if not _WARM:
            _WARM.append(threading.Thread(target=_warm, name="earth-embed-numba-warm-up", daemon=True))
            _WARM[0].start()
    if wait:
        _WARM[0].join()


def _warm() -> None:
    with _LOCK:
        _kernels().ready(np.zeros(1, np.float32))


@contextlib.contextmanager
def _numba_threads() -> Iterator[Any]:
    """The kernels, one call at a time, with Numba set to torch's thread count (within Numba's pool); torch's
    count is put back if a Numba layer changed it."""
    with _LOCK:
        kernels = _kernels()
        import numba

        torch_threads = torch.get_num_threads()
        pool = int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
        numba.set_num_threads(max(1, min(torch_threads, pool)))
        try:
            yield kernels
        finally:
            if torch.get_num_threads() != torch_threads:
                torch.set_num_threads(torch_threads)


_SCRATCH = threading.local()


def scratch(shape: tuple[int, ...], dtype: torch.dtype, memory_format: torch.memory_format) -> torch.Tensor:
    """A CPU tensor of this thread, handed out again by the next call with the same shape, dtype and layout (then
    overwritten by its caller): a layer's output that its caller consumes at once is not allocated, and its pages
    first touched, at every forward (at 1024 px the texture layer's is 400 MB of float32). One per thread; freed
    with the thread, or replaced by a call with another shape."""
    key = (tuple(shape), dtype, memory_format)
    if getattr(_SCRATCH, "key", None) != key:
        _SCRATCH.tensor, _SCRATCH.key = None, None  # the old one goes before the new one is allocated
        _SCRATCH.tensor, _SCRATCH.key = torch.empty(shape, dtype=dtype, memory_format=memory_format), key
    return _SCRATCH.tensor


def _nhwc(t: torch.Tensor) -> np.ndarray:
    """The ``(B, H, W, C)`` NumPy view of a CPU ``(B, C, H, W)`` tensor (no copy; any strides)."""
    return t.detach().permute(0, 2, 3, 1).numpy()


def local_std_into(
    x: torch.Tensor, windows: list[int], eps: float, out: torch.Tensor, with_input: bool = False
) -> None:
    """Write the std over each clipped k x k window of ``x`` (``(B, C, H, W)``, CPU) into ``out``
    (``(B, len(windows) * C, H, W)``: window after window, C channels each), ``sqrt(var + eps)``; with
    ``with_input``, ``out`` has C more channels first and ``x`` goes there (the texture layer's output).

    Statistics are float64 sums of ``x``'s values (bfloat16 and float16 inputs are widened, exactly), rounded
    once to ``out``'s dtype. Fastest with channels_last ``x`` and ``out`` of float32 or bfloat16 (read and written
    in place by the kernel, no copy in or out).
    """
    b, c, h, w = x.shape
    shape = (b, (len(windows) + with_input) * c, h, w)
    if out.shape != shape or out.device.type != "cpu" or x.device.type != "cpu":
        raise ValueError(f"out must be a CPU tensor of shape {shape}, got {tuple(out.shape)}")
    cl = torch.channels_last
    src = x.contiguous(memory_format=cl) if x.dtype == torch.bfloat16 else x.float().contiguous(memory_format=cl)
    direct = out.dtype in (torch.float32, torch.bfloat16) and out.permute(0, 2, 3, 1).stride()[-1] == 1
    if not direct and with_input:  # the input as it is (any dtype and layout), the statistics rounded once
        out[:, :c].copy_(x)
        local_std_into(x, windows, eps, out[:, c:])
        return
    dst = out if direct else torch.empty(out.shape, dtype=torch.float32, memory_format=cl)
    with _numba_threads() as kernels:
        kernels.local_std_nhwc(
            _nhwc(_bits(src)),
            np.asarray(windows, np.int64),
            float(eps),
            _nhwc(_bits(dst)),
            _ROWS_PER_TASK,
            c if with_input else 0,
        )
    if not direct:
        out.copy_(dst)


def _bits(t: torch.Tensor) -> torch.Tensor:
    """A bfloat16 tensor as its int16 bits (NumPy has no bfloat16), any other as it is."""
    return t.view(torch.int16) if t.dtype == torch.bfloat16 else t


def quantize_into(values: torch.Tensor, codes: np.ndarray, scales: np.ndarray, take: np.ndarray | None = None) -> None:
    """Encode ``values`` (``(h, w, C)`` float32 or bfloat16 on the CPU, any strides: one image's pixels with
    their channels) by the int8 rule into ``codes`` (``(C, h, w)`` int8) and ``scales`` (``(h, w)`` float32),
    at the pixels where ``take`` is True (all when None). A pixel with a non-finite value gets
    :data:`~earth_embed.quantize.NODATA` in every band and a NaN scale, as in ``quantize_tensor``."""
    h, w, c = values.shape
    if codes.shape != (c, h, w) or scales.shape != (h, w) or codes.dtype != np.int8 or scales.dtype != np.float32:
        raise ValueError(f"codes must be int8 {(c, h, w)} and scales float32 {(h, w)}")
    if values.dtype == torch.bfloat16:  # bf16 has no NumPy dtype: its bits, widened in the kernel
        array = values.detach().view(torch.int16).numpy()
    elif values.dtype == torch.float32:
        array = values.detach().numpy()
    else:
        raise ValueError(f"values must be float32 or bfloat16, got {values.dtype}")
    mask = np.ones((h, w), np.bool_) if take is None else np.asarray(take, np.bool_)
    with _numba_threads() as kernels:
        kernel = kernels.quantize_bf16 if values.dtype == torch.bfloat16 else kernels.quantize_f32
        kernel(array, codes, scales, mask)


def normalize_into(
    dn: np.ndarray, valid: np.ndarray, offset: float, scale: float, mean: np.ndarray, std: np.ndarray, out: torch.Tensor
) -> None:
    """Write the normalised ``dn`` (``(C, h, w)`` float32 digital numbers) into ``out`` (``(C, h, w)`` float32 CPU
    tensor, any layout; channels_last is written in one pass): ``((dn + offset) / scale - mean[c]) / std[c]`` in
    float32 where ``valid`` (``(h, w)``), 0 elsewhere (a NaN or nodata pixel enters the model as the band mean)."""
    if out.dtype != torch.float32 or out.shape != dn.shape or out.device.type != "cpu":
        raise ValueError(f"out must be a float32 CPU tensor of shape {dn.shape}, got {out.dtype} {tuple(out.shape)}")
    values = np.asarray(dn, np.float32)
    with _numba_threads() as kernels:
        kernels.normalize_chw(
            values,
            np.asarray(valid, np.bool_),
            np.float32(offset),
            np.float32(scale),
            np.asarray(mean, np.float32),
            np.asarray(std, np.float32),
            out.detach().permute(1, 2, 0).numpy(),
        )
