"""Tile grid, blend weights and the streaming blender."""

from __future__ import annotations

import numpy as np
import pytest

from earth_embed.errors import RasterInputError
from earth_embed.raster.windows import Blender, TileGrid, default_tiling, plan_axis


@pytest.mark.parametrize(
    "size,tile,overlap,multiple",
    [
        (1947, 1088, 64, 32),
        (1933, 576, 64, 32),
        (100, 576, 64, 32),
        (1000, 96, 32, 1),
        (777, 64, 0, 32),
        (500, 128, 32, 32),
    ],
)
def test_axis_weights_sum_to_one_and_cover(size, tile, overlap, multiple):
    plan = plan_axis(size, tile, overlap, multiple)
    total = np.zeros(size)
    for k, (s, n) in enumerate(zip(plan.starts, plan.lengths)):
        assert s % multiple == 0 and s >= 0 and s + n <= size and n >= 1
        w = plan.weight(k)
        assert w.shape == (n,) and (w >= 0).all() and (w <= 1).all()
        total[s : s + n] += w
        if k > 0:  # pixels next to a cut-off start never count
            assert (w[: plan.guard_start] == 0).all()
        if k < len(plan.starts) - 1 and overlap:
            assert w[-1] == 0
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    assert plan.cuts[0] == 0 and plan.cuts[-1] == size and list(plan.cuts) == sorted(plan.cuts)
    if overlap and len(plan.starts) > 1 and plan.guard_start % multiple == 0:
        step = tile - overlap
        assert all(c % step == 0 for c in plan.cuts[1:-1])  # cuts fall on multiples of the step


def test_default_tiling():
    tile, overlap = default_tiling(32)
    assert (tile, overlap) == (1088, 64)
    grid = TileGrid(5000, 5000, tile, overlap, 32)
    assert grid.block_multiple == 1024


def test_blender_reproduces_a_field_exactly():
    rng = np.random.default_rng(0)
    h, w, d = 301, 457, 3
    field = rng.standard_normal((d, h, w)).astype(np.float32)
    grid = TileGrid(h, w, 96, 32, 16)
    assert grid.shape[0] > 2 and grid.shape[1] > 3
    out = np.full((d, h, w), np.nan, np.float32)
    blender = Blender(grid, d)
    for t in grid:
        tile_out = field[:, t.row : t.row + t.height, t.col : t.col + t.width].copy()  # add() works in place
        r0, c0, block = blender.add(t, tile_out)
        assert np.isnan(out[:, r0 : r0 + block.shape[1], c0 : c0 + block.shape[2]]).all()  # each pixel once
        out[:, r0 : r0 + block.shape[1], c0 : c0 + block.shape[2]] = block
    np.testing.assert_allclose(out, field, atol=1e-5)


def test_blender_refuses_out_of_order():
    grid = TileGrid(200, 200, 96, 32, 16)
    tiles = list(grid)
    blender = Blender(grid, 1)
    with pytest.raises(RuntimeError):
        blender.add(tiles[1], np.zeros((1, tiles[1].height, tiles[1].width), np.float32))


def test_bad_tiling():
    with pytest.raises(RasterInputError, match="pad_multiple"):
        TileGrid(100, 100, 500, 64, 32)
    with pytest.raises(RasterInputError, match="half the tile"):
        TileGrid(100, 100, 128, 64, 32)
    with pytest.raises(RasterInputError, match="positive"):
        TileGrid(100, 100, 0, 0, 32)
