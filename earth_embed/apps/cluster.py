"""Unsupervised maps: k-means on a sample of the embeddings, then every pixel assigned window by window.

Embeddings are scaled to unit length first, so clusters group pixels by cosine similarity (the
geometry the encoder's contrastive objective trains). The sample is uniform over the valid pixels and
drawn in one pass with constant memory (each pixel gets a random key; the smallest keys are kept).
Clusters are numbered by size in the sample, largest first (value 1), and written as a uint8 class map.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import LabelError
from ..outputs.classmap import class_map_style, landcover_png
from ..outputs.embeddings import EmbeddingRaster, open_embeddings
from ..outputs.geotiff import check_output_path
from .deps import require
from .maps import map_writer, stream_pixels, unit_rows


def sample_pixels(emb: EmbeddingRaster, n: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """A uniform sample of at most ``n`` valid (n, D) embeddings, and the number of valid pixels."""
    rng = np.random.default_rng(seed)
    keys = np.zeros(0, np.float64)
    vecs = np.zeros((0, emb.dim), np.float32)
    total = 0
    for win in emb.windows():
        block = emb.read(win)
        x = block[:, np.isfinite(block).all(axis=0)].T
        total += len(x)
        keys = np.concatenate([keys, rng.random(len(x))])
        vecs = np.concatenate([vecs, x])
        if len(keys) > n:
            keep = np.argpartition(keys, n)[:n]
            keys, vecs = keys[keep], vecs[keep]
    return vecs, total


def cluster(
    embeddings: str | os.PathLike,
    out: str | os.PathLike,
    *,
    k: int,
    sample: int = 50_000,
    seed: int = 0,
    png: str | os.PathLike | bool = True,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a k-means cluster map of ``embeddings`` (uint8 GeoTIFF: clusters 1..k, 0 = nodata, colour table).

    k-means (scikit-learn, ``k`` clusters, ``seed``) is fitted on a uniform sample of ``sample`` valid
    pixels, then every pixel is assigned to its nearest centre, window by window. ``png=True`` also
    writes ``out`` with the suffix ``.png`` (map and legend with each cluster's share), or give its path.
    """
    require("sklearn")
    from sklearn.cluster import KMeans

    if not 2 <= k <= 254:
        raise LabelError(f"k={k}: give between 2 and 254 clusters (a uint8 map holds 254 classes).")
    out = check_output_path(out, overwrite)
    png_path = None if png is False else (out.with_suffix(".png") if png is True else Path(png))
    if png_path is not None:
        check_output_path(png_path, overwrite)
    with open_embeddings(embeddings) as emb:
        x, total = sample_pixels(emb, max(sample, k), seed)
        if total < k:
            raise LabelError(
                f"k={k} is larger than the number of valid (non-nodata) pixels of {emb.path} ({total}); "
                f"ask for at most {total} clusters."
            )
        km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(unit_rows(x))
        order = np.argsort(-np.bincount(km.labels_, minlength=k), kind="stable")  # largest cluster first
        value = np.empty(k, np.int64)
        value[order] = np.arange(1, k + 1)
        classes = [f"cluster {i}" for i in range(1, k + 1)]
        tags, colormap = class_map_style(classes, _palette(k))
        tags.update(CLUSTERING=f"k-means on unit-length embeddings, k={k}, sample={len(x)}, seed={seed}")
        writer = map_writer(emb, out, count=1, dtype="uint8", tags=tags, colormap=colormap, overwrite=overwrite)
        stream_pixels(
            emb, [(writer, lambda v: value[km.predict(unit_rows(v))][:, None])], progress=progress, desc="clusters"
        )
    if png_path is not None:
        landcover_png(out, png_path)
    return out


def _palette(k: int) -> list[tuple[int, int, int]]:
    """k distinct colours: matplotlib's tab20 (then hsv beyond 20)."""
    require("matplotlib")
    from matplotlib import colormaps

    cmap = colormaps["tab20"] if k <= 20 else colormaps["hsv"].resampled(k)
    return [tuple(int(255 * v) for v in cmap(i % cmap.N)[:3]) for i in range(k)]  # type: ignore[misc]
