"""The public verbs of earth-embed, one per job; ``import earth_embed`` re-exports them lazily.

- :func:`embed_raster`: one scene -> a georeferenced embedding GeoTIFF (int8 codes + scales by default);
- :func:`classify_raster`: one scene -> a land-cover GeoTIFF through a segmenter;
- :func:`embed_region`: many scenes (several CRSs) -> one resumable Zarr store, COGs and STAC if asked;
- :func:`composite`: a store's acquisition layers over a period -> one embedding per pixel from its clear
  observations (int8 GeoTIFF + scales, with the observation count and spread beside it);
- :func:`open_embeddings`: any of these outputs back, decoded to float32 (or as xarray);
- :func:`verify_store`: a full check of a region store; ``repair=True`` recomputes what fails;
- :func:`load_released`: the released encoder or segmenter.

Their defaults are the command line's (``earth-embed embed``, ``classify``, ``embed-region``, ``composite``).
"""

from __future__ import annotations

from .outputs.embeddings import open_embeddings
from .pipeline.composite import composite
from .pipeline.region import RegionRun, embed_region
from .pipeline.repair import verify_store
from .pipeline.scene import classify_raster, embed_raster
from .released import load_released

__all__ = [
    "RegionRun",
    "classify_raster",
    "composite",
    "embed_raster",
    "embed_region",
    "load_released",
    "open_embeddings",
    "verify_store",
]
