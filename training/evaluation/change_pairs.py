"""Pairs of the change-mask experiments (``change_floor.py``, ``change_adaptive.py``): the default score and change
level of the encoder's features on a pair, the level's quantiles over unchanged ground, and the four real short-term
pairs without urban change."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from earth_embed import EarthEncoder
from earth_embed.apps.change_scores import DEFAULT_SCORE, ScoreStats, level_map, prepare, score_map, smooth_map
from training.evaluation.oscd_change import as_maps, features

#: Real short-term pairs without urban change (paths under the data root).
EXTERNAL = {
    "SSL4EO 0000200 (Punjab), 2020-06-04 / 2020-08-23": (
        "unlabelled/ssl4eo-s12/0000200/20200604_L1C",
        "unlabelled/ssl4eo-s12/0000200/20200823_L1C",
    ),
    **{
        f"Slovenia, {a} / {b}": (
            f"labelled/slovenia-eolearn/dates/S2L1C_{a.replace('-', '')}.tif",
            f"labelled/slovenia-eolearn/dates/S2L1C_{b.replace('-', '')}.tif",
        )
        for a, b in (("2015-07-11", "2015-08-30"), ("2015-08-30", "2015-09-09"), ("2015-07-11", "2015-09-09"))
    },
}


def pair_maps(
    enc: EarthEncoder, dn_a: np.ndarray, dn_b: np.ndarray, smooth: Iterable[int] = (0, 3)
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{smoothing: (score, level)} of two DN images (C, H, W) of one grid: the default score and the change level
    of the encoder's features, both smoothed alike."""
    hw = dn_a.shape[1:]
    with torch.no_grad():
        a, b = as_maps(features(enc, dn_a, enc), hw), as_maps(features(enc, dn_b, enc), hw)
    stats = ScoreStats(DEFAULT_SCORE, a.shape[0])
    stats.add(*prepare(a, b, DEFAULT_SCORE))
    s, lv = score_map(a, b, DEFAULT_SCORE, stats=stats), level_map(a, b, stats)
    return {k: (smooth_map(s, k), smooth_map(lv, k)) for k in smooth}


def unchanged_quantiles(maps: dict, y: np.ndarray, qs: Iterable[float]) -> dict[int, dict[float, float]]:
    """{k: {g: the g-quantile of the level on unchanged valid pixels}} of ``pair_maps``'s maps."""
    out = {}
    for k, (s, lv) in maps.items():
        v = lv[np.isfinite(lv) & np.isfinite(s) & (y == 0)]
        out[k] = {g: float(np.quantile(v, g)) for g in qs}
    return out


def mean_floors(quant: dict, cities: list[str]) -> dict[int, dict[float, float]]:
    """The level quantiles averaged over ``cities`` (equal weight per city)."""
    first = quant[cities[0]]
    return {k: {g: float(np.mean([quant[c][k][g] for c in cities])) for g in first[k]} for k in first}
