"""A light U-Net decoder that brings backbone features back to the input resolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class DecoderBlock(nn.Module):
    """Upsample x2, concatenate a skip connection, two 3x3 conv-BN-ReLU."""

    def __init__(self, c_in: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(_conv_bn_relu(c_in + c_skip, c_out), _conv_bn_relu(c_out, c_out))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        size = skip.shape[-2:] if skip is not None else (x.shape[-2] * 2, x.shape[-1] * 2)
        x = F.interpolate(x, size=size, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.convs(x)


class UNetDecoder(nn.Module):
    """U-Net decoder over timm ``features_only`` outputs.

    One block per x2 upsampling from the deepest feature (stride ``2**len(channels)``) to stride 1.
    Each block takes the backbone feature of its stride as skip, and the last (stride 1) takes the
    model input itself, so per-pixel spectra reach the output directly.
    """

    def __init__(self, feature_channels: list[int], reductions: list[int], in_chans: int, channels: list[int]) -> None:
        super().__init__()
        deepest = reductions[-1]
        n_blocks = deepest.bit_length() - 1  # log2
        if len(channels) != n_blocks:
            raise ValueError(f"decoder needs {n_blocks} widths for a stride-{deepest} backbone, got {len(channels)}")
        skip_by_stride = {r: c for r, c in zip(reductions[:-1], feature_channels[:-1])}
        self.skip_strides: list[int | None] = []
        blocks = []
        c_prev = feature_channels[-1]
        for i, c_out in enumerate(channels):
            stride = deepest >> (i + 1)
            if stride == 1:
                c_skip, key = in_chans, 1
            elif stride in skip_by_stride:
                c_skip, key = skip_by_stride[stride], stride
            else:
                c_skip, key = 0, None
            self.skip_strides.append(key)
            blocks.append(DecoderBlock(c_prev, c_skip, c_out))
            c_prev = c_out
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = c_prev
        self._reductions = list(reductions)

    def forward(self, features: list[torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        by_stride = dict(zip(self._reductions, features))
        by_stride[1] = image
        x = features[-1]
        for block, key in zip(self.blocks, self.skip_strides):
            x = block(x, by_stride[key] if key is not None else None)
        return x
