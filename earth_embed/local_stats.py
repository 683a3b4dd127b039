"""Local standard deviation of feature maps: a parameter-free texture layer for the embedding head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import check_windows


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
            mean = F.avg_pool2d(h, k, stride=1, padding=k // 2, count_include_pad=False)
            mean_sq = F.avg_pool2d(h * h, k, stride=1, padding=k // 2, count_include_pad=False)
            std = (mean_sq - mean * mean).clamp_min(0.0).add(self.eps).sqrt()
            parts.append(std.to(x.dtype))
        return torch.cat(parts, dim=1)

    def extra_repr(self) -> str:
        return f"windows={self.windows}"
