"""Read embedding rasters: one reader, and the dequantisation of every storage rule in one place.

Every consumer of embedding rasters (the apps: fit, similar, cluster; the preview) reads through
:func:`open_embeddings` / :func:`dequantize`, which return float32 values with NaN where the raster
is nodata, whatever the stored type, by the raster's own tags:

* float16/float32 GeoTIFFs of ``earth-embed embed``: as stored (NaN is nodata);
* int8 GeoTIFFs of ``earth-embed embed --dtype int8``: ``stored * scale + offset`` per band, -128 nodata;
* int8 COGs exported from a region store (tag ``EMBEDDING_QUANTIZATION=pixel-scale-int8``): the per-pixel
  rule of :mod:`earth_embed.region.quantize`, with the scales read from the COG named by
  ``EMBEDDING_SCALES_FILE`` beside it.

A new storage rule is added here, once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from ..errors import RasterInputError
from ..region import quantize

#: Side of the windows that the apps read, predict and write at a time (a multiple of the 256 px tiles).
WINDOW = 512


def is_embedding_tags(tags: dict[str, str]) -> bool:
    """True for the tags of an embedding raster (``embed``'s KIND, or a region COG's quantisation tag)."""
    return tags.get("KIND") == "embeddings" or quantize.TAG in tags


def dequantize(stored: np.ndarray, ds: Any, bands: list[int] | None = None) -> np.ndarray:
    """Stored values (C, h, w) of the open dataset ``ds`` -> float32 embeddings, NaN where nodata.

    int8: ``value = stored * scale + offset`` per band (the GeoTIFF's scale/offset metadata written by
    ``GeoTiffWriter``), ``nodata`` (-128) -> NaN. Floats: as stored (NaN is their nodata).
    ``bands`` are the 1-based band indexes that ``stored`` holds (default: all).
    """
    x = stored.astype(np.float32, copy=False)
    if ds.dtypes[0] == "int8":
        idx = [b - 1 for b in (bands or range(1, ds.count + 1))]
        scales = np.asarray(ds.scales, np.float32)[idx, None, None]
        offsets = np.asarray(ds.offsets, np.float32)[idx, None, None]
        x = np.where(stored == ds.nodata, np.nan, x * scales + offsets).astype(np.float32)
    elif ds.nodata is not None and np.isfinite(ds.nodata):
        x = np.where(stored == ds.nodata, np.nan, x)
    return x


class EmbeddingRaster:
    """An open embedding raster: grid (CRS, transform, size), dimension, tags, and float32 windows."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise RasterInputError(f"{self.path} does not exist; write embeddings first with `earth-embed embed`.")
        try:
            self._ds = rasterio.open(self.path)
        except rasterio.errors.RasterioIOError as err:
            raise RasterInputError(f"{self.path} is not a readable raster ({err}).") from err
        self.tags: dict[str, str] = self._ds.tags()
        self._scales = None  # the per-pixel scales raster of a region COG
        if not is_embedding_tags(self.tags):
            kind = self.tags.get("KIND")
            self._ds.close()
            what = f"a {kind!r} raster" if kind else "not an embedding raster (no KIND=embeddings tag)"
            raise RasterInputError(
                f"{self.path} is {what}; pass a GeoTIFF written by `earth-embed embed` "
                "(or, for `fit`, a scene together with --model to embed it on the fly)."
            )
        if self._ds.crs is None:
            self._ds.close()
            raise RasterInputError(f"{self.path} has no CRS; re-run `earth-embed embed` on a georeferenced scene.")
        if self.tags.get(quantize.TAG) == quantize.RULE:
            scales = self.path.parent / self.tags.get("EMBEDDING_SCALES_FILE", "")
            if not scales.is_file() or scales == self.path.parent:
                self._ds.close()
                raise RasterInputError(
                    f"{self.path} holds int8 codes whose per-pixel scales are in {scales}, which is missing; "
                    "keep the scales COG beside the codes (export them together)."
                )
            self._scales = rasterio.open(scales)

    @property
    def height(self) -> int:
        return int(self._ds.height)

    @property
    def width(self) -> int:
        return int(self._ds.width)

    @property
    def dim(self) -> int:
        """Embedding size D (number of bands)."""
        return int(self._ds.count)

    @property
    def crs(self) -> Any:
        return self._ds.crs

    @property
    def transform(self) -> Any:
        return self._ds.transform

    @property
    def bounds(self) -> Any:
        return self._ds.bounds

    @property
    def model(self) -> str | None:
        """The encoder that wrote the raster (its MODEL or EMBEDDING_MODEL tag), if recorded."""
        return self.tags.get("MODEL") or self.tags.get("EMBEDDING_MODEL") or None

    def read(self, window: Window | None = None) -> np.ndarray:
        """Float32 embeddings (D, h, w) of ``window`` (default: all), NaN where nodata."""
        if self._scales is not None:
            return quantize.decode(self._ds.read(window=window), self.tags, self._scales.read(1, window=window))
        return dequantize(self._ds.read(window=window), self._ds)

    def read_pixels(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Float32 embeddings (n, D) at pixel positions, read window by window (rows of any order)."""
        rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        out = np.full((rows.size, self.dim), np.nan, np.float32)
        for win in self.windows():
            r0, c0 = int(win.row_off), int(win.col_off)
            inside = (rows >= r0) & (rows < r0 + win.height) & (cols >= c0) & (cols < c0 + win.width)
            if inside.any():
                block = self.read(win)
                out[inside] = block[:, rows[inside] - r0, cols[inside] - c0].T
        return out

    def windows(self, size: int = WINDOW) -> Iterator[Window]:
        """Windows of ``size`` px covering the raster row by row (aligned to the output tiles)."""
        for r in range(0, self.height, size):
            for c in range(0, self.width, size):
                yield Window(c, r, min(size, self.width - c), min(size, self.height - r))

    def close(self) -> None:
        self._ds.close()
        if self._scales is not None:
            self._scales.close()

    def __enter__(self) -> EmbeddingRaster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_embeddings(path: str | os.PathLike) -> EmbeddingRaster:
    """Open an embedding raster written by ``earth-embed embed`` (float16, float32 or int8 GeoTIFF)."""
    return EmbeddingRaster(path)
