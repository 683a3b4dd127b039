"""The public verbs of earth-embed, one per job; ``import earth_embed`` re-exports them lazily.

- :func:`embed_raster`: one scene -> a georeferenced embedding GeoTIFF (int8 codes + scales by default);
- :func:`classify_raster`: one scene -> a land-cover GeoTIFF through a segmenter;
- :func:`embed_region`: many scenes (several CRSs) -> one resumable Zarr store, COGs and STAC if asked;
- :func:`open_embeddings`: any of these outputs back, decoded to float32 (or as xarray);
- :func:`verify_store`: a full check of a region store; ``repair=True`` recomputes what fails;
- :func:`load_released`: the released encoder or segmenter.

Their defaults are the command line's (``earth-embed embed``, ``classify``, ``embed-region``).
"""

from __future__ import annotations

from .outputs.embeddings import open_embeddings
from .pipeline.region import RegionRun, embed_region
from .pipeline.repair import verify_store
from .pipeline.scene import classify_raster, embed_raster
from .released import load_released

__all__ = [
    "RegionRun",
    "classify_raster",
    "embed_raster",
    "embed_region",
    "load_released",
    "open_embeddings",
    "verify_store",
]
