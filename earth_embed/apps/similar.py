"""Similarity search: how much every pixel of a scene looks like a few query places (cosine similarity).

The query is the mean embedding of the query pixels: points given as longitude/latitude, or every
pixel of the polygons (or points) in a vector file. The output is a float32 GeoTIFF of the cosine
similarity in [-1, 1] (NaN where the embeddings are nodata), streamed, plus a PNG with a colour bar.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rasterio.transform import rowcol
from rasterio.warp import transform, transform_bounds

from ..errors import LabelError
from ..outputs.embeddings import EmbeddingRaster, open_embeddings
from ..outputs.geotiff import check_output_path
from .labels import geometry_pixels, read_geometries
from .maps import map_writer, stream_pixels, unit_rows
from .render import similarity_png


def point_pixels(points: Sequence[tuple[float, float]], emb: EmbeddingRaster) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of longitude/latitude points on the raster; a point off the raster is an error."""
    lons, lats = zip(*[(float(p[0]), float(p[1])) for p in points])
    xs, ys = transform("EPSG:4326", emb.crs, list(lons), list(lats))
    r, c = rowcol(emb.transform, xs, ys)
    rows, cols = np.asarray(r, np.int64), np.asarray(c, np.int64)
    for lon, lat, row, col in zip(lons, lats, rows, cols):
        if not (0 <= row < emb.height and 0 <= col < emb.width):
            b = transform_bounds(emb.crs, "EPSG:4326", *emb.bounds)
            raise LabelError(
                f"The point {lon:g},{lat:g} (LON,LAT) lies outside {emb.path}, which spans longitude "
                f"{b[0]:.4f} to {b[2]:.4f} and latitude {b[1]:.4f} to {b[3]:.4f}. Give points on the raster "
                "(longitude first)."
            )
    return rows, cols


def polygon_pixels(path: str | os.PathLike, emb: EmbeddingRaster) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of every pixel covered by the features of a vector file (any CRS)."""
    geoms, _ = read_geometries(path, emb, None)
    pix = [geometry_pixels(g, emb) for g in geoms]
    rows = np.concatenate([p[0] for p in pix])
    cols = np.concatenate([p[1] for p in pix])
    if rows.size == 0:
        b = transform_bounds(emb.crs, "EPSG:4326", *emb.bounds)
        raise LabelError(
            f"No feature of {path} covers a pixel of {emb.path} (longitude {b[0]:.4f} to {b[2]:.4f}, latitude "
            f"{b[1]:.4f} to {b[3]:.4f}); draw the query over this scene."
        )
    return rows, cols


def query_vector(emb: EmbeddingRaster, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The mean (D,) embedding of the query pixels (nodata pixels left out)."""
    x = emb.read_pixels(rows, cols)
    x = x[np.isfinite(x).all(axis=1)]
    if len(x) == 0:
        raise LabelError(f"Every query pixel is nodata in {emb.path}; pick places where the scene has data.")
    return x.mean(axis=0)


def similar(
    embeddings: str | os.PathLike,
    out: str | os.PathLike,
    *,
    points: Sequence[tuple[float, float]] | None = None,
    polygon: str | os.PathLike | None = None,
    png: str | os.PathLike | bool = True,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write the cosine similarity of every pixel of ``embeddings`` to the mean embedding of a query.

    The query is ``points`` (a list of (longitude, latitude) in degrees) or every pixel covered by the
    features of the vector file ``polygon`` (any CRS). ``out`` is a float32 GeoTIFF on the embeddings'
    grid; ``png=True`` also writes ``out`` with the suffix ``.png`` (or give its path), showing the
    similarity with a colour bar and the query marked. Returns the GeoTIFF's path.
    """
    if (points is None) == (polygon is None):
        raise LabelError(
            "Give the query as points (CLI: --point LON,LAT ...) or as a vector file (--polygon FILE), not both."
        )
    if points is not None and len(points) == 0:
        raise LabelError("points is empty; give at least one (longitude, latitude) point.")
    out = check_output_path(out, overwrite)
    png_path = None if png is False else (out.with_suffix(".png") if png is True else Path(png))
    if png_path is not None:
        check_output_path(png_path, overwrite)
    with open_embeddings(embeddings) as emb:
        rows, cols = point_pixels(points, emb) if points is not None else polygon_pixels(polygon, emb)  # type: ignore[arg-type]
        q = unit_rows(query_vector(emb, rows, cols)[None])[0]
        what = f"{len(points)} point(s)" if points is not None else f"{len(rows)} px of {polygon}"
        tags = {"KIND": "similarity", "QUERY": what, "SIMILARITY": "cosine to the mean query embedding"}
        writer = map_writer(
            emb, out, count=1, dtype="float32", tags=tags, descriptions=["cosine_similarity"], overwrite=overwrite
        )
        stream_pixels(emb, [(writer, lambda v: unit_rows(v) @ q[:, None])], progress=progress, desc="similarity")
    if png_path is not None:
        similarity_png(out, png_path, rows, cols, title=f"cosine similarity to {what}")
    return out
