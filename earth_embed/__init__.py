"""earth-embed: dense self-supervised Sentinel-2 embeddings (Embedding Earth, Tarasiou & Zafeiriou 2022)."""

from __future__ import annotations

from .bands import RELEASE_BANDS, S2_BANDS, canonical_band_name, select_bands
from .config import EarthConfig, Normalization
from .encoder import EarthEncoder
from .errors import (
    BandError,
    ConfigError,
    EarthEmbedError,
    LabelError,
    MissingDependencyError,
    ModelNotFoundError,
    RasterInputError,
    WeightsError,
)
from .registry import list_architectures
from .segmenter import EarthSegmenter
from .version import __version__

#: The public verbs (earth_embed.api), imported on first use so that ``import earth_embed`` stays light
#: (no rasterio pipeline, zarr or Ray until a verb is called).
_API = (
    "embed_raster",
    "classify_raster",
    "embed_region",
    "open_embeddings",
    "load_released",
    "verify_store",
    "composite",
    "RegionRun",
)


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])


__all__ = [
    "RELEASE_BANDS",
    "S2_BANDS",
    "BandError",
    "ConfigError",
    "EarthConfig",
    "EarthEmbedError",
    "EarthEncoder",
    "EarthSegmenter",
    "LabelError",
    "MissingDependencyError",
    "ModelNotFoundError",
    "Normalization",
    "RasterInputError",
    "RegionRun",
    "WeightsError",
    "__version__",
    "canonical_band_name",
    "classify_raster",
    "composite",
    "embed_raster",
    "embed_region",
    "list_architectures",
    "load_released",
    "open_embeddings",
    "select_bands",
    "verify_store",
]
