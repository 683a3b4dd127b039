"""The Numba code behind :mod:`earth_embed.kernels` (imported on the first kernel call: it imports Numba).

Arrays are NumPy views of torch tensors, channels last; see :mod:`earth_embed.kernels` for the contracts.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_QMAX = np.float32(127.0)  # earth_embed.quantize.QMAX
_NODATA = np.int8(-128)  # earth_embed.quantize.NODATA


@nb.njit(parallel=True, cache=True)
def local_std_nhwc(x, windows, eps, out, rows_per_task):  # pragma: no cover - compiled
    """``out[b, r, q, j * C + c]`` = std of ``x[b, :, :, c]`` over the k_j x k_j window at (r, q), clipped."""
    n, h, w, c = x.shape
    nwin = windows.shape[0]
    per_image = (h + rows_per_task - 1) // rows_per_task
    for task in nb.prange(n * per_image):
        b = task // per_image
        r0 = (task % per_image) * rows_per_task
        r1 = min(h, r0 + rows_per_task)
        cols = np.zeros((nwin, 2, w, c))  # per window: sums of x and x * x over the window's rows, per column
        acc = np.empty((2, c))
        for j in range(nwin):
            rad = windows[j] // 2
            for i in range(max(0, r0 - rad), min(h, r0 + rad + 1)):
                for q in range(w):
                    for ch in range(c):
                        v = np.float64(x[b, i, q, ch])
                        cols[j, 0, q, ch] += v
                        cols[j, 1, q, ch] += v * v
        for r in range(r0, r1):
            for j in range(nwin):
                rad = windows[j] // 2
                if r > r0:  # slide the rows: the one entering below, the one leaving above
                    if r + rad < h:
                        for q in range(w):
                            for ch in range(c):
                                v = np.float64(x[b, r + rad, q, ch])
                                cols[j, 0, q, ch] += v
                                cols[j, 1, q, ch] += v * v
                    if r - rad - 1 >= 0:
                        for q in range(w):
                            for ch in range(c):
                                v = np.float64(x[b, r - rad - 1, q, ch])
                                cols[j, 0, q, ch] -= v
                                cols[j, 1, q, ch] -= v * v
                rows = min(h, r + rad + 1) - max(0, r - rad)
                acc[:] = 0.0
                for q in range(min(w, rad + 1)):
                    for ch in range(c):
                        acc[0, ch] += cols[j, 0, q, ch]
                        acc[1, ch] += cols[j, 1, q, ch]
                for q in range(w):
                    if q > 0:  # slide the columns
                        if q + rad < w:
                            for ch in range(c):
                                acc[0, ch] += cols[j, 0, q + rad, ch]
                                acc[1, ch] += cols[j, 1, q + rad, ch]
                        if q - rad - 1 >= 0:
                            for ch in range(c):
                                acc[0, ch] -= cols[j, 0, q - rad - 1, ch]
                                acc[1, ch] -= cols[j, 1, q - rad - 1, ch]
                    inv = 1.0 / (rows * (min(w, q + rad + 1) - max(0, q - rad)))
                    for ch in range(c):
                        mean = acc[0, ch] * inv
                        var = acc[1, ch] * inv - mean * mean
                        out[b, r, q, j * c + ch] = np.sqrt(max(var, 0.0) + eps)


@nb.njit(inline="always")
def _encode_row(buf, codes, scales, take, r, tmp):  # pragma: no cover - compiled
    """The int8 rule on row ``r``'s pixels ``buf`` (``(w, C)`` float32, contiguous) into ``codes[:, r]`` and
    ``scales[r]`` where ``take[r]``; ``tmp``: a ``(w, C)`` int8 scratch row. Branch-free inner loops over the C
    values of a pixel (vectorised): max |v| on the float32 bits (non-negative floats order as integers; inf and
    NaN order above every finite value), then the codes, then one transposed copy into the ``(C, h, w)`` codes."""
    w, c = buf.shape
    bits = buf.view(np.uint32)
    top_bits = np.empty(1, np.uint32)
    top_value = top_bits.view(np.float32)  # max |v| as a float: the same bits
    for q in range(w):
        if not take[r, q]:
            continue
        top = np.uint32(0)
        for ch in range(c):
            top = max(top, bits[q, ch] & np.uint32(0x7FFFFFFF))
        if top >= np.uint32(0x7F800000):  # inf or NaN in some band: nodata
            for ch in range(c):
                tmp[q, ch] = _NODATA
            scales[r, q] = np.nan
            continue
        top_bits[0] = top
        scale = top_value[0] / _QMAX
        div = scale if scale > 0 else np.float32(1.0)
        for ch in range(c):
            tmp[q, ch] = np.int8(min(max(np.rint(buf[q, ch] / div), -_QMAX), _QMAX))
        scales[r, q] = scale
    for ch in range(c):
        for q in range(w):
            if take[r, q]:
                codes[ch, r, q] = tmp[q, ch]


@nb.njit(parallel=True, cache=True)
def quantize_f32(values, codes, scales, take):  # pragma: no cover - compiled
    h, w, c = values.shape
    for r in nb.prange(h):
        buf = np.empty((w, c), np.float32)
        tmp = np.empty((w, c), np.int8)
        for q in range(w):
            for ch in range(c):
                buf[q, ch] = values[r, q, ch]
        _encode_row(buf, codes, scales, take, r, tmp)


@nb.njit(parallel=True, cache=True)
def quantize_bf16(values, codes, scales, take):  # pragma: no cover - compiled
    """``values``: the int16 bits of bfloat16 numbers (the upper half of a float32's)."""
    h, w, c = values.shape
    for r in nb.prange(h):
        bits = np.empty((w, c), np.uint32)
        tmp = np.empty((w, c), np.int8)
        for q in range(w):
            for ch in range(c):
                bits[q, ch] = np.uint32(np.int32(values[r, q, ch]) & 0xFFFF) << np.uint32(16)
        _encode_row(bits.view(np.float32), codes, scales, take, r, tmp)


@nb.njit(parallel=True, cache=True)
def normalize_chw(dn, valid, offset, scale, mean, std, out):  # pragma: no cover - compiled
    """``out[r, q, c]`` = ((dn[c, r, q] + offset) / scale - mean[c]) / std[c] in float32 where ``valid``, else 0."""
    c, h, w = dn.shape
    for r in nb.prange(h):
        for q in range(w):
            if valid[r, q]:
                for ch in range(c):
                    out[r, q, ch] = ((dn[ch, r, q] + offset) / scale - mean[ch]) / std[ch]
            else:
                for ch in range(c):
                    out[r, q, ch] = np.float32(0.0)
