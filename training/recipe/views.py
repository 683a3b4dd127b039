"""Two-view generation with exact pixel correspondence (Embedding Earth, sample- and batch-level).

Coordinates: continuous pixel coordinates ``(x, y)`` where pixel ``(row i, col j)`` has its centre
at ``(j + 0.5, i + 0.5)`` and an image of width W spans ``[0, W]``. Every view keeps a 3x3 affine
``A`` mapping its own pixel coordinates to the source patch's, so

* view-2 -> view-1 coordinates: ``inv(A1) @ A2`` (:meth:`ViewPair.map_2_to_1`), exactly;
* view-1 -> view-2 coordinates: ``inv(A2) @ A1``.

Geometry (crop, resize, flips, 90-degree rotations) is applied first with one bilinear
``grid_sample``; photometric changes (blur, per-band gain/offset, noise, band dropout) only change
values, never positions, so they cannot break the correspondence.

Sample-level (independent per sample and per view): crop box, flip/rotation, gain, offset, noise
level, blur. Batch-level (once per batch): output size, crop-scale range, band-dropout masks.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "BatchParams",
    "ViewConfig",
    "ViewPair",
    "apply_affine",
    "bilinear_lookup",
    "draw_batch_params",
    "make_views",
    "sample_correspondences",
]


@dataclass
class ViewConfig:
    """Options of the view generator (all of them are YAML keys under ``views:``)."""

    out_sizes: list[int] = field(default_factory=lambda: [64])  # batch-level: one drawn per batch
    scale: tuple[float, float] = (0.3, 1.0)  # crop area / patch area
    scale_ranges: list[tuple[float, float]] | None = None  # batch-level: one range drawn per batch
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect ratio (log-uniform)
    min_overlap: float = 0.25  # min intersection area / smaller crop area between the two views
    integer_crop: bool = False  # round crop boxes to whole pixels
    native: bool = False  # native resolution: crops of exactly out_size px at integer offsets (no resize,
    # no aspect jitter; with D4 only, every view pixel is one patch pixel and partners are exact pixels)
    flip: bool = True
    rot90: bool = True
    gain: float = 0.1  # per-band gain in [1-g, 1+g]
    offset: float = 0.1  # per-band offset in [-o, o] (normalised units)
    noise: float = 0.05  # Gaussian noise std drawn in [0, noise] per view
    blur_p: float = 0.2  # probability of a Gaussian blur per view
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    band_drop_p: float = 0.3  # probability that a batch drops bands (per view)
    band_drop_max: int = 3  # at most this many bands zeroed
    misregister: float = 0.0  # view 2's content moved off the correspondence by up to this many patch pixels
    # (uniform per axis and sample, resampled): positives that are misregistered like two real acquisitions

    @classmethod
    def from_dict(cls, d: dict | None) -> ViewConfig:
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            from earth_embed.errors import ConfigError

            raise ConfigError(
                f"unknown views option(s) {sorted(unknown)}; valid ones are {sorted(cls.__dataclass_fields__)}"
            )
        for key in ("scale", "ratio", "blur_sigma"):
            if key in d:
                d[key] = tuple(float(v) for v in d[key])
        if d.get("scale_ranges") is not None:
            d["scale_ranges"] = [tuple(float(v) for v in r) for r in d["scale_ranges"]]
        return cls(**d)


@dataclass
class BatchParams:
    """Batch-level draws: one per batch, shared by every sample."""

    out_size: int
    scale: tuple[float, float]
    band_keep1: Tensor  # (C,) float 1 = keep, 0 = dropped, view 1
    band_keep2: Tensor  # (C,) view 2


@dataclass
class ViewPair:
    """Two views of a batch of patches and the affine maps back to patch coordinates."""

    view1: Tensor  # (B, C, O, O)
    view2: Tensor
    A1: Tensor  # (B, 3, 3) view-1 pixel coords -> patch pixel coords
    A2: Tensor
    box1: Tensor  # (B, 4) crop boxes x0, y0, x1, y1 in patch coords
    box2: Tensor
    patch_size: int
    valid1: Tensor | None = None  # (B, 1, O, O) 1 where the pixel is valid data
    valid2: Tensor | None = None

    @property
    def out_size(self) -> int:
        return int(self.view1.shape[-1])

    def map_2_to_1(self, xy: Tensor) -> Tensor:
        """Map view-2 pixel coordinates (B, N, 2) onto view-1 pixel coordinates."""
        return apply_affine(torch.linalg.solve(self.A1, self.A2), xy)

    def map_1_to_2(self, xy: Tensor) -> Tensor:
        """Map view-1 pixel coordinates (B, N, 2) onto view-2 pixel coordinates."""
        return apply_affine(torch.linalg.solve(self.A2, self.A1), xy)

    def to_patch(self, view: int, xy: Tensor) -> Tensor:
        """Map view pixel coordinates (B, N, 2) to patch coordinates."""
        return apply_affine(self.A1 if view == 1 else self.A2, xy)


def apply_affine(M: Tensor, xy: Tensor) -> Tensor:
    """Apply (B, 3, 3) affine maps to (B, N, 2) points."""
    return xy @ M[:, :2, :2].transpose(1, 2) + M[:, None, :2, 2]


def draw_batch_params(cfg: ViewConfig, channels: int, rng: random.Random) -> BatchParams:
    """Draw the batch-level augmentation parameters."""
    out_size = int(rng.choice(list(cfg.out_sizes)))
    scale = tuple(rng.choice(cfg.scale_ranges)) if cfg.scale_ranges else tuple(cfg.scale)

    def keep_mask() -> Tensor:
        keep = torch.ones(channels)
        if channels > 1 and cfg.band_drop_max > 0 and rng.random() < cfg.band_drop_p:
            n = rng.randint(1, min(cfg.band_drop_max, channels - 1))
            keep[rng.sample(range(channels), n)] = 0.0
        return keep

    return BatchParams(out_size, (float(scale[0]), float(scale[1])), keep_mask(), keep_mask())


def _d4_matrices(n: int, cfg: ViewConfig, gen: torch.Generator) -> Tensor:
    """Random elements of the dihedral group D4 as (n, 2, 2) matrices (flips x rot90)."""
    mats = torch.eye(2).repeat(n, 1, 1)
    if cfg.flip:
        sx = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
        sy = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
        mats = torch.diag_embed(torch.stack([sx, sy], 1))
    if cfg.rot90:
        k = torch.randint(0, 4, (n,), generator=gen)
        c = torch.tensor([1.0, 0.0, -1.0, 0.0])[k]
        s = torch.tensor([0.0, 1.0, 0.0, -1.0])[k]
        rot = torch.stack([torch.stack([c, -s], 1), torch.stack([s, c], 1)], 1)
        mats = rot @ mats
    return mats


def _crop_boxes(
    n: int, size: int, cfg: ViewConfig, scale: tuple[float, float], gen: torch.Generator, out_size: int
) -> Tensor:
    """(n, 4) random-resized-crop boxes x0, y0, x1, y1 inside a size x size patch.

    ``cfg.native``: boxes of exactly ``out_size`` px at integer offsets (no resize).
    """
    if cfg.native:
        if out_size > size:
            raise ValueError(f"native views of {out_size} px need patches at least that big, got {size} px")
        x0 = torch.randint(0, size - out_size + 1, (n,), generator=gen).float()
        y0 = torch.randint(0, size - out_size + 1, (n,), generator=gen).float()
        return torch.stack([x0, y0, x0 + out_size, y0 + out_size], 1)
    area = torch.empty(n).uniform_(scale[0], scale[1], generator=gen) * size * size
    log_r = torch.empty(n).uniform_(math.log(cfg.ratio[0]), math.log(cfg.ratio[1]), generator=gen)
    r = torch.exp(log_r)
    w = torch.sqrt(area * r).clamp(1.0, size)
    h = torch.sqrt(area / r).clamp(1.0, size)
    if cfg.integer_crop:
        w, h = w.round().clamp(1, size), h.round().clamp(1, size)
    x0 = torch.rand(n, generator=gen) * (size - w)
    y0 = torch.rand(n, generator=gen) * (size - h)
    if cfg.integer_crop:
        x0, y0 = x0.floor(), y0.floor()
    return torch.stack([x0, y0, x0 + w, y0 + h], 1)


def _overlap(b1: Tensor, b2: Tensor) -> Tensor:
    """Intersection area over the smaller box area."""
    iw = (torch.minimum(b1[:, 2], b2[:, 2]) - torch.maximum(b1[:, 0], b2[:, 0])).clamp(min=0)
    ih = (torch.minimum(b1[:, 3], b2[:, 3]) - torch.maximum(b1[:, 1], b2[:, 1])).clamp(min=0)
    a1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    a2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    return iw * ih / torch.minimum(a1, a2)


def _affines(boxes: Tensor, rot: Tensor, out_size: int) -> Tensor:
    """(n, 3, 3) maps from view pixel coords to patch coords: crop box o D4 element o resize."""
    n = boxes.shape[0]
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    A = torch.zeros(n, 3, 3)
    # u = c + diag(w, h) @ R @ ((x - O/2) / O)
    lin = torch.diag_embed(torch.stack([w, h], 1)) @ rot / out_size
    A[:, :2, :2] = lin
    centre = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
    A[:, :2, 2] = centre - (lin @ torch.full((n, 2, 1), out_size / 2.0)).squeeze(-1)
    A[:, 2, 2] = 1.0
    return A


def _warp(x: Tensor, A: Tensor, out_size: int, mode: str = "bilinear") -> Tensor:
    """Sample x (B, C, S, S) at A(view pixel centres) -> (B, C, O, O), align_corners=False."""
    S = x.shape[-1]
    # theta acts on normalised coords: g_patch = N_S A N_O^-1 g_view, N_k(u) = 2u/k - 1
    N_S = torch.tensor([[2.0 / S, 0, -1], [0, 2.0 / S, -1], [0, 0, 1]])
    N_O_inv = torch.tensor([[out_size / 2.0, 0, out_size / 2.0], [0, out_size / 2.0, out_size / 2.0], [0, 0, 1]])
    theta = (N_S @ A @ N_O_inv)[:, :2, :].to(x.device, x.dtype)
    grid = F.affine_grid(theta, [x.shape[0], x.shape[1], out_size, out_size], align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)


def _blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Per-sample Gaussian blur, 5x5 separable; sigma (B,), 0 = no blur."""
    B, C, H, W = x.shape
    t = torch.arange(-2, 3, dtype=x.dtype, device=x.device)
    s = sigma.to(x).clamp(min=1e-3)[:, None]
    k = torch.exp(-0.5 * (t[None] / s) ** 2)
    k = torch.where(sigma.to(x.device)[:, None] > 0, k, (t[None] == 0).to(x))
    k = k / k.sum(1, keepdim=True)  # (B, 5)
    k = k.repeat_interleave(C, 0)  # (B*C, 5)
    y = x.reshape(1, B * C, H, W)
    y = F.conv2d(F.pad(y, (2, 2, 0, 0), mode="replicate"), k[:, None, None, :], groups=B * C)
    y = F.conv2d(F.pad(y, (0, 0, 2, 2), mode="replicate"), k[:, None, :, None], groups=B * C)
    return y.reshape(B, C, H, W)


