"""Open one raster file and check that it can be used: its format, its georeference, its footprint."""

from __future__ import annotations

import os
import warnings
from typing import Any

import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.warp import transform_bounds

from ..errors import RasterInputError

#: GDAL drivers of pictures (no georeference, 8-bit display values), whatever the file is called.
PICTURE_DRIVERS = {"PNG": "PNG", "JPEG": "JPEG", "GIF": "GIF", "BMP": "BMP", "WEBP": "WebP"}
#: Band files must share at least this fraction of their footprints (intersection over union).
MIN_SHARED_FOOTPRINT = 0.5


def open_raster(path: str) -> Any:
    """``rasterio.open`` with messages that name the problem and the fix."""
    virtual = path.startswith("/vsi")
    if not virtual and not os.path.exists(path):
        raise RasterInputError(f"Input {path} does not exist; check the path.")
    if not virtual and os.path.isdir(path):
        raise RasterInputError(f"{path} is a folder where a raster file was expected.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(path)
    except RasterioError as err:
        raise RasterInputError(
            f"Cannot open {path} as a raster ({err}). Give a GeoTIFF or JP2 file; if it is one, it is "
            "truncated or corrupt: download or export it again."
        ) from err
    if ds.driver in PICTURE_DRIVERS:
        ds.close()
        raise RasterInputError(
            f"{path} is a {PICTURE_DRIVERS[ds.driver]} picture, not a Sentinel-2 band file (whatever its name says): "
            "it has no georeference and holds display colours, not digital numbers. Give the product's band "
            "files (GeoTIFF or JP2), a SAFE folder or a multi-band GeoTIFF."
        )
    return ds


def check_georeferenced(ds: Any, path: str) -> None:
    """Raise unless ``ds`` has a CRS and a north-up geotransform."""
    if ds.crs is None:
        raise RasterInputError(
            f"{path} has no coordinate reference system (CRS), so bands cannot be aligned and the output "
            "cannot be georeferenced. Assign one, e.g. `gdal_edit.py -a_srs EPSG:32633 FILE`, or export "
            "the scene with its CRS."
        )
    if ds.transform.is_identity:
        raise RasterInputError(
            f"{path} has no geotransform (pixel size and origin). Export the scene with its georeferencing."
        )
    if ds.transform.b != 0 or ds.transform.d != 0:
        raise RasterInputError(
            f"{path} has a rotated geotransform, which earth-embed does not support. Warp it to a north-up "
            "grid first, e.g. `gdalwarp IN OUT`."
        )


def shared_footprint(ds: Any, ref: Any) -> float:
    """Intersection over union of the footprints of ``ds`` and ``ref`` (in ``ref``'s CRS), 0..1."""
    left, bottom, right, top = ds.bounds
    if ds.crs != ref.crs:
        try:
            left, bottom, right, top = transform_bounds(ds.crs, ref.crs, left, bottom, right, top)
        except Exception:  # a CRS pair PROJ cannot relate: nothing in common
            return 0.0
    r_left, r_bottom, r_right, r_top = ref.bounds
    width = min(right, r_right) - max(left, r_left)
    height = min(top, r_top) - max(bottom, r_bottom)
    inter = max(0.0, width) * max(0.0, height)
    union = (right - left) * (top - bottom) + (r_right - r_left) * (r_top - r_bottom) - inter
    return inter / union if union > 0 else 0.0


def check_footprints(datasets: dict[str, Any], paths: dict[str, str], ref_name: str) -> None:
    """Refuse band files that do not cover one footprint (different scenes, another CRS far away)."""
    ref = datasets[ref_name]
    for band, ds in datasets.items():
        shared = shared_footprint(ds, ref)
        if shared >= MIN_SHARED_FOOTPRINT:
            continue
        where = "do not overlap at all" if shared == 0 else f"share only {shared:.0%} of their footprint"
        raise RasterInputError(
            f"Band files {paths[band]} ({band}, {ds.crs}) and {paths[ref_name]} ({ref_name}, {ref.crs}) {where}: "
            "they come from different scenes or places. Give the band files of one scene (one tile, one date)."
        )


__all__ = ["check_footprints", "check_georeferenced", "open_raster", "shared_footprint"]
