"""STAC ItemCollections as scene lists: a local ItemCollection whose assets are per-band files.

pystac is imported when used, not by ``import earth_embed``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..bands import canonical_band_name
from ..errors import BandError, RasterInputError
from .bandfiles import band_from_filename


def _local_path(href: str, base: Path) -> str:
    if href.startswith("file://"):
        href = href[len("file://") :]
    if re.match(r"^[a-z][a-z0-9+.-]*://", href) or href.startswith("/vsi"):
        return href  # rasterio opens URLs and GDAL virtual paths itself
    p = Path(href)
    return str(p if p.is_absolute() else (base / p).resolve())


def _asset_band(key: str, asset: Any) -> str | None:
    """The Sentinel-2 band an asset holds: from its ``eo:bands`` / ``bands`` name, else its key."""
    names = [b.get("name") for b in asset.extra_fields.get("eo:bands", []) + asset.extra_fields.get("bands", [])]
    for name in [*names, key]:
        if not name:
            continue
        try:
            return canonical_band_name(name)
        except BandError:
            continue
    return None


def scenes_from_item_collection(path: str | os.PathLike) -> list[list[str]]:
    """A local STAC ItemCollection (JSON) -> one list of per-band files per Item (the scene list).

    Each Item's assets that hold one Sentinel-2 band (by ``eo:bands``/``bands`` name or by asset key such
    as ``B02`` or ``blue``) become that scene's band files; relative hrefs resolve against the JSON file's
    folder. Other assets (thumbnails, masks) are ignored.
    """
    import pystac

    src = Path(path)
    try:
        collection = pystac.ItemCollection.from_file(str(src))
    except (OSError, ValueError, KeyError, pystac.errors.STACError, pystac.errors.STACTypeError) as err:
        raise RasterInputError(
            f"{src} is not a readable STAC ItemCollection ({err}). Pass a FeatureCollection JSON of STAC Items."
        ) from err
    base = src.resolve().parent
    scenes = []
    for item in collection.items:
        files: dict[str, str] = {}
        for key, asset in item.assets.items():
            band = _asset_band(key, asset)
            if band is None:
                continue
            href = _local_path(asset.href, base)
            if band_from_filename(href) != band:
                raise RasterInputError(
                    f"STAC item {item.id}: asset {key!r} holds band {band} but its file {href} is not named "
                    f"for it; the per-band reader needs the band in the file name (e.g. .../{band}.tif). "
                    "Rename the file or point the asset at one that is."
                )
            files[band] = href
        if not files:
            raise RasterInputError(
                f"STAC item {item.id} in {src} has no per-band Sentinel-2 assets (keys such as B02 or blue, "
                "or eo:bands names). Add one asset per band."
            )
        scenes.append([files[b] for b in sorted(files)])
    if not scenes:
        raise RasterInputError(f"{src} holds no STAC Items; add one Item per scene.")
    return scenes
