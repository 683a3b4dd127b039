"""Stream an embedding raster window by window into one or more GeoTIFFs (constant memory).

Every app (fit's class map and probabilities, similar, cluster) computes its output per pixel from
the pixel's embedding; this module does the reading, the nodata handling and the atomic writing
(``GeoTiffWriter``) once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

import numpy as np

from ..outputs.embeddings import EmbeddingRaster
from ..outputs.geotiff import GeoTiffWriter

#: fn(x) with x the (n, D) float32 embeddings of a window's valid pixels -> (n, C) outputs.
PixelFn = Callable[[np.ndarray], np.ndarray]


def map_writer(
    emb: EmbeddingRaster,
    dst: str | os.PathLike,
    *,
    count: int,
    dtype: str,
    tags: Mapping[str, Any] | None = None,
    colormap: Mapping[int, Sequence[int]] | None = None,
    descriptions: Sequence[str] | None = None,
    overwrite: bool = False,
) -> GeoTiffWriter:
    """A tiled, compressed GeoTIFF writer on the embeddings' grid (written under a temporary name)."""
    base = {"SOURCE_EMBEDDINGS": str(emb.path), "MODEL": emb.model or "unknown"}
    return GeoTiffWriter(
        dst,
        height=emb.height,
        width=emb.width,
        count=count,
        crs=emb.crs,
        transform=emb.transform,
        dtype=dtype,
        descriptions=descriptions,
        tags={**base, **(tags or {})},
        colormap=colormap,
        compress="deflate" if dtype == "uint8" else "zstd",
        overwrite=overwrite,
    )


def stream_pixels(
    emb: EmbeddingRaster,
    outputs: Sequence[tuple[GeoTiffWriter, PixelFn]],
    *,
    progress: bool = False,
    desc: str = "windows",
) -> None:
    """For each window: read, apply each ``fn`` to the valid pixels, write; commit all writers at the end.

    Nodata pixels (any NaN dimension) get 0 in uint8 outputs and NaN in float ones. On any exception
    every writer is aborted: nothing appears under the final names.
    """
    from tqdm.auto import tqdm

    windows = list(emb.windows())
    with ExitStack() as stack:
        for writer, _ in outputs:
            stack.enter_context(writer)  # commit on success, abort on exception
        for win in tqdm(windows, desc=desc, unit="window", disable=not progress, dynamic_ncols=True):
            block = emb.read(win)
            valid = np.isfinite(block).all(axis=0)
            x = block[:, valid].T
            for writer, fn in outputs:
                fill = 0 if writer.dtype == "uint8" else np.nan
                out = np.full((writer.count, *valid.shape), fill, np.float32)
                if x.size:
                    out[:, valid] = np.asarray(fn(x), np.float32).T
                writer.write(int(win.row_off), int(win.col_off), out.astype(np.uint8) if fill == 0 else out)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit length (zero rows stay zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)
