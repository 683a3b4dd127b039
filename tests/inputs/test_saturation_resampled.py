"""Saturation decided on each band's own grid and carried through the resampling (issue 33, ``docs/reliability.md``).

Real pixels: Paris's earlier date (OSCD) holds a small object saturated at DN 28000 in 10 m bands (B02-B04, B08) and
in 20 m bands (B05, B06, B07, B11). A bilinear resampling blends a saturated value with its neighbours below the
bound (B05's three saturated 20 m pixels peak at 25594 on the 10 m grid), so validity is decided on each band's
own grid and the mask goes through the same kernel (``pixel_grid.drawn_on``). The expected pixels are computed
here independently: those whose bilinear kernel (the 2 x 2 source pixels around their centre, weight above
``MIN_WEIGHT``) holds a saturated source pixel, grown by ``SATURATION_BUFFER`` px; every other pixel must stay
valid.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from earth_embed import RELEASE_BANDS
from earth_embed.apps.change_inputs import SATURATED_FILL, bands_on_grid, read_scene_on_grid, write_scene_on_grid
from earth_embed.inputs import S2_SATURATED, open_scene
from earth_embed.inputs.pixel_grid import MIN_WEIGHT, Grid
from earth_embed.inputs.scene import SATURATION_BUFFER
from tests.helpers.change_data import square_grow

PARIS = ("unlabelled", "oscd-date1", "paris")
#: A window of the Paris 10 m grid around the saturated object (rows 5-10, columns 213-220 once carried).
ROWS, COLS = (0, 20), (200, 230)


def bilinear_support(src: Affine, bad: np.ndarray, dst: Affine, shape: tuple[int, int]) -> np.ndarray:
    """True where a bilinear resampling from the grid ``src`` onto ``dst`` (same CRS) gives a weight above
    ``MIN_WEIGHT`` to a pixel of ``bad``."""
    rr, cc = np.mgrid[0 : shape[0], 0 : shape[1]]
    u, v = ~src @ (dst @ (cc + 0.5, rr + 0.5))
    u0, v0 = np.floor(u - 0.5).astype(int), np.floor(v - 0.5).astype(int)
    fu, fv = u - 0.5 - u0, v - 0.5 - v0
    out = np.zeros(shape, bool)
    for dv, wv in ((0, 1 - fv), (1, fv)):
        for du, wu in ((0, 1 - fu), (1, fu)):
            r, c = v0 + dv, u0 + du
            ok = (r >= 0) & (r < bad.shape[0]) & (c >= 0) & (c < bad.shape[1]) & (wv * wu > MIN_WEIGHT)
            out[ok] |= bad[r[ok], c[ok]]
    return out


def expected_invalid(paths: dict[str, str], dst: Affine, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, bool)
    for band in RELEASE_BANDS:
        with rasterio.open(paths[band]) as ds:
            out |= bilinear_support(ds.transform, ds.read(1) >= S2_SATURATED, dst, shape)
    return out


@pytest.fixture(scope="module")
def paris(shared_data):
    return shared_data.joinpath(*PARIS)


def test_20m_saturation_is_carried_onto_the_10m_grid(paris):
    with open_scene(paris, bands=RELEASE_BANDS) as scene:
        window = (ROWS, COLS)
        dn = scene.read(window)
        valid = scene.valid_mask(window, data=dn)
        transform, paths = scene.transform @ Affine.translation(COLS[0], ROWS[0]), scene.paths
        assert (scene.valid_mask()[ROWS[0] : ROWS[1], COLS[0] : COLS[1]] == valid).all()  # windows agree
    b05 = dn[RELEASE_BANDS.index("B05")]
    with rasterio.open(paths["B05"]) as ds:
        assert (ds.read(1) >= S2_SATURATED).sum() == 3  # saturated on its own grid ...
    assert b05.max() < S2_SATURATED  # ... and hidden by the bilinear blend on the 10 m grid
    expected = expected_invalid(paths, transform, valid.shape)
    own = (dn >= S2_SATURATED).any(axis=0)
    assert own.sum() == 7 and expected.sum() == 44 and (expected >= own).all()
    # no DN 0 here: exactly the pixels drawing on a saturated pixel and the buffer around them; the rest valid
    assert (~valid == square_grow(expected, SATURATION_BUFFER)).all() and valid.any()


@pytest.mark.parametrize("shift", [(0.5, 0.5), (0.25, -3.7)])
def test_a_regridded_date_keeps_the_saturated_object_invalid(paris, shift, tmp_path):
    with open_scene(paris, bands=RELEASE_BANDS) as scene:
        crs, paths = scene.crs, scene.paths
        transform = scene.transform @ Affine.translation(COLS[0] - 4 + shift[0], shift[1])
    grid = Grid(crs, transform, 32, 32)
    dn = read_scene_on_grid(paris, RELEASE_BANDS, grid)
    expected = expected_invalid(paths, transform, (32, 32))
    assert expected.sum() >= 31
    filled = (dn == SATURATED_FILL).all(axis=0)
    assert (filled == expected).all()
    covered = (dn != 0).all(axis=0)  # a shift up by 3.7 rows leaves the top rows outside the scene
    assert (dn[:, covered & ~expected] < S2_SATURATED).all()  # clear ground keeps its values
    with bands_on_grid(paris, RELEASE_BANDS, grid) as sources:  # the plain bilinear values
        plain = np.stack([ds.read(i, out_dtype=np.float32) for ds, i, _ in sources])
    assert (expected & ~(plain >= S2_SATURATED).any(axis=0)).sum() >= 10  # which would hide these pixels
    with open_scene(write_scene_on_grid(paris, RELEASE_BANDS, grid, tmp_path / "b.tif")) as scene:
        valid = scene.valid_mask()
    assert (valid == covered & ~square_grow(expected, SATURATION_BUFFER)).all()


def test_a_reprojected_date_keeps_the_saturated_object_invalid(paris):
    """Paris onto a UTM grid of 10 m: the object's pixels (at their centres) are invalid, ground 6 px away valid."""
    from rasterio.warp import transform as warp_xy

    with open_scene(paris, bands=RELEASE_BANDS) as scene:
        dn = scene.read((ROWS, COLS))
        x, y = (scene.transform @ Affine.translation(COLS[0], ROWS[0])) * np.flipud(
            np.argwhere((dn >= S2_SATURATED).any(axis=0)).T + 0.5
        )
        crs = scene.crs
    ex, ey = warp_xy(crs, "EPSG:32631", list(x), list(y))
    left, top = min(ex) - 200, max(ey) + 200
    grid = Grid(rasterio.crs.CRS.from_epsg(32631), Affine(10, 0, left, 0, -10, top), 40, 40)
    dn_utm = read_scene_on_grid(paris, RELEASE_BANDS, grid)
    filled = (dn_utm == SATURATED_FILL).all(axis=0)
    rows, cols = rasterio.transform.rowcol(grid.transform, ex, ey)
    assert filled[rows, cols].all()
    near = np.zeros_like(filled)
    for r, c in zip(rows, cols):
        near[max(0, r - 6) : r + 7, max(0, c - 6) : c + 7] = True
    assert filled.sum() >= len(rows) and not filled[~near].any()
    covered = (dn_utm != 0).all(axis=0)  # the grid reaches above the scene's top edge
    assert covered.mean() > 0.7 and (dn_utm[:, covered & ~filled] < S2_SATURATED).all()