def _photometric(v: Tensor, cfg: ViewConfig, keep: Tensor, gen: torch.Generator) -> Tensor:
    B, C = v.shape[:2]
    if cfg.blur_p > 0:
        on = torch.rand(B, generator=gen) < cfg.blur_p
        sig = torch.empty(B).uniform_(cfg.blur_sigma[0], cfg.blur_sigma[1], generator=gen) * on
        if bool(on.any()):
            v = _blur(v, sig)
    if cfg.gain > 0 or cfg.offset > 0:
        g = 1.0 + (torch.rand(B, C, 1, 1, generator=gen) * 2 - 1) * cfg.gain
        o = (torch.rand(B, C, 1, 1, generator=gen) * 2 - 1) * cfg.offset
        v = v * g.to(v) + o.to(v)
    if cfg.noise > 0:
        std = torch.rand(B, 1, 1, 1, generator=gen) * cfg.noise
        noise = torch.randn(v.shape, generator=gen) * std
        v = v + noise.to(v)
    return v * keep.to(v)[None, :, None, None]


def make_views(
    patches: Tensor,
    cfg: ViewConfig,
    batch: BatchParams,
    gen: torch.Generator,
    valid: Tensor | None = None,
    patches2: Tensor | None = None,
    valid2: Tensor | None = None,
) -> ViewPair:
    """Two augmented views of normalised patches (B, C, S, S) with their affine maps.

    ``gen`` is a CPU generator (sample-level draws); ``batch`` comes from :func:`draw_batch_params`.
    ``valid`` (B, 1, S, S) marks real data (1) vs nodata (0); it is warped with the views.
    ``patches2`` / ``valid2``: view 2 is cut from these instead (the same ground from another
    acquisition, on the same pixel grid); the geometry is drawn exactly as for one patch.
    """
    if patches.ndim != 4 or patches.shape[-1] != patches.shape[-2]:
        raise ValueError(f"patches must be (B, C, S, S) square, got {tuple(patches.shape)}")
    B, _C, S, _ = patches.shape
    O = batch.out_size
    box1 = _crop_boxes(B, S, cfg, batch.scale, gen, O)
    box2 = _crop_boxes(B, S, cfg, batch.scale, gen, O)
    for _ in range(10):  # resample view-2 boxes that overlap view 1 too little
        bad = _overlap(box1, box2) < cfg.min_overlap
        if not bool(bad.any()):
            break
        box2[bad] = _crop_boxes(int(bad.sum()), S, cfg, batch.scale, gen, O)
    bad = _overlap(box1, box2) < cfg.min_overlap
    box2[bad] = box1[bad]  # fall back to the same crop (different orientation/photometry)
    A1 = _affines(box1, _d4_matrices(B, cfg, gen), O)
    A2 = _affines(box2, _d4_matrices(B, cfg, gen), O)
    A2_seen = A2  # where view 2's pixels are sampled from; the loss's correspondence keeps A2
    if cfg.misregister > 0:
        shift = torch.eye(3).repeat(B, 1, 1)
        shift[:, :2, 2] = (torch.rand(B, 2, generator=gen) * 2 - 1) * cfg.misregister
        A2_seen = shift @ A2
    v1 = _photometric(_warp(patches, A1, O), cfg, batch.band_keep1, gen)
    src2 = patches if patches2 is None else patches2
    v2 = _photometric(_warp(src2, A2_seen, O), cfg, batch.band_keep2, gen)
    val1 = val2 = None
    if valid is not None:
        both = valid if valid2 is None else valid * valid2  # a pixel counts where both acquisitions have data
        val1 = (_warp(both.to(patches), A1, O) > 0.999).to(patches.dtype)
        val2 = (_warp(both.to(patches), A2_seen, O) > 0.999).to(patches.dtype)
    return ViewPair(v1, v2, A1, A2, box1, box2, S, val1, val2)


