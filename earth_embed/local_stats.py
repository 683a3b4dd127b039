"""Local standard deviation of feature maps: a parameter-free texture layer for the embedding head.

Clipped box sums (``edge="clip"``) are sums of power-of-two runs: along one axis, ``s2 = s1 + s1[1:]``,
``s4 = s2 + s2[2:]``, ... then a k-pixel sum is one run per set bit of k (15 = 8 + 4 + 2 + 1), so both
texture windows (5 and 15 px) cost about ten additions per pixel and axis, with no cancellation (unlike
cumulative sums, whose float32 differences lose digits on large windows). With autograd the layer runs these
sums on whole tensors. Without autograd it runs in one of two ways, by the input's memory layout:

* channels_last (the engines' default): strips of rows, averaged over k rows then k columns by ATen's
  channels_last average pooling (``count_include_pad=False`` clips the window at the border), so each step is
  one large parallel region. Many short parallel regions made the layer many times slower on cores shared with
  other busy processes (OpenMP's default active wait): on 1024 x 1024 x 32 features at 2 threads, load 5 on 2
  cores, the tiles below took 16.0 s and these strips 5.2 s; at 1 thread 4.24 s and 4.26 s
  (benchmarks/texture_layer.py, 2026-12-07, docs/results/texture_layer_issue36_*.json).
* contiguous: tiles of a few rows of one channel, into buffers reused from tile to tile, so the memory
  traffic stays in the CPU caches (ATen's average pooling of contiguous tensors is a scalar loop, 15-20x
  slower than channels_last's: measured).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import check_windows

EDGES = ("clip", "reflect")

#: Elements per tile buffer on the no-grad path (1 MiB of float32, so a tile's buffers stay in cache):
#: measured on 2 cores (1024 x 1024 x 32 features, 2 threads, quiet machine) 0.35 s against 0.51 s for 4x it.
_TILE_ELEMENTS = 1 << 18

#: Channels per tile of a channels_last input (32: 0.81 s against 1.0 s for 16, 1 thread, 1024 x 1024 x 32).
_CHANNELS_LAST_TILE = 32

#: Elements per strip buffer of a channels_last input (2**22: 128 rows of 1024 px x 32 features, five buffers of
#: 16 MiB). Measured at 2 threads on a loaded 2-core VM (1024 x 1024 x 32): 64 rows 5.0 s, 128 rows 3.4 s, 256 rows
#: 3.5 s; at 1 thread 64 and 128 rows alike.
_STRIP_ELEMENTS = 1 << 22


def _tile_elements() -> int:
    """Elements per tile buffer: :data:`_TILE_ELEMENTS`, or 2**17 per thread where that is more (each op is
    split among the threads; many threads on small shares would spend their time at barriers; not measured
    beyond 2 threads)."""
    return max(_TILE_ELEMENTS, torch.get_num_threads() << 17)


def box_mean(x: torch.Tensor, k: int, edge: str = "clip") -> torch.Tensor:
    """Mean over the k x k window centred on each pixel of ``(B, C, H, W)``.

    ``edge="clip"`` cuts the window at the border and divides by the pixels inside it (the texture layer;
    box sums by power-of-two runs, see the module docstring); ``edge="reflect"`` mirrors the image at its
    edges first (the hand-made stack; k // 2 < each side; average pooling, bit for bit the stack's
    published numbers).
    """
    if edge not in EDGES:
        raise ValueError(f"edge must be one of {EDGES}, got {edge!r}")
    r = k // 2
    if edge == "reflect":
        xp = F.pad(x, (r, r, r, r), mode="reflect")
        return F.avg_pool2d(F.avg_pool2d(xp, (1, k), stride=1), (k, 1), stride=1)
    return _box_sums(x, k) * _inverse_counts(x.shape[-2], x.shape[-1], k, x)


def local_std(x: torch.Tensor, k: int, edge: str = "clip", eps: float = 0.0) -> torch.Tensor:
    """Per-channel standard deviation over k x k windows of ``(B, C, H, W)`` (edges as :func:`box_mean`).

    ``edge="clip"`` computes in float32 (float64 stays float64) and returns that dtype.
    """
    if edge == "clip":
        if x.dtype == torch.float64 or _needs_grad(x):
            return _clipped_std(x if x.dtype == torch.float64 else x.float(), [k], eps, None)[:, 0]
        out = torch.empty(x.shape[0], 1, *x.shape[1:], dtype=torch.float32, device=x.device)
        return _clipped_std(x, [k], eps, out)[:, 0]
    mean, mean_sq = box_mean(x, k, edge), box_mean(x * x, k, edge)
    return (mean_sq - mean * mean).clamp_min(0.0).add(eps).sqrt()


class LocalStats(nn.Module):
    """Concatenate, for each window size k, the per-channel standard deviation over k x k pixels.

    ``(B, C, H, W) -> (B, C * (1 + len(windows)), H, W)``: the input first, then one block of C
    channels per window. Windows are clipped at the image border (no padding counted), and the
    variance is computed in float32 whatever the input dtype (autocast included), so mixed precision
    cannot make it negative. A channels_last input gives a channels_last output.
    """

    def __init__(self, windows: Sequence[int], eps: float = 1e-5) -> None:
        super().__init__()
        self.windows = check_windows(windows)
        self.eps = eps

    def out_channels(self, in_channels: int) -> int:
        """Channels out for ``in_channels`` in."""
        return in_channels * (1 + len(self.windows))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if _needs_grad(x) or torch.compiler.is_compiling():  # whole-tensor sums: differentiable, fusable
            stds = _clipped_std(x.float(), self.windows, self.eps, None).to(x.dtype)
            return torch.cat([x, stds.flatten(1, 2)], dim=1)
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        out = torch.empty(b, self.out_channels(c), h, w, dtype=x.dtype, device=x.device, memory_format=fmt)
        out[:, :c].copy_(x)
        stds = out[:, c:].unflatten(1, (len(self.windows), c))
        if channels_last:
            _pooled_std_strips(x, self.windows, self.eps, stds)
        else:
            _clipped_std(x, self.windows, self.eps, stds)
        return out

    def extra_repr(self) -> str:
        return f"windows={self.windows}"


def _box_mean_reference(x: torch.Tensor, k: int) -> torch.Tensor:
    """The clipped box mean of releases 4 and 5 (two depthwise convolutions at full resolution): the
    reference the fast sums are tested against (tests/test_local_stats.py, benchmarks/texture_layer.py)."""
    r = k // 2
    c, (height, width) = x.shape[1], x.shape[-2:]
    kernel = x.new_ones(c, 1, k, 1)
    sums = F.conv2d(F.conv2d(x, kernel, padding=(r, 0), groups=c), kernel.view(c, 1, 1, k), padding=(0, r), groups=c)
    box = x.new_ones(1, 1, k)
    rows, cols = (F.conv1d(x.new_ones(1, 1, n), box, padding=r)[0, 0] for n in (height, width))
    return sums / (rows[:, None] * cols[None, :])


def _local_stats_reference(x: torch.Tensor, windows: Sequence[int], eps: float) -> torch.Tensor:
    """:class:`LocalStats`'s forward of releases 4 and 5, on :func:`_box_mean_reference`."""
    h = x.float()
    parts = [x]
    for k in windows:
        mean, mean_sq = _box_mean_reference(h, k), _box_mean_reference(h * h, k)
        parts.append((mean_sq - mean * mean).clamp_min(0.0).add(eps).sqrt().to(x.dtype))
    return torch.cat(parts, dim=1)


