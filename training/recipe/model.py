"""Pre-training network: an EarthEncoder plus a per-pixel projection head (kept out of the library)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from earth_embed import EarthEncoder
from training.recipe.losses import masked_mean_pool
from training.recipe.views import bilinear_lookup


class ProjectionHead(nn.Module):
    """Per-pixel projection to ``out_dim`` (a 1x1 conv applied to looked-up pixel vectors).

    ``hidden=0``: one linear map; ``hidden>0``: linear - BatchNorm - ReLU - linear (MoCo-v3 /
    VICRegL style; the BatchNorm normalises over all looked-up pixels of the batch).
    """

    def __init__(self, in_dim: int, out_dim: int = 128, hidden: int = 0) -> None:
        super().__init__()
        if hidden > 0:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
            )
        else:
            self.net = nn.Linear(in_dim, out_dim)

    def forward(self, v: Tensor) -> Tensor:
        shape = v.shape
        return self.net(v.reshape(-1, shape[-1])).reshape(*shape[:-1], -1)


class PretrainNet(nn.Module):
    """Encoder + head. ``forward`` returns projected vectors (B, N, d) at the requested pixels.

    ``idx`` (B, N): flat pixel indices (queries); ``xy`` (B, N, 2): continuous coordinates looked
    up bilinearly (keys); neither: one pooled vector per image (B, 1, d) over ``valid`` pixels.
    ``key_pool`` (B,) bool marks the images whose embedding map is averaged over ``key_pool_size``^2 pixels
    (odd; 3 by default) before the ``xy`` lookup (a positive across acquisitions is a neighbourhood:
    co-registration is ~1 px).
    With ``with_embedding=True`` it returns ``(projected, embedding (B, N, D), reconstruction)`` (for
    the terms on the embedding itself; the reconstruction is None without a ``recon`` head).

    ``recon_dim`` > 0 adds a training-only linear head ``recon`` (D -> recon_dim) that reconstructs
    the input bands from the embedding (the input-anchored target); it is never saved with the encoder.
    """

    def __init__(
        self,
        encoder: EarthEncoder,
        proj_dim: int = 128,
        proj_hidden: int = 0,
        recon_dim: int = 0,
        key_pool_size: int = 3,
    ) -> None:
        super().__init__()
        if key_pool_size < 1 or key_pool_size % 2 == 0:
            raise ValueError(f"key_pool_size must be an odd number of pixels >= 1, got {key_pool_size}")
        self.key_pool_size = key_pool_size
        self.encoder = encoder
        self.head = ProjectionHead(encoder.embed_dim, proj_dim, proj_hidden)
        self.recon = nn.Linear(encoder.embed_dim, recon_dim) if recon_dim > 0 else None

    def forward(
        self,
        x: Tensor,
        idx: Tensor | None = None,
        xy: Tensor | None = None,
        valid: Tensor | None = None,
        key_pool: Tensor | None = None,
        with_embedding: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor, Tensor | None]:
        emb = self.encoder(x)
        if idx is not None:
            B, D = emb.shape[:2]
            v = emb.flatten(2).gather(2, idx[:, None, :].expand(B, D, -1)).transpose(1, 2)
        elif xy is not None:
            if key_pool is not None and bool(key_pool.any()):
                k = self.key_pool_size
                pooled = F.avg_pool2d(emb, k, stride=1, padding=k // 2, count_include_pad=False)
                emb = torch.where(key_pool.to(emb.device).view(-1, 1, 1, 1), pooled, emb)
            v = bilinear_lookup(emb, xy)
        else:
            v = masked_mean_pool(emb, valid)[:, None]
        v = v.float()
        out = self.head(v)
        if not with_embedding:
            return out
        return out, v, (self.recon(v) if self.recon is not None else None)


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
