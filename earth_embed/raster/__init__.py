"""Raster I/O: open Sentinel-2 scenes, stream them through a model, write georeferenced outputs.

``open_scene`` needs only rasterio; the streaming functions (``embed_raster``, ``classify_raster``)
import torch and the model classes on first use.
"""

from __future__ import annotations

from .reader import S2_NODATA, Scene, band_from_filename, open_scene

__all__ = [
    "S2_NODATA",
    "Scene",
    "band_from_filename",
    "classify_raster",
    "embed_raster",
    "make_preview",
    "open_scene",
]


def __getattr__(name: str):
    if name in ("embed_raster", "classify_raster"):
        from . import pipeline

        return getattr(pipeline, name)
    if name == "make_preview":
        from .preview import make_preview

        return make_preview
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