def bilinear_lookup(feat: Tensor, xy: Tensor) -> Tensor:
    """Bilinear lookup of feat (B, D, H, W) at continuous pixel coords xy (B, N, 2) -> (B, N, D)."""
    H, W = feat.shape[-2:]
    xy = xy.to(feat.device, torch.float32)  # float32 coordinates and features: bf16 would shift lookups
    g = torch.stack([2 * xy[..., 0] / W - 1, 2 * xy[..., 1] / H - 1], -1)
    out = F.grid_sample(feat.float(), g[:, None], mode="bilinear", padding_mode="border", align_corners=False)
    return out[:, :, 0].transpose(1, 2)


def sample_correspondences(
    pair: ViewPair, n_points: int, gen: torch.Generator, query_view: int = 1
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sample ``n_points`` query pixels per image inside the two views' overlap.

    Returns ``(idx_q, xy_k, xy_patch, weight)``: flat pixel indices (B, N) into the query view,
    the partner's continuous coordinates (B, N, 2) in the other view, the points' patch
    coordinates (B, N, 2), and a (B, N) weight (0 where no overlap or a nodata pixel).
    """
    O = pair.out_size
    A_q, A_k = (pair.A1, pair.A2) if query_view == 1 else (pair.A2, pair.A1)
    b_q, b_k = (pair.box1, pair.box2) if query_view == 1 else (pair.box2, pair.box1)
    # keep partners half a key-view pixel inside the key view: bilinear lookup is exact there
    half = torch.stack([b_k[:, 2] - b_k[:, 0], b_k[:, 3] - b_k[:, 1]], 1) * (0.5 / O)
    lo = torch.maximum(b_q[:, :2], b_k[:, :2] + half)
    hi = torch.minimum(b_q[:, 2:], b_k[:, 2:] - half)
    corners = torch.stack([lo, hi], 1)  # (B, 2, 2) patch coords
    inv_q = torch.linalg.inv(A_q)
    cq = apply_affine(inv_q, corners)  # axis-aligned (D4) so min/max give the rectangle
    qlo, qhi = cq.min(1).values, cq.max(1).values
    first = torch.ceil(qlo - 0.5 - 1e-4).clamp(0, O - 1)
    last = torch.floor(qhi - 0.5 + 1e-4).clamp(0, O - 1)
    count = (last - first + 1).clamp(min=0)  # (B, 2) pixels per axis
    B = corners.shape[0]
    u = torch.rand(B, n_points, 2, generator=gen)
    ij = first[:, None] + torch.minimum(torch.floor(u * count[:, None]), (count[:, None] - 1).clamp(min=0))
    xy_q = ij + 0.5
    idx_q = (ij[..., 1] * O + ij[..., 0]).long()
    xy_patch = apply_affine(A_q, xy_q)
    xy_k = apply_affine(torch.linalg.inv(A_k), xy_patch)
    weight = (count.prod(1) > 0).float()[:, None].expand(B, n_points).clone()
    val_q, val_k = (pair.valid1, pair.valid2) if query_view == 1 else (pair.valid2, pair.valid1)
    if val_q is not None and val_k is not None:
        weight = weight * val_q.flatten(1).cpu().gather(1, idx_q)
        weight = weight * (bilinear_lookup(val_k.cpu(), xy_k)[..., 0] > 0.999).float()
    return idx_q, xy_k, xy_patch, weight
