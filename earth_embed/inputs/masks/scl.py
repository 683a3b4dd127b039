"""Sen2Cor's scene classification layer (SCL), part of every L2A product, as a mask source.

The layer is found beside the band files: a file whose name has the token ``SCL`` (``SCL.tif``,
``T33UUU_20230716T100031_SCL_20m.jp2``, or in a SAFE product ``GRANULE/*/IMG_DATA/R20m/*_SCL_20m.jp2``).
"""

from __future__ import annotations

import glob
import os
import re
from typing import Any

import numpy as np
from rasterio.windows import Window

from ..bandfiles import RASTER_SUFFIXES
from .grid import GridRaster

#: SCL classes that are masked: 0 no data, 1 saturated or defective, 3 cloud shadow, 8 cloud (medium probability),
#: 9 cloud (high probability), 10 thin cirrus. Snow (11), water (6), vegetation (4) etc. are ground and stay.
SCL_MASKED = (0, 1, 3, 8, 9, 10)
_SCL_TOKEN = re.compile(r"(^|[_\-.])SCL([_\-.]|$)", re.IGNORECASE)


def find_scl(sources: list[str]) -> str | None:
    """The SCL file of a scene opened from ``sources`` (a folder, a SAFE product, or band files), or None."""
    candidates: list[str] = []
    for src in sources:
        if os.path.isdir(src):
            candidates += sorted(glob.glob(os.path.join(src, "GRANULE", "*", "IMG_DATA", "R20m", "*SCL*")))
            candidates += sorted(os.path.join(src, f) for f in os.listdir(src))
        else:
            folder = os.path.dirname(src)
            candidates += sorted(os.path.join(folder, f) for f in os.listdir(folder or "."))
    for path in candidates:
        name = os.path.basename(path)
        stem = name
        for suffix in RASTER_SUFFIXES:
            if stem.lower().endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        if stem != name and _SCL_TOKEN.search(stem) and os.path.isfile(path):
            return path
    return None


class SclMask:
    """Masks the SCL classes of :data:`SCL_MASKED` (resampled to the scene grid by nearest neighbour)."""

    name = "scl"

    def __init__(self, path: str, scene: Any) -> None:
        self.raster = GridRaster(path, scene, fill=0, what="SCL layer")

    def masked(self, window: Window, dn: np.ndarray, bands: list[str]) -> np.ndarray:
        return np.isin(self.raster.read(window), SCL_MASKED)

    def close(self) -> None:
        self.raster.close()
