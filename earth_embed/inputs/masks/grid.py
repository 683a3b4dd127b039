"""Mask rasters read on a scene's grid, and the dilation buffer every mask source shares."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from rasterio.enums import Resampling
from rasterio.windows import Window

from ...errors import RasterInputError
from ..opening import open_raster
from ..pixel_grid import Grid, view_on_grid


class GridRaster:
    """A one-band raster (a mask file, an SCL layer) read window by window on a scene's grid.

    A raster on another grid (SCL at 20 m, a mask in another CRS) is resampled by georeference with nearest
    neighbour (class codes must not be averaged); pixels it does not cover read as ``fill``.
    """

    def __init__(self, path: str, scene: Any, fill: float, what: str) -> None:
        self.path = path
        self.fill = fill
        self._ds = open_raster(path)
        self._view: Any = self._ds
        try:
            if self._ds.count != 1:
                raise RasterInputError(
                    f"The {what} {path} has {self._ds.count} bands; a mask has one band (0 = clear). "
                    "Write the mask as a single-band raster."
                )
            if self._ds.crs is None:
                raise RasterInputError(
                    f"The {what} {path} has no coordinate reference system, so it cannot be placed on the scene; "
                    "georeference it (gdal_edit -a_srs -a_ullr) or write it on the scene's grid."
                )
            self._view = view_on_grid(self._ds, Grid.of(scene), Resampling.nearest, nodata=fill)
        except Exception:
            self._ds.close()
            raise
        self.height, self.width = scene.height, scene.width

    def read(self, window: Window) -> np.ndarray:
        """The raster's values ``(h, w)`` in ``window`` of the scene grid (``fill`` outside the scene)."""
        r, c, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
        out = np.full((h, w), self.fill, np.float32)
        r0, c0, r1, c1 = max(0, r), max(0, c), min(self.height, r + h), min(self.width, c + w)
        if r1 > r0 and c1 > c0:
            inner = Window(c0, r0, c1 - c0, r1 - r0)
            out[r0 - r : r1 - r, c0 - c : c1 - c] = self._view.read(1, window=inner, out_dtype=np.float32)
        return out

    def close(self) -> None:
        if self._view is not self._ds:
            self._view.close()
        self._ds.close()


def dilate(mask: np.ndarray, buffer: int) -> np.ndarray:
    """``mask`` (h, w) bool grown by ``buffer`` px in every direction (a square of side ``2 * buffer + 1``)."""
    if buffer <= 0 or not mask.any():
        return mask
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    grown = torch.nn.functional.max_pool2d(t, 2 * buffer + 1, stride=1, padding=buffer)
    return grown[0, 0].numpy() > 0