def _needs_grad(x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


def _counts(n: int, r: int, like: torch.Tensor) -> torch.Tensor:
    """Pixels inside the window of radius r clipped to [0, n), for each of the n positions."""
    i = torch.arange(n, device=like.device)
    return ((i + r).clamp(max=n - 1) - (i - r).clamp(min=0) + 1).to(like.dtype)


def _inverse_counts(h: int, w: int, k: int, like: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` reciprocal of the pixels inside each clipped k x k window."""
    r = k // 2
    return (_counts(h, r, like)[:, None] * _counts(w, r, like)[None, :]).reciprocal_()


def _top_power(windows: Sequence[int]) -> int:
    top = 1
    while top * 2 <= max(windows):
        top *= 2
    return top


def _runs(p: torch.Tensor, top: int, dim: int, bufs: Sequence[torch.Tensor] | None) -> dict[int, torch.Tensor]:
    """Sums of 1, 2, 4, ..., ``top`` consecutive elements of ``p`` along ``dim`` (into ``bufs`` if given)."""
    runs = {1: p}
    b = 1
    for i in range(top.bit_length() - 1):
        s = runs[b]
        n = s.shape[dim] - b
        if bufs is None:
            runs[2 * b] = s.narrow(dim, 0, n) + s.narrow(dim, b, n)
        else:
            runs[2 * b] = torch.add(s.narrow(dim, 0, n), s.narrow(dim, b, n), out=bufs[i].narrow(dim, 0, n))
        b *= 2
    return runs


def _window_sum(
    runs: dict[int, torch.Tensor], k: int, start: int, n: int, dim: int, out: torch.Tensor | None
) -> torch.Tensor:
    """Sums of k consecutive elements starting at ``start + i``, i < n: one run per set bit of k."""
    terms = []
    offset, b = start, max(runs)
    while b:
        if k & b:
            terms.append(runs[b].narrow(dim, offset, n))
            offset += b
        b //= 2
    if out is None:
        total = terms[0].clone() if len(terms) == 1 else terms[0] + terms[1]
    elif len(terms) == 1:
        total = out.copy_(terms[0])
    else:
        total = torch.add(terms[0], terms[1], out=out)
    for t in terms[2:]:
        total = total.add_(t)
    return total


def _box_sums(x: torch.Tensor, k: int) -> torch.Tensor:
    """Sums over the k x k window clipped at the border of ``(B, C, H, W)`` (whole tensor, differentiable)."""
    r, top = k // 2, _top_power([k])
    rows = _window_sum(_runs(F.pad(x, (0, 0, r, r)), top, 2, None), k, 0, x.shape[-2], 2, None)
    return _window_sum(_runs(F.pad(rows, (r, r)), top, 3, None), k, 0, x.shape[-1], 3, None)


def _clipped_std(x: torch.Tensor, windows: Sequence[int], eps: float, out: torch.Tensor | None) -> torch.Tensor:
    """Standard deviation over clipped k x k windows, ``(B, C, H, W) -> (B, len(windows), C, H, W)``.

    With ``out`` (a ``(B, len(windows), C, H, W)`` view, any dtype) it writes there, tile by tile, and
    does not support autograd; without, it computes on whole tensors in ``x``'s dtype.
    """
    if out is not None:
        _clipped_std_tiled(x, windows, eps, out)
        return out
    h, w = x.shape[-2:]
    stds = []
    for k in windows:
        inv = _inverse_counts(h, w, k, x)
        mean, mean_sq = _box_sums(x, k) * inv, _box_sums(x * x, k) * inv
        stds.append((mean_sq - mean * mean).clamp_min(0.0).add(eps).sqrt())
    return torch.stack(stds, dim=1)


def _clipped_std_tiled(x: torch.Tensor, windows: Sequence[int], eps: float, out: torch.Tensor) -> None:
    """:func:`_clipped_std` into ``out``, in float32, tile by tile.

    The image is seen as ``(B, G, H, W, I)``: G = C, I = 1 for a contiguous input, G = 1, I = C for a
    channels_last one (then every step runs along the contiguous channels). A tile is ``g`` of G x ``t``
    rows x ``i`` of I. Per tile: the rows with a halo of R = max(windows) // 2 (zeros outside the image)
    and their squares, runs along rows, each window's row sums into a buffer with R zero columns each
    side, runs along columns, then mean, variance and square root into ``out``. Buffers are allocated once.
    """
    b, c, h, w = x.shape
    nwin, big_r, top = len(windows), max(windows) // 2, _top_power(windows)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        x6, o6 = x.permute(0, 2, 3, 1)[:, None], out.permute(0, 1, 3, 4, 2)[:, :, None]
        big_g, big_i, i = 1, c, min(c, _CHANNELS_LAST_TILE)
    else:
        x6, o6 = x[..., None], out[..., None]
        big_g, big_i, i = c, 1, 1
    row, tile = b * 2 * w * i, _tile_elements()  # elements per image row of one of G (values and squares)
    if row * (h + 2 * big_r) <= tile:
        t, g = h, max(1, min(big_g, tile // (row * (h + 2 * big_r))))
    else:
        t, g = min(h, max(2 * big_r, tile // row)), 1
    p_buf = torch.zeros(b, 2, g, t + 2 * big_r, w, i, dtype=torch.float32, device=x.device)
    p_runs = [torch.empty_like(p_buf) for _ in range(top.bit_length() - 1)]
    q_buf = p_buf.new_zeros(b, nwin, 2, g, t, w + 2 * big_r, i)
    q_runs = [torch.empty_like(q_buf) for _ in range(top.bit_length() - 1)]
    sums = p_buf.new_empty(b, nwin, 2, g, t, w, i)
    var = p_buf.new_empty(b, nwin, g, t, w, i)
    inv = torch.stack([_inverse_counts(h, w, k, p_buf) for k in windows])[:, None, None, :, :, None]
    for g0, i0 in ((g0, i0) for g0 in range(0, big_g, g) for i0 in range(0, big_i, i)):
        gc, ic = min(g, big_g - g0), min(i, big_i - i0)
        for r0 in range(0, h, t):
            tc = min(t, h - r0)
            lo, hi = max(r0 - big_r, 0), min(r0 + tc + big_r, h)
            a = lo - (r0 - big_r)  # first tile row holding image row lo
            p = p_buf[:, :, :gc, : tc + 2 * big_r, :, :ic]
            p[:, :, :, :a].zero_()
            p[:, :, :, a + hi - lo :].zero_()
            vals, squares = p[:, 0, :, a : a + hi - lo], p[:, 1, :, a : a + hi - lo]
            vals.copy_(x6[:, g0 : g0 + gc, lo:hi, :, i0 : i0 + ic])
            torch.mul(vals, vals, out=squares)
            row_runs = _runs(p, top, 3, [r[:, :, :gc, : tc + 2 * big_r, :, :ic] for r in p_runs])
            q = q_buf[:, :, :, :gc, :tc, :, :ic]
            for j, k in enumerate(windows):
                _window_sum(row_runs, k, big_r - k // 2, tc, 3, q[:, j, :, :, :, big_r : big_r + w])
            col_runs = _runs(q, top, 5, [r[:, :, :, :gc, :tc, :, :ic] for r in q_runs])
            s = sums[:, :, :, :gc, :tc, :, :ic]
            for j, k in enumerate(windows):
                _window_sum({n: r[:, j] for n, r in col_runs.items()}, k, big_r - k // 2, w, 4, s[:, j])
            s.mul_(inv[:, :, :, r0 : r0 + tc])
            v = var[:, :, :gc, :tc, :, :ic]
            torch.addcmul(s[:, :, 1], s[:, :, 0], s[:, :, 0], value=-1.0, out=v)
            dst = o6[:, :, g0 : g0 + gc, r0 : r0 + tc, :, i0 : i0 + ic]
            torch.sqrt(v.clamp_(min=0.0).add_(eps), out=dst)


def _strip_rows(b: int, c: int, w: int) -> int:
    """Rows per strip of :func:`_pooled_std_strips`: :data:`_STRIP_ELEMENTS` per buffer, at least one row."""
    return max(1, _STRIP_ELEMENTS // (b * c * w))


def _pooled_std_strips(x: torch.Tensor, windows: Sequence[int], eps: float, out: torch.Tensor) -> None:
    """:func:`_clipped_std` of a channels_last ``x`` into ``out`` (``(B, len(windows), C, H, W)``), in float32,
    strip by strip (no autograd).

    Per strip of T rows: the rows it needs (a halo of R = max(windows) // 2, clipped to the image) and their
    squares; then for each window k, each of the two averaged along rows (k x 1) then columns (1 x k) by average
    pooling with ``count_include_pad=False``, so each mean divides by the pixels inside the image; variance,
    square root into ``out``. A strip that touches the image's top or bottom pads k // 2 rows on both sides and
    keeps the rows it owns (the padded side's far rows are not kept). Buffers are allocated once, channels_last.
    """
    b, c, h, w = x.shape
    big_r, t = max(windows) // 2, min(h, _strip_rows(b, c, w))

    def buffer(rows: int) -> torch.Tensor:
        return torch.empty(b, c, rows, w, dtype=torch.float32, device=x.device, memory_format=torch.channels_last)

    vals_buf = None if x.dtype == torch.float32 else buffer(t + 2 * big_r)
    squares_buf, rows_buf, mean, mean_sq = buffer(t + 2 * big_r), buffer(t + 2 * big_r), buffer(t), buffer(t)
    pool = torch.ops.aten.avg_pool2d.out
    for r0 in range(0, h, t):
        tc = min(t, h - r0)
        lo, hi = max(r0 - big_r, 0), min(r0 + tc + big_r, h)
        vals = x[:, :, lo:hi] if vals_buf is None else vals_buf[:, :, : hi - lo].copy_(x[:, :, lo:hi])
        squares = torch.mul(vals, vals, out=squares_buf[:, :, : hi - lo])
        for j, k in enumerate(windows):
            r = k // 2
            a, z = max(r0 - r, lo), min(r0 + tc + r, hi)  # the rows this window needs
            pad = r if a == 0 or z == h else 0
            first = r0 - (a + r - pad)  # the pooled row centred on image row r0
            n = z - a + 2 * (pad - r)
            for src, dst in ((vals, mean), (squares, mean_sq)):
                rows = pool(
                    src[:, :, a - lo : z - lo], [k, 1], [1, 1], [pad, 0], False, False, None, out=rows_buf[:, :, :n]
                )
                pool(rows[:, :, first : first + tc], [1, k], [1, 1], [0, r], False, False, None, out=dst[:, :, :tc])
            m, var = mean[:, :, :tc], mean_sq[:, :, :tc]
            var.addcmul_(m, m, value=-1.0)
            torch.sqrt(var.clamp_(min=0.0).add_(eps), out=out[:, j, :, r0 : r0 + tc])
