"""Per-pixel change scores between two co-registered embeddings (or any per-pixel features) of one grid.

One implementation for ``earth-embed change`` and for the evaluation (``training/experiments/``). The public
entry is :func:`score_map`: two ``(D, H, W)`` feature maps (embeddings, raw bands, a hand-made stack) of one
grid in, an ``(H, W)`` score out, by one of the zero-shot scores :data:`MAP_SCORES` (``cos``, ``cva``, box-
averaged, shift-tolerant and whitened variants; :data:`DEFAULT_SCORE` was chosen on the 10 labelled OSCD
cities, see ``docs/results/change_defaults.md``). ``fitted`` is the probability of change from a logistic head
(``apps.heads``) on the pair's features ``[|a - b|, a, b]`` (:func:`pair_features`), fitted on labelled change /
no-change pixels.

The row functions below take pixels as rows: ``a`` and ``b`` are ``(n, D)`` float arrays. :func:`smooth_map`
(a NaN-aware box mean of a score map) and :func:`otsu_threshold` complete the set.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from ..errors import EarthEmbedError
from ..local_stats import box_mean
from .heads import fit_head, make_head, predict_proba

#: Zero-shot scores of :func:`score_map` (no labels needed).
MAP_SCORES = ("cos", "cva", "cva-box3", "shift-min", "whitened", "whitened-box5")
#: Score names, as ``earth-embed change --score`` takes them.
SCORES = (*MAP_SCORES, "fitted")
#: The default zero-shot score (chosen on the 10 OSCD cities, leave-one-city-out: docs/results/change_defaults.md).
DEFAULT_SCORE = "whitened-box5"
#: What each score is, for tags and reports.
DESCRIPTIONS = {
    "cos": "1 - cosine similarity of the two embeddings (0 = same direction, 2 = opposite)",
    "cva": "change vector analysis: Euclidean norm of the difference of the embeddings standardised per dimension "
    "with the standard deviation pooled over both dates' valid pixels",
    "cva-box3": "change vector analysis of each date's features box-averaged over 3 x 3 px before differencing",
    "shift-min": "shift-tolerant change vector analysis: the standardised distance from each date's vector to the "
    "nearest of the other date's 3 x 3 neighbours, the mean of both directions",
    "whitened": "Mahalanobis norm of the difference, its mean and covariance fitted on the pair's pixels and "
    "re-fitted without the 5 % farthest",
    "whitened-box5": "the whitened difference of each date's features box-averaged over 5 x 5 px",
    "fitted": "probability of change from a logistic head on [|a - b|, a, b] fitted on labelled pixels",
}
#: Box mean (px) applied to each date before differencing, per score.
BOX = {"cva-box3": 3, "whitened-box5": 5}
#: Pixels of context each score needs around a window (the box radius, or the 1 px shift).
HALO = {"cos": 0, "cva": 0, "cva-box3": 1, "shift-min": 1, "whitened": 0, "whitened-box5": 2, "fitted": 0}
#: Share of the difference vectors left out of the whitened score's covariance re-fit (the likely changes).
WHITEN_TRIM = 0.05
#: Difference vectors kept (uniform sample) to fit the whitened score's mean and covariance.
WHITEN_SAMPLE = 200_000


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


def _box_each(x: np.ndarray, k: int) -> np.ndarray:
    """NaN-aware k x k box mean of every channel of ``(D, H, W)`` (a pixel NaN in any channel stays NaN and is
    left out of its neighbours' means; the window is cut at the border)."""
    valid = np.isfinite(x).all(axis=0)
    t = torch.from_numpy(np.where(valid[None], x, 0.0).astype(np.float32))[None]
    w = torch.from_numpy(valid.astype(np.float32))[None, None]
    with torch.no_grad():
        num, den = box_mean(t, k, edge="clip")[0].numpy(), box_mean(w, k, edge="clip")[0, 0].numpy()
    return np.where(valid[None], num / np.maximum(den, 1e-12)[None], np.nan).astype(np.float32)


def prepare(a: np.ndarray, b: np.ndarray, score: str) -> tuple[np.ndarray, np.ndarray]:
    """Both dates' ``(D, H, W)`` float32 features as ``score`` compares them: box-averaged where it says so,
    NaN at every pixel that is not finite in both dates."""
    check_score(score, MAP_SCORES)
    a32, b32 = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if a32.ndim != 3 or a32.shape != b32.shape:
        raise EarthEmbedError(
            f"score_map needs two (D, H, W) feature arrays of one shape (one grid), got {a32.shape} and {b32.shape}."
        )
    bad = np.asarray(~(np.isfinite(a32).all(axis=0) & np.isfinite(b32).all(axis=0)))
    a32, b32 = np.where(bad[None], np.nan, a32), np.where(bad[None], np.nan, b32)
    if score in BOX:
        a32, b32 = _box_each(a32, BOX[score]), _box_each(b32, BOX[score])
    return a32, b32


def check_score(score: str, allowed: tuple[str, ...] = SCORES) -> None:
    if score not in allowed:
        raise EarthEmbedError(f"Unknown score {score!r}; use one of {', '.join(allowed)}.")


class ScoreStats:
    """What a zero-shot score needs to know about the whole pair, accumulated window by window from the
    prepared features' valid rows (:meth:`add`): the pooled standard deviation (CVA family) or the mean and
    robust covariance of the difference (whitened family, from a uniform sample of the differences)."""

    def __init__(self, score: str, dim: int, seed: int = 0) -> None:
        check_score(score, MAP_SCORES)
        self.score, self.dim = score, dim
        self.pooled = PooledStats(dim)
        self._rng = np.random.default_rng(seed)
        self._keys, self._diffs = np.zeros(0), np.zeros((0, dim), np.float32)
        self._done: dict[str, np.ndarray] | None = None

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        """Add prepared ``(D, h, w)`` features of both dates (NaN pixels are skipped)."""
        xa, xb = a.reshape(self.dim, -1).T, b.reshape(self.dim, -1).T
        ok = valid_rows(xa, xb)
        xa, xb = xa[ok], xb[ok]
        if self.score.startswith("whitened"):
            self._keys = np.concatenate([self._keys, self._rng.random(len(xa))])
            self._diffs = np.concatenate([self._diffs, xa - xb])
            if len(self._keys) > WHITEN_SAMPLE:
                keep = np.argpartition(self._keys, WHITEN_SAMPLE)[:WHITEN_SAMPLE]
                self._keys, self._diffs = self._keys[keep], self._diffs[keep]
            self.pooled.add(xa, xb)
        elif self.score != "cos":
            self.pooled.add(xa, xb)
        else:
            self.pooled.n += len(xa)
        self._done = None

    def params(self) -> dict[str, np.ndarray]:
        """``std`` (D,) for the CVA family; ``mean`` (D,) and ``whiten`` (D, D), with ``whiten @ (d - mean)``
        of unit covariance, and the pooled ``std`` (D,) of both dates' features (for :func:`level_map`), for the
        whitened family; nothing for ``cos``."""
        if self._done is not None:
            return self._done
        if self.pooled.n == 0:
            raise EarthEmbedError("No pixel is valid in both dates, so the change statistics cannot be computed.")
        if self.score == "cos":
            self._done = {}
        elif self.score.startswith("whitened"):
            d = self._diffs.astype(np.float64)
            mean, whiten = _whitening(d)
            dist = np.einsum("ij,nj->ni", whiten, d - mean)
            dist = np.einsum("ni,ni->n", dist, dist)
            keep = dist <= np.quantile(dist, 1.0 - WHITEN_TRIM)
            mean, whiten = _whitening(d[keep])
            self._done = {
                "mean": mean.astype(np.float32),
                "whiten": whiten.astype(np.float32),
                "std": self.pooled.std(),
            }
        else:
            self._done = {"std": self.pooled.std()}
        return self._done

    def recentred(self, a: np.ndarray, b: np.ndarray) -> ScoreStats:
        """These statistics with the whitened family's mean difference taken from another pair's prepared
        ``(D, h, w)`` features instead (e.g. one date against itself moved, which lacks the two dates'
        radiometric offset); the covariance, and the CVA family's statistics, are kept."""
        out = copy.copy(self)
        out._done = dict(self.params())
        if "mean" in out._done:
            xa, xb = a.reshape(self.dim, -1).T, b.reshape(self.dim, -1).T
            ok = valid_rows(xa, xb)
            out._done["mean"] = (xa[ok].astype(np.float64) - xb[ok]).mean(axis=0).astype(np.float32)
        return out


def _whitening(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and whitening matrix (inverse Cholesky factor) of the rows ``d``, the covariance ridged by 1e-6 of
    its mean variance so that a constant dimension does not make it singular."""
    mean = d.mean(axis=0)
    cov = np.cov(d - mean, rowvar=False).reshape(d.shape[1], d.shape[1])
    cov += np.eye(len(cov)) * (1e-6 * max(float(np.trace(cov)) / len(cov), 1e-12))
    return mean, np.linalg.inv(np.linalg.cholesky(cov))


def score_map(
    a: np.ndarray, b: np.ndarray, score: str = DEFAULT_SCORE, *, stats: ScoreStats | None = None
) -> np.ndarray:
    """Change score ``(H, W)`` float32 from date ``a`` to date ``b``, two ``(D, H, W)`` feature arrays on one
    grid (embeddings, raw bands, a hand-made stack); NaN where either date is not finite.

    ``score``: one of :data:`MAP_SCORES` (:data:`DESCRIPTIONS`). ``stats``: the pair's :class:`ScoreStats`
    when ``a``/``b`` are windows of a larger pair (with :data:`HALO` pixels of context); by default they are
    fitted on ``a`` and ``b`` themselves.
    """
    pa, pb = prepare(a, b, score)
    if stats is None:
        stats = ScoreStats(score, pa.shape[0])
        stats.add(pa, pb)
    p = stats.params()
    dim, (h, w) = pa.shape[0], pa.shape[1:]
    xa, xb = pa.reshape(dim, -1).T, pb.reshape(dim, -1).T
    ok = valid_rows(xa, xb)
    out = np.full(h * w, np.nan, np.float32)
    if score == "cos":
        out[ok] = cosine_change(xa[ok], xb[ok])
    elif score.startswith("whitened"):
        z = (xa[ok] - xb[ok] - p["mean"]) @ p["whiten"].T
        out[ok] = np.sqrt(np.einsum("nd,nd->n", z, z))
    elif score == "shift-min":
        return _shift_min(pa / p["std"][:, None, None], pb / p["std"][:, None, None])
    else:
        out[ok] = cva_change(xa[ok], xb[ok], p["std"])
    return out.reshape(h, w)


def _shift_min(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean over both directions of the distance from each pixel's vector to the nearest vector of the other
    date within one pixel (3 x 3 shifts; neighbours outside the map or NaN are not candidates)."""
    h, w = a.shape[1:]
    valid = np.isfinite(a).all(axis=0) & np.isfinite(b).all(axis=0)
    best = np.full((2, h, w), np.inf, np.float32)
    pad = ((0, 0), (1, 1), (1, 1))
    ap, bp = np.pad(a, pad, constant_values=np.nan), np.pad(b, pad, constant_values=np.nan)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            for k, (x, yp) in enumerate(((a, bp), (b, ap))):
                d = x - yp[:, 1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]
                dist = np.sqrt(np.einsum("dhw,dhw->hw", d, d))
                best[k] = np.fmin(best[k], np.where(np.isfinite(dist), dist, np.inf))
    return np.where(valid, best.mean(axis=0), np.nan).astype(np.float32)


def level_map(a: np.ndarray, b: np.ndarray, stats: ScoreStats) -> np.ndarray:
    """Change level ``(H, W)`` float32 of two ``(D, H, W)`` feature arrays on a fixed scale: the root mean square
    over dimensions of the difference, less the pair's mean difference (the whitened family's, so that a
    radiometric offset between the dates is not change), each dimension divided by the pooled standard deviation
    of both dates' features. Unlike the whitened score it is not scaled by the pair's own differences, so a pair
    with little change scores low everywhere. ``stats``: the pair's whitened-family :class:`ScoreStats`; ``a``,
    ``b`` are prepared by its score (:func:`prepare`) here. NaN where either date is not finite."""
    if not stats.score.startswith("whitened"):
        raise EarthEmbedError(f"The change level needs the statistics of a whitened score, not of {stats.score!r}.")
    p = stats.params()
    pa, pb = prepare(a, b, stats.score)
    d = (pa - pb - p["mean"][:, None, None]) / p["std"][:, None, None]
    return np.sqrt(np.mean(d * d, axis=0)).astype(np.float32)
