"""Local standard deviation of feature maps: a parameter-free texture layer for the embedding head.

Clipped box sums (``edge="clip"``) have two implementations:

* on a CPU tensor without autograd (inference, the engines): :func:`earth_embed.kernels.local_std_into`, a fused
  Numba kernel of float64 running sums along rows then columns, one pass over the features (before it, pooled
  strips and tiles of torch ops; issue 36 measured the kernel against them in ``benchmarks/texture_layer.py``);
* elsewhere (autograd, CUDA, ``torch.compile``, float64): whole-tensor sums of power-of-two runs: along one axis,
  ``s2 = s1 + s1[1:]``, ``s4 = s2 + s2[2:]``, ... then a k-pixel sum is one run per set bit of k (15 = 8 + 4 + 2 +
  1), so both texture windows (5 and 15 px) cost about ten additions per pixel and axis, with no cancellation
  (unlike cumulative sums, whose float32 differences lose digits on large windows).

Both are tested against release 5's depthwise convolutions on the released encoder's own features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import check_windows
from .kernels import local_std_into, scratch

EDGES = ("clip", "reflect")


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
        if _fused(x):
            out = torch.empty(x.shape, dtype=torch.float32, memory_format=torch.channels_last)
            local_std_into(x, [k], eps, out)
            return out
        return _clipped_std(x if x.dtype == torch.float64 else x.float(), [k], eps)[:, 0]
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

    def forward(self, x: torch.Tensor, reuse_output: bool = False) -> torch.Tensor:
        """``reuse_output``: on the fused CPU path, write into this thread's scratch tensor of the same shape
        (:func:`earth_embed.kernels.scratch`) instead of a new one, so the next such call overwrites the result:
        for a caller that is done with it before then (:class:`~earth_embed.encoder.EarthEncoder`'s forward)."""
        b, c, h, w = x.shape
        if not _fused(x):  # whole-tensor sums: differentiable, fusable, on any device
            stds = _clipped_std(x.float(), self.windows, self.eps).to(x.dtype)
            return torch.cat([x, stds.flatten(1, 2)], dim=1)
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        shape = (b, self.out_channels(c), h, w)
        out = scratch(shape, x.dtype, fmt) if reuse_output else torch.empty(shape, dtype=x.dtype, memory_format=fmt)
        local_std_into(x, self.windows, self.eps, out, with_input=True)
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


def _fused(x: torch.Tensor) -> bool:
    """Whether the Numba kernel computes the std of ``x``: a CPU tensor of float32 or narrower, no autograd, not
    being compiled."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16, torch.float16)
        and not _needs_grad(x)
        and not torch.compiler.is_compiling()
    )


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


def _runs(p: torch.Tensor, top: int, dim: int) -> dict[int, torch.Tensor]:
    """Sums of 1, 2, 4, ..., ``top`` consecutive elements of ``p`` along ``dim``."""
    runs = {1: p}
    b = 1
    while b < top:
        s = runs[b]
        runs[2 * b] = s.narrow(dim, 0, s.shape[dim] - b) + s.narrow(dim, b, s.shape[dim] - b)
        b *= 2
    return runs


def _window_sum(runs: dict[int, torch.Tensor], k: int, n: int, dim: int) -> torch.Tensor:
    """Sums of k consecutive elements starting at each i < n: one run per set bit of k."""
    total: torch.Tensor | None = None
    offset, b = 0, max(runs)
    while b:
        if k & b:
            term = runs[b].narrow(dim, offset, n)
            total = term.clone() if total is None else total.add_(term)
            offset += b
        b //= 2
    assert total is not None
    return total


def _box_sums(x: torch.Tensor, k: int) -> torch.Tensor:
    """Sums over the k x k window clipped at the border of ``(B, C, H, W)`` (whole tensor, differentiable)."""
    r, top = k // 2, _top_power([k])
    rows = _window_sum(_runs(F.pad(x, (0, 0, r, r)), top, 2), k, x.shape[-2], 2)
    return _window_sum(_runs(F.pad(rows, (r, r)), top, 3), k, x.shape[-1], 3)


def _clipped_std(x: torch.Tensor, windows: Sequence[int], eps: float) -> torch.Tensor:
    """Standard deviation over clipped k x k windows, ``(B, C, H, W) -> (B, len(windows), C, H, W)``, on whole
    tensors in ``x``'s dtype (differentiable)."""
    h, w = x.shape[-2:]
    stds = []
    for k in windows:
        inv = _inverse_counts(h, w, k, x)
        mean, mean_sq = _box_sums(x, k) * inv, _box_sums(x * x, k) * inv
        stds.append((mean_sq - mean * mean).clamp_min(0.0).add(eps).sqrt())
    return torch.stack(stds, dim=1)
