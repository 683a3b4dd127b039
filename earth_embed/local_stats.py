"""Local standard deviation of feature maps: a parameter-free texture layer for the embedding head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import check_windows

EDGES = ("clip", "reflect")


def box_mean(x: torch.Tensor, k: int, edge: str = "clip") -> torch.Tensor:
    """Mean over the k x k window centred on each pixel of ``(B, C, H, W)``, as two 1-D passes.

    ``edge="clip"`` cuts the window at the border and divides by the pixels inside it (the texture layer:
    depthwise box sums, the faster form on CPU); ``edge="reflect"`` mirrors the image at its edges first
    (the hand-made stack; k // 2 < each side; average pooling, bit for bit the stack's published numbers).
    """
    if edge not in EDGES:
        raise ValueError(f"edge must be one of {EDGES}, got {edge!r}")
    r = k // 2
    if edge == "reflect":
        xp = F.pad(x, (r, r, r, r), mode="reflect")
        return F.avg_pool2d(F.avg_pool2d(xp, (1, k), stride=1), (k, 1), stride=1)
    c, (height, width) = x.shape[1], x.shape[-2:]
    kernel = x.new_ones(c, 1, k, 1)
    sums = F.conv2d(F.conv2d(x, kernel, padding=(r, 0), groups=c), kernel.view(c, 1, 1, k), padding=(0, r), groups=c)
    box = x.new_ones(1, 1, k)
    rows, cols = (F.conv1d(x.new_ones(1, 1, n), box, padding=r)[0, 0] for n in (height, width))
    return sums / (rows[:, None] * cols[None, :])


def local_std(x: torch.Tensor, k: int, edge: str = "clip", eps: float = 0.0) -> torch.Tensor:
    """Per-channel standard deviation over k x k windows of ``(B, C, H, W)`` (edges as :func:`box_mean`)."""
    mean, mean_sq = box_mean(x, k, edge), box_mean(x * x, k, edge)
    return (mean_sq - mean * mean).clamp_min(0.0).add(eps).sqrt()


class LocalStats(nn.Module):
    """Concatenate, for each window size k, the per-channel standard deviation over k x k pixels.

    ``(B, C, H, W) -> (B, C * (1 + len(windows)), H, W)``: the input first, then one block of C
    channels per window. Windows are clipped at the image border (no padding counted), and the
    variance is computed in float32 whatever the input dtype, so mixed precision cannot make it negative.
    """

    def __init__(self, windows: Sequence[int], eps: float = 1e-5) -> None:
        super().__init__()
        self.windows = check_windows(windows)
        self.eps = eps

    def out_channels(self, in_channels: int) -> int:
        """Channels out for ``in_channels`` in."""
        return in_channels * (1 + len(self.windows))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        parts = [x]
        for k in self.windows:
            parts.append(local_std(h, k, eps=self.eps).to(x.dtype))
        return torch.cat(parts, dim=1)

    def extra_repr(self) -> str:
        return f"windows={self.windows}"
