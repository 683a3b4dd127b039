"""Real inputs for the change tests: small crops of OSCD city pairs (both dates) and their change labels.

OSCD ships in EPSG:4326 with pixels that are square in degrees only to 0.05 % (e.g. 0.000116348 x
0.000116405 deg in Paris). The crops keep every pixel value and the origin but write the pixel height
equal to the width, so that ``earth-embed embed`` (whose plan wants square pixels in one CRS) embeds them:
over a 256 px crop that moves the far edge by 0.1 px. Both dates of a city on one grid get the same
transform, so their embeddings share a grid; a city on two grids keeps two.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from earth_embed import RELEASE_BANDS
from earth_embed.inputs import open_scene

#: (city, row0, col0) of crops rich in labelled change (found from change.tif): 7 % and 12 % change.
MUMBAI = ("mumbai", 0, 0)
HONGKONG = ("hongkong", 384, 256)


def square(transform: Affine) -> Affine:
    """The transform with the pixel height set to the pixel width (same origin, north-up)."""
    return Affine(transform.a, 0.0, transform.c, 0.0, -transform.a, transform.f)


def write_crop(shared: Path, date: str, city: str, row0: int, col0: int, size: int, dst: Path) -> Path:
    """The 10 release bands of ``unlabelled/<date>/<city>`` (its own 10 m grid), rows/cols from ``row0``/``col0``,
    as a uint16 GeoTIFF with band descriptions."""
    with open_scene(shared / "unlabelled" / date / city, bands=RELEASE_BANDS) as scene:
        h, w = min(size, scene.height - row0), min(size, scene.width - col0)
        dn = scene.read(((row0, row0 + h), (col0, col0 + w)), bands=RELEASE_BANDS)
        crs, tr = scene.crs, square(scene.transform @ Affine.translation(col0, row0))
    profile = dict(driver="GTiff", count=10, height=h, width=w, dtype="uint16", crs=crs, transform=tr)
    with rasterio.open(dst, "w", **profile) as ds:
        ds.write(np.round(dn).astype(np.uint16))
        for i, band in enumerate(RELEASE_BANDS):
            ds.set_band_description(i + 1, band)
    return dst


def crop_labels(shared: Path, city: str, row0: int, col0: int, size: int) -> np.ndarray:
    """The change map (1 change, 0 no change) of the crop on the date-1 grid."""
    with rasterio.open(shared / "labelled" / "oscd-change" / city / "change.tif") as ds:
        return ds.read(1)[row0 : row0 + size, col0 : col0 + size]


def write_label_points(path: Path, tif: Path, y: np.ndarray, n: int, seed: int = 0) -> Path:
    """A GeoJSON (EPSG:4326 via the crop's CRS) of ``n`` random pixels per class of ``y`` with a ``class`` of
    ``change`` or ``no change``."""
    rng = np.random.default_rng(seed)
    with rasterio.open(tif) as ds:
        tr, crs = ds.transform, ds.crs
    assert crs.to_epsg() == 4326
    features = []
    for value, name in ((1, "change"), (0, "no change")):
        rows, cols = np.nonzero(y == value)
        pick = rng.choice(len(rows), size=min(n, len(rows)), replace=False)
        for r, c in zip(rows[pick], cols[pick]):
            x, yy = tr @ (c + 0.5, r + 0.5)
            features.append(
                {
                    "type": "Feature",
                    "properties": {"class": name},
                    "geometry": {"type": "Point", "coordinates": [x, yy]},
                }
            )
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def square_grow(mask: np.ndarray, buffer: int) -> np.ndarray:
    """``mask`` grown by ``buffer`` px in every direction (a square of side 2 * buffer + 1), pixel by pixel: the
    tests' own reading of the saturated mask's buffer."""
    out = mask.copy()
    for r, c in np.argwhere(mask):
        out[max(0, r - buffer) : r + buffer + 1, max(0, c - buffer) : c + buffer + 1] = True
    return out
