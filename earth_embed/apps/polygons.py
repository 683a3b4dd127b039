"""Vectorise one class of a uint8 map into polygons (GeoPackage or GeoJSON), with areas on the ground.

Connected pixels of the class (8-connectivity) become one polygon (GDAL's polygonize through
``rasterio.features.shapes``), in the map's CRS. Each feature carries its pixel count, its area in square
metres (in a geographic CRS measured at the polygon's latitude on a sphere of the Earth's mean radius) and the
mean of a score map over its pixels. The file is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.features import rasterize, shapes

from ..errors import EarthEmbedError
from .deps import require

#: Vector formats by name: (GDAL driver, file suffix).
FORMATS = {"gpkg": ("GPKG", ".gpkg"), "geojson": ("GeoJSON", ".geojson")}
#: Mean radius of the Earth (IUGG), metres.
EARTH_RADIUS_M = 6_371_008.8


def pixel_area_m2(crs: Any, transform: Any, y: float) -> float:
    """Ground area of one pixel in m²; in a geographic CRS at latitude ``y`` (degrees), else anywhere."""
    a, e = abs(transform.a), abs(transform.e)
    if crs.is_geographic:
        deg = math.pi / 180 * EARTH_RADIUS_M
        return a * deg * math.cos(math.radians(y)) * e * deg
    factor = float(crs.linear_units_factor[1])
    return a * e * factor * factor


def vectorise(
    classes: np.ndarray,
    value: int,
    score: np.ndarray,
    crs: Any,
    transform: Any,
    dst: str | os.PathLike,
    *,
    fmt: str = "gpkg",
    min_area_m2: float = 0.0,
) -> tuple[Path, int]:
    """Write the polygons of ``classes == value`` (2-D map on ``transform``) to ``dst``; return (path, count).

    Polygons smaller than ``min_area_m2`` are left out. Fields: ``pixels``, ``area_m2``, ``mean_score``.
    """
    if fmt not in FORMATS:
        raise EarthEmbedError(f"Unknown polygon format {fmt!r}; use one of {', '.join(FORMATS)}.")
    shapely = require("shapely")
    pyogrio = require("pyogrio")
    target = classes == value
    geoms = [shapely.geometry.shape(g) for g, _ in shapes(target.astype(np.uint8), target, 8, transform)]
    unit = abs(transform.a * transform.e)
    pixels = np.array([round(g.area / unit) for g in geoms], np.int64)
    areas = np.array([n * pixel_area_m2(crs, transform, g.centroid.y) for n, g in zip(pixels, geoms)], np.float64)
    means = np.zeros(len(geoms), np.float64)
    if geoms:
        ids = rasterize([(g, i + 1) for i, g in enumerate(geoms)], out_shape=classes.shape, transform=transform,
                        fill=0, dtype="int32")  # fmt: skip
        finite = np.isfinite(score) & (ids > 0)
        sums = np.bincount(ids[finite], weights=score[finite], minlength=len(geoms) + 1)[1:]
        counts = np.bincount(ids[finite], minlength=len(geoms) + 1)[1:]
        means = sums / np.maximum(counts, 1)
    keep = areas >= float(min_area_m2)
    kept = [g for g, k in zip(geoms, keep) if k]
    out = Path(dst)
    tmp = out.with_name(f".{out.stem}.partial-{os.getpid()}{out.suffix}")
    tmp.unlink(missing_ok=True)
    driver = FORMATS[fmt][0]
    try:
        pyogrio.raw.write(
            tmp, np.array(shapely.to_wkb(kept) if kept else [], dtype=object),
            [pixels[keep].astype(np.int64), areas[keep].round(1), means[keep].astype(np.float64)],
            fields=["pixels", "area_m2", "mean_score"], crs=crs.to_wkt(), driver=driver, geometry_type="Polygon",
            layer="changes",
        )  # fmt: skip
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out, len(kept)
