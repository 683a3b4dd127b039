"""Per-pixel change scores between two co-registered embeddings (or any per-pixel features) of one grid.

One implementation for ``earth-embed change`` and for the evaluation (``training/experiments/change_detection.py``):

* ``cos``: 1 - cosine similarity of the two vectors, in [0, 2];
* ``cva``: change vector analysis on standardised features: each dimension is divided by its standard
  deviation pooled over both dates' valid pixels (:class:`PooledStats`), then the Euclidean norm of the
  difference;
* ``fitted``: the probability of change from a logistic head (``apps.heads``) on the pair's features
  ``[|a - b|, a, b]`` (:func:`pair_features`), fitted on labelled change / no-change pixels.

Rows are pixels: ``a`` and ``b`` are ``(n, D)`` float arrays. :func:`smooth_map` (a NaN-aware box mean of
a score map) and :func:`otsu_threshold` (the default threshold of the change mask) complete the set.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import EarthEmbedError
from ..local_stats import box_mean
from .heads import fit_head, make_head, predict_proba

#: Score names, as ``earth-embed change --score`` takes them.
SCORES = ("cos", "cva", "fitted")
#: What each score is, for tags and reports.
DESCRIPTIONS = {
    "cos": "1 - cosine similarity of the two embeddings (0 = same direction, 2 = opposite)",
    "cva": "change vector analysis: Euclidean norm of the difference of the embeddings standardised per dimension "
    "with the standard deviation pooled over both dates' valid pixels",
    "fitted": "probability of change from a logistic head on [|a - b|, a, b] fitted on labelled pixels",
}


def valid_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Boolean (n,): True where both dates have a finite vector."""
    return np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)


def cosine_change(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - cosine similarity of each row pair, float32 (n,); a zero vector counts as orthogonal to anything."""
    a64, b64 = a.astype(np.float64, copy=False), b.astype(np.float64, copy=False)
    na, nb = np.linalg.norm(a64, axis=1), np.linalg.norm(b64, axis=1)
    cos = np.einsum("nd,nd->n", a64, b64) / np.maximum(na * nb, 1e-30)
    return (1.0 - np.clip(cos, -1.0, 1.0)).astype(np.float32)


class PooledStats:
    """Per-dimension mean and standard deviation pooled over both dates' pixels, accumulated in float64.

    Feed it the valid row pairs window by window (:meth:`add`), then read :meth:`std`.
    """

    def __init__(self, dim: int) -> None:
        self.n = 0
        self.sum = np.zeros(dim, np.float64)
        self.sum_sq = np.zeros(dim, np.float64)

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        """Add (n, D) rows of both dates (rows valid in both)."""
        for x in (a, b):
            x64 = x.astype(np.float64, copy=False)
            self.n += len(x64)
            self.sum += x64.sum(axis=0)
            self.sum_sq += np.einsum("nd,nd->d", x64, x64)

    def mean(self) -> np.ndarray:
        """(D,) pooled mean."""
        if self.n == 0:
            raise EarthEmbedError("No pixel is valid in both dates, so the change statistics cannot be computed.")
        return self.sum / self.n

    def std(self) -> np.ndarray:
        """(D,) pooled standard deviation (float32); a constant dimension gets 1 (it cannot change anyway)."""
        mean = self.mean()
        var = np.maximum(self.sum_sq / self.n - mean * mean, 0.0)
        sd = np.sqrt(var)
        return np.where(sd > 1e-12 * max(1.0, float(np.abs(mean).max())), sd, 1.0).astype(np.float32)


def pooled_std(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:meth:`PooledStats.std` of two whole (n, D) arrays (rows valid in both dates)."""
    stats = PooledStats(a.shape[1])
    stats.add(a, b)
    return stats.std()


def cva_change(a: np.ndarray, b: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Norm of the standardised change vector ``||(a - b) / std||`` per row, float32 (n,)."""
    d = (a.astype(np.float32, copy=False) - b.astype(np.float32, copy=False)) / std[None, :]
    return np.sqrt(np.einsum("nd,nd->n", d, d)).astype(np.float32)


def pair_features(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The fitted head's input ``[|a - b|, a, b]`` (n, 3D), float32."""
    a32, b32 = a.astype(np.float32, copy=False), b.astype(np.float32, copy=False)
    return np.concatenate([np.abs(a32 - b32), a32, b32], axis=1)


def fit_change_head(a: np.ndarray, b: np.ndarray, y: np.ndarray, seed: int = 0) -> Any:
    """The ``fitted`` score's head (``apps.heads`` logistic: standardised features, L2, C=1) fitted on
    labelled pairs; ``y`` is 1 for change and 0 for no change."""
    y = np.asarray(y, np.int64)
    if set(np.unique(y)) != {0, 1}:
        raise EarthEmbedError("The change head needs labelled pixels of both classes (change and no change).")
    return fit_head(make_head("logistic", seed=seed), pair_features(a, b), y)


def change_probability(head: Any, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """P(change) of each row pair from a head of :func:`fit_change_head`, float32 (n,)."""
    return predict_proba(head, pair_features(a, b), 2)[:, 1]


def smooth_map(score: np.ndarray, k: int) -> np.ndarray:
    """Box mean of a 2-D score map over k x k pixels (k odd), over valid (finite) pixels only.

    NaN pixels stay NaN and do not enter their neighbours' means; at the border the window is cut
    (``local_stats.box_mean(edge="clip")``). ``k`` of 0 or 1 returns the map unchanged.
    """
    if k in (0, 1):
        return score
    if k < 0 or k % 2 == 0:
        raise EarthEmbedError(f"smooth={k}: give an odd window size in pixels (3, 5, 7 ...), or 0 for none.")
    valid = np.isfinite(score)
    x = torch.from_numpy(np.where(valid, score, 0.0).astype(np.float32))[None, None]
    w = torch.from_numpy(valid.astype(np.float32))[None, None]
    with torch.no_grad():
        num, den = box_mean(x, k, edge="clip")[0, 0].numpy(), box_mean(w, k, edge="clip")[0, 0].numpy()
    out = num / np.maximum(den, 1e-12)
    return np.where(valid, out, np.nan).astype(np.float32)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a sample of scores: the cut that maximises the between-class variance of a
    ``bins``-bin histogram over the sample's range (pixels above it are change)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise EarthEmbedError("No valid score to threshold (every pixel is nodata in one of the dates).")
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)
    w1 = w0[-1] - w0
    m0 = np.cumsum(counts * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])
