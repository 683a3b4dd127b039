"""A north-up pixel grid, and a raster seen on another grid (one ``WarpedVRT`` rule for every reader).

The scene reader puts coarser bands on the finest band's grid, masks are put on a scene's grid and ``change``
puts one date's bands on the other's: all three go through :func:`view_on_grid`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

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
        from rasterio.transform import array_bounds

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
