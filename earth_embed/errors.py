"""Exceptions raised by earth-embed. Every message says what is wrong and how to fix it."""

from __future__ import annotations


class EarthEmbedError(ValueError):
    """Base class of all earth-embed errors (a ValueError, so generic handlers still catch it)."""


class BandError(EarthEmbedError):
    """Unknown, missing or miscounted Sentinel-2 bands."""


class ConfigError(EarthEmbedError):
    """An invalid or incompatible model configuration (config.json)."""


class WeightsError(EarthEmbedError):
    """Missing, refused (pickle) or mismatching model weights."""


class ModelNotFoundError(EarthEmbedError):
    """A model folder or hub repository that cannot be found or reached."""


class RasterInputError(EarthEmbedError):
    """A raster input that cannot be used (no CRS, truncated, too small, unnamed bands...)."""


class OutputError(EarthEmbedError):
    """An output that cannot be written: full disk, file-size limit, another run writing the same file."""


class InputWarning(UserWarning):
    """An input that is used but looks wrong (implausible values, a likely missing DN offset...)."""


class LabelError(EarthEmbedError):
    """Labels (vector or raster) that cannot be used to fit a head: empty, off the raster, unknown column..."""


class MissingDependencyError(EarthEmbedError):
    """An optional dependency (an extra such as ``earth-embed[apps]``) is not installed."""


class PrecisionError(EarthEmbedError):
    """A compute precision that is unknown or cannot run on the device (fp16 on a CPU...)."""


class PrecisionWarning(InputWarning):
    """A compute precision that is used in another form than asked (bf16 asked where it is not native: fp32)."""
