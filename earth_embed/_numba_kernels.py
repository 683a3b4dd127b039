"""The Numba code behind :mod:`earth_embed.kernels` (imported on the first kernel call: it imports Numba).

Arrays are NumPy views of torch tensors, channels last; see :mod:`earth_embed.kernels` for the contracts. A
bfloat16 tensor arrives as its int16 bits (NumPy has no bfloat16): :func:`_load_row` widens them, :func:`_store_row`
rounds float32 to them (to nearest, ties to even, as torch does).
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba.core import types
from numba.extending import overload

_QMAX = np.float32(127.0)  # earth_embed.quantize.QMAX
_NODATA = np.int8(-128)  # earth_embed.quantize.NODATA


@nb.njit(parallel=True, cache=True)
def local_std_nhwc(x, windows, eps, out, rows_per_task, first):  # pragma: no cover - compiled
    """``out[b, r, q, first + j * C + c]`` = std of ``x[b, :, :, c]`` over the k_j x k_j window at (r, q), clipped;
    with ``first`` = C, ``out[..., :C]`` = ``x`` as well."""
    n, h, w, c = x.shape
    nwin = windows.shape[0]
    per_image = (h + rows_per_task - 1) // rows_per_task
    for task in nb.prange(n * per_image):
        b = task // per_image
        r0 = (task % per_image) * rows_per_task
        r1 = min(h, r0 + rows_per_task)
        sums = np.zeros((nwin, w, c))  # per window: sums of x over the window's rows, per column and channel
        squares = np.zeros((nwin, w, c))  # and of x * x
        row = np.empty((w, c))  # one image row in float64
        bits = np.empty((w, max(c, first + nwin * c)), np.uint32)  # scratch for bfloat16 bits
        acc = np.empty(c)
        acc2 = np.empty(c)
        res = np.empty((w, first + nwin * c), np.float32)
        for j in range(nwin):
            rad = windows[j] // 2
            for i in range(max(0, r0 - rad), min(h, r0 + rad + 1)):
                _add_row(x[b, i], row, bits, sums[j], squares[j], 1.0)
        for r in range(r0, r1):
            for j in range(nwin):
                rad = windows[j] // 2
                if r > r0:  # slide the rows: the one entering below, the one leaving above
                    if r + rad < h:
                        _add_row(x[b, r + rad], row, bits, sums[j], squares[j], 1.0)
                    if r - rad - 1 >= 0:
                        _add_row(x[b, r - rad - 1], row, bits, sums[j], squares[j], -1.0)
                _row_std(
                    sums[j], squares[j], min(h, r + rad + 1) - max(0, r - rad), rad, eps, acc, acc2, res, first + j * c
                )
            if first:
                _load_row(x[b, r], row, bits)
                for q in range(w):
                    for k in range(first):
                        res[q, k] = np.float32(row[q, k])
            _store_row(res, out[b, r], bits)


def _load_row(src, row, bits):  # pragma: no cover - compiled (the implementations below)
    """Copy one image row ``src`` (``(w, C)``: float32, or bfloat16 bits) into the float64 ``row``."""


@overload(_load_row, inline="always")
def _load_row_impl(src, row, bits):  # pragma: no cover - compiled
    if isinstance(src.dtype, types.Integer):

        def widen(src, row, bits):
            w, c = row.shape
            scratch = bits[:, :c]
            for q in range(w):
                for ch in range(c):
                    scratch[q, ch] = np.uint32(np.int32(src[q, ch]) & 0xFFFF) << np.uint32(16)
            for q in range(w):
                values = bits[q].view(np.float32)
                for ch in range(c):
                    row[q, ch] = values[ch]

        return widen

    def copy(src, row, bits):
        w, c = row.shape
        for q in range(w):
            for ch in range(c):
                row[q, ch] = src[q, ch]

    return copy


def _store_row(res, dst, bits):  # pragma: no cover - compiled (the implementations below)
    """Write the float32 ``res`` (``(w, K)``) into one output row ``dst``: float32, or bfloat16 bits."""


@overload(_store_row, inline="always")
def _store_row_impl(res, dst, bits):  # pragma: no cover - compiled
    if isinstance(dst.dtype, types.Integer):

        def round_to_bf16(res, dst, bits):
            w, k = res.shape
            for q in range(w):
                u = res[q].view(np.uint32)
                for i in range(k):
                    dst[q, i] = np.int16(
                        (u[i] + np.uint32(0x7FFF) + ((u[i] >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
                    )

        return round_to_bf16

    def copy(res, dst, bits):
        w, k = res.shape
        for q in range(w):
            for i in range(k):
                dst[q, i] = res[q, i]

    return copy


@nb.njit(inline="always")
def _add_row(src, row, bits, sums, squares, sign):  # pragma: no cover - compiled
    """Add (``sign`` 1) or take away (-1) one image row ``src`` (``(w, C)``) and its squares to the column sums."""
    w, c = sums.shape
    _load_row(src, row, bits)
    for q in range(w):
        for ch in range(c):
            v = row[q, ch]
            sums[q, ch] += sign * v
            squares[q, ch] += sign * (v * v)


@nb.njit(inline="always")
def _row_std(sums, squares, rows, rad, eps, acc, acc2, res, first):  # pragma: no cover - compiled
    """Slide a ``2 rad + 1`` window along the column sums of one output row into ``res[:, first:first + C]``."""
    w, c = sums.shape
    acc[:] = 0.0
    acc2[:] = 0.0
    for q in range(min(w, rad + 1)):
        for ch in range(c):
            acc[ch] += sums[q, ch]
            acc2[ch] += squares[q, ch]
    for q in range(w):
        if q > 0:
            if q + rad < w:
                for ch in range(c):
                    acc[ch] += sums[q + rad, ch]
                    acc2[ch] += squares[q + rad, ch]
            if q - rad - 1 >= 0:
                for ch in range(c):
                    acc[ch] -= sums[q - rad - 1, ch]
                    acc2[ch] -= squares[q - rad - 1, ch]
        inv = 1.0 / (rows * (min(w, q + rad + 1) - max(0, q - rad)))
        for ch in range(c):
            mean = acc[ch] * inv
            res[q, first + ch] = np.sqrt(np.float32(max(acc2[ch] * inv - mean * mean, 0.0) + eps))


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


@nb.njit(cache=True)
def ready(x):  # pragma: no cover - compiled
    """Nothing: its first call builds Numba's CPU target (:func:`earth_embed.kernels.warm_up`)."""
    return x.size
