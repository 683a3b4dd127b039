"""A north-up pixel grid, and a raster seen on another grid (one ``WarpedVRT`` rule for every reader).

The scene reader puts coarser bands on the finest band's grid, masks are put on a scene's grid and ``change``
puts one date's bands on the other's: all three go through :func:`view_on_grid`. :func:`drawn_on` carries a mask
decided on a band's own grid (its saturated pixels) through the same resampling.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from affine import Affine
from rasterio.enums import Resampling
from rasterio.transform import array_bounds
from rasterio.vrt import WarpedVRT
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window, from_bounds

#: The least weight of a marked source pixel that marks a resampled pixel (:func:`drawn_on`): smaller weights are the
#: float noise of the grid positions (a 1e-4 share of even a 65535 DN value is under 7 DN).
MIN_WEIGHT = 1e-4
#: Corners closer than this (in pixels) count as the same grid: GDAL's float transforms differ in the last digits.
SAME_GRID_TOL_PX = 1e-6


@dataclass(frozen=True)
class Grid:
    """A north-up pixel grid: CRS, affine transform and size."""

    crs: Any
    transform: Any
    height: int
    width: int

    @classmethod
    def of(cls, obj: Any) -> Grid:
        """The grid of an open raster, scene or embedding raster (``crs``, ``transform``, ``height``, ``width``)."""
        return cls(obj.crs, obj.transform, int(obj.height), int(obj.width))

    def describe(self) -> str:
        t = self.transform
        return (
            f"{self.crs}, {self.width} x {self.height} px of {t.a:.6g} x {abs(t.e):.6g} (CRS units), "
            f"origin {t.c:.8g}, {t.f:.8g}"
        )

    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid's CRS."""
        left, bottom, right, top = array_bounds(self.height, self.width, self.transform)
        return left, bottom, right, top

    def offset_px(self, other: Grid) -> float:
        """Largest distance, in this grid's pixels, between the corners of ``other`` and this grid's corners."""
        inv = ~self.transform
        worst = 0.0
        for col, row in ((0, 0), (other.width, 0), (0, other.height), (other.width, other.height)):
            c, r = inv @ (other.transform @ (col, row))
            worst = max(worst, abs(c - col), abs(r - row))
        return worst

    def same_as(self, other: Grid, tol_px: float = 0.01) -> bool:
        """Same CRS and size, and every corner within ``tol_px`` of a pixel."""
        return (
            self.crs == other.crs
            and (self.height, self.width) == (other.height, other.width)
            and self.offset_px(other) <= tol_px
        )


def view_on_grid(
    ds: Any,
    grid: Grid,
    resampling: Resampling,
    nodata: float,
    src_nodata: float | None = None,
    dtype: str | None = None,
) -> Any:
    """``ds`` itself when it is already on ``grid``, else a ``WarpedVRT`` of it on ``grid`` (the caller closes it).

    ``nodata`` fills pixels ``ds`` does not cover; ``src_nodata`` (default ``ds.nodata``) marks its own gaps.
    Use nearest resampling for class codes, bilinear for reflectances.
    """
    if Grid.of(ds).same_as(grid, tol_px=SAME_GRID_TOL_PX):
        return ds
    options: dict[str, Any] = {"resampling": resampling, "nodata": nodata}
    if src_nodata is not None:
        options["src_nodata"] = src_nodata
    if dtype is not None:
        options["dtype"] = dtype
    return WarpedVRT(ds, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height, **options)


def drawn_on(
    ds: Any, index: int, grid: Grid, window: Window, bad: Callable[[np.ndarray], np.ndarray],
    resampling: Resampling = Resampling.bilinear,
) -> np.ndarray:  # fmt: skip
    """Boolean ``(h, w)`` on ``window`` of ``grid``: True where the value that :func:`view_on_grid` (``resampling``)
    gives band ``index`` of ``ds`` there draws on a source pixel for which ``bad`` (of the source values, on ``ds``'s
    own grid) is True. The mask goes through the same kernel as the values, so a blend that hides a bad value (a
    saturated pixel averaged with its neighbours) is still marked; any weight above :data:`MIN_WEIGHT` counts."""
    h, w = int(window.height), int(window.width)
    out = np.zeros((h, w), dtype=bool)
    dst_transform = grid.transform @ Affine.translation(window.col_off, window.row_off)
    left, bottom, right, top = array_bounds(h, w, dst_transform)
    if ds.crs != grid.crs:
        left, bottom, right, top = transform_bounds(grid.crs, ds.crs, left, bottom, right, top, densify_pts=21)
    src = from_bounds(left, bottom, right, top, ds.transform)
    # the kernel reaches one source pixel, or the scale factor when the grid is coarser; 2 more for rounding
    pad = math.ceil(max(1.0, abs(src.width) / w, abs(src.height) / h)) + 2
    r0 = max(0, math.floor(min(src.row_off, src.row_off + src.height)) - pad)
    c0 = max(0, math.floor(min(src.col_off, src.col_off + src.width)) - pad)
    r1 = min(ds.height, math.ceil(max(src.row_off, src.row_off + src.height)) + pad)
    c1 = min(ds.width, math.ceil(max(src.col_off, src.col_off + src.width)) + pad)
    if r1 <= r0 or c1 <= c0:
        return out
    win = Window(c0, r0, c1 - c0, r1 - r0)
    marked = np.asarray(bad(ds.read(index, window=win, out_dtype=np.float32)))
    if not marked.any():
        return out
    carried = np.zeros((h, w), dtype=np.float32)
    reproject(
        marked.astype(np.float32), carried, src_transform=ds.window_transform(win), src_crs=ds.crs,
        dst_transform=dst_transform, dst_crs=grid.crs, resampling=resampling,
    )  # fmt: skip
    return carried > MIN_WEIGHT
