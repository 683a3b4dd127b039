"""A user's own mask raster: one band, 0 = clear, any other value = masked (its nodata counts as masked)."""

from __future__ import annotations

from typing import Any

import numpy as np
from rasterio.windows import Window

from .grid import GridRaster


class FileMask:
    """Masks the pixels where the user's raster is non-zero, NaN, its nodata, or off its footprint."""

    name = "file"

    def __init__(self, path: str, scene: Any) -> None:
        self.raster = GridRaster(path, scene, fill=np.nan, what="mask file")
        nodata = self.raster._ds.nodata
        self.nodata = None if nodata is None else float(nodata)

    def masked(self, window: Window, dn: np.ndarray, bands: list[str]) -> np.ndarray:
        values = self.raster.read(window)
        out = (values != 0) | np.isnan(values)
        if self.nodata is not None and not np.isnan(self.nodata):
            out |= values == self.nodata
        return out

    def close(self) -> None:
        self.raster.close()
