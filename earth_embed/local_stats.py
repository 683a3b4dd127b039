"""Local standard deviation of feature maps: a parameter-free texture layer for the embedding head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import check_windows


def _box_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over the k x k window clipped at the border: two 1-D depthwise box sums over the pixel counts."""
    c, (height, width), r = x.shape[1], x.shape[-2:], k // 2
    kernel = x.new_ones(c, 1, k, 1)
    sums = F.conv2d(F.conv2d(x, kernel, padding=(r, 0), groups=c), kernel.view(c, 1, 1, k), padding=(0, r), groups=c)
    box = x.new_ones(1, 1, k)
    rows, cols = (F.conv1d(x.new_ones(1, 1, n), box, padding=r)[0, 0] for n in (height, width))
    return sums / (rows[:, None] * cols[None, :])


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
            mean, mean_sq = _box_mean(h, k), _box_mean(h * h, k)
            std = (mean_sq - mean * mean).clamp_min(0.0).add(self.eps).sqrt()
            parts.append(std.to(x.dtype))
        return torch.cat(parts, dim=1)

    def extra_repr(self) -> str:
        return f"windows={self.windows}"
