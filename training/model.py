"""Pre-training network: an EarthEncoder plus a per-pixel projection head (kept out of the library)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import torch
from torch import Tensor, nn

from earth_embed import EarthEncoder
from training.losses import masked_mean_pool
from training.views import bilinear_lookup


class ProjectionHead(nn.Module):
    """Per-pixel projection to ``out_dim`` (a 1x1 conv applied to looked-up pixel vectors).

    ``hidden=0``: one linear map; ``hidden>0``: linear - ReLU - linear (MoCo-v2 style).
    """

    def __init__(self, in_dim: int, out_dim: int = 128, hidden: int = 0) -> None:
        super().__init__()
        if hidden > 0:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
            )
        else:
            self.net = nn.Linear(in_dim, out_dim)

    def forward(self, v: Tensor) -> Tensor:
        return self.net(v)


class PretrainNet(nn.Module):
    """Encoder + head. ``forward`` returns projected vectors (B, N, d) at the requested pixels.

    ``idx`` (B, N): flat pixel indices (queries); ``xy`` (B, N, 2): continuous coordinates looked
    up bilinearly (keys); neither: one pooled vector per image (B, 1, d) over ``valid`` pixels.
    """

    def __init__(self, encoder: EarthEncoder, proj_dim: int = 128, proj_hidden: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ProjectionHead(encoder.embed_dim, proj_dim, proj_hidden)

    def forward(
        self, x: Tensor, idx: Tensor | None = None, xy: Tensor | None = None, valid: Tensor | None = None
    ) -> Tensor:
        emb = self.encoder(x)
        if idx is not None:
            B, D = emb.shape[:2]
            v = emb.flatten(2).gather(2, idx[:, None, :].expand(B, D, -1)).transpose(1, 2)
        elif xy is not None:
            v = bilinear_lookup(emb, xy)
        else:
            v = masked_mean_pool(emb, valid)[:, None]
        return self.head(v.float())


def make_key_net(net: PretrainNet) -> PretrainNet:
    """A gradient-free copy of ``net`` for the EMA key encoder."""
    key = copy.deepcopy(net)
    for p in key.parameters():
        p.requires_grad_(False)
    return key


@torch.no_grad()
def ema_update(key: nn.Module, query: nn.Module, momentum: float) -> None:
    """key <- momentum * key + (1 - momentum) * query; buffers (BN statistics) are copied."""
    kp: list[torch.Tensor] = list(key.parameters())
    qp: list[torch.Tensor] = [p.detach() for p in query.parameters()]
    torch._foreach_mul_(kp, momentum)
    torch._foreach_add_(kp, qp, alpha=1.0 - momentum)
    for kb, qb in zip(key.buffers(), query.buffers()):
        kb.copy_(qb)


def save_pretrained_atomic(model: nn.Module, folder: Path) -> Path:
    """``model.save_pretrained`` into a temporary sibling folder, then swap it in (never a half-written folder)."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)  # type: ignore[operator]
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder
