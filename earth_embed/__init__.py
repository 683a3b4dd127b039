"""earth-embed: dense self-supervised Sentinel-2 embeddings (Embedding Earth, Tarasiou & Zafeiriou 2022)."""

from __future__ import annotations

__version__ = "0.1.0"

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
    "WeightsError",
    "__version__",
    "canonical_band_name",
    "list_architectures",
    "select_bands",
]
