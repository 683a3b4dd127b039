"""Open Sentinel-2 scenes: multi-band files, folders of band files, SAFE products, STAC ItemCollections.

The DN offset of a product and the plausibility of its values are settled in one place,
:func:`earth_embed.inputs.spec.settle_scene`. Needs rasterio (no torch).
"""

from __future__ import annotations

from .bandfiles import band_from_filename
from .reader import open_scene
from .scene import S2_NODATA, S2_SATURATED, Scene
from .spec import SceneSpec, settle_scene

__all__ = ["S2_NODATA", "S2_SATURATED", "Scene", "SceneSpec", "band_from_filename", "open_scene", "settle_scene"]
