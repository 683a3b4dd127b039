"""Pairs of the change-mask experiments (``change_floor.py``, ``change_adaptive.py``, ``change_believable.py``): the
default score and change level of the encoder's features on a pair, the level's quantiles over unchanged ground, the
four real short-term pairs without urban change, and all of them loaded for the 10 cities (:func:`load_pairs`)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from earth_embed import EarthEncoder
from earth_embed.apps.change_inputs import read_scene_on_grid, scene_grid
from earth_embed.apps.change_mask import auto_threshold, component_sizes, drop_small
from earth_embed.apps.change_scores import DEFAULT_SCORE, ScoreStats, level_map, prepare, score_map, smooth_map
from training.evaluation.oscd_change import as_maps, city_arrays, features, mask_f1, shifted

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
    enc: EarthEncoder, dn_a: np.ndarray, dn_b: np.ndarray, smooth: Iterable[int] = (0, 3),
    invalid: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[int, tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """{smoothing: (score, level)} of two DN images (C, H, W) of one grid: the default score and the change level
    of the encoder's features, both smoothed alike (``invalid``: each date's invalid pixels, ``features``'s rule)."""
    hw = dn_a.shape[1:]
    ia, ib = (None, None) if invalid is None else invalid
    with torch.no_grad():
        a, b = as_maps(features(enc, dn_a, enc, invalid=ia), hw), as_maps(features(enc, dn_b, enc, invalid=ib), hw)
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


def load_pairs(root: Path, enc: EarthEncoder, cities: list[str], smooth: int, qs: Iterable[float]) -> dict[str, Any]:
    """Every pair of the mask experiments at one smoothing: per city the real pair's and its 0.5 px self-shift pair's
    ``pair_maps``, the labels, the level quantiles ``qs`` over unchanged ground, the true change share and Otsu's
    threshold on raw-band CVA (F1, share); and the short-term pairs of :data:`EXTERNAL`."""
    t0 = time.time()
    out: dict[str, Any] = {k: {} for k in ("real", "shift", "labels", "quant", "baseline", "true_share", "external")}
    for city in cities:
        dn1, dn2, y, _ = city_arrays(root, city, enc.bands)
        out["real"][city], out["labels"][city] = pair_maps(enc, dn1, dn2, (smooth,)), y
        out["quant"][city] = unchanged_quantiles(out["real"][city], y, qs)
        out["true_share"][city] = float(y[np.isfinite(out["real"][city][smooth][0])].mean())
        out["shift"][city] = pair_maps(enc, *shifted(dn1)["0.5 px"], (smooth,))
        out["baseline"][city] = otsu_raw_cva(enc, dn1, dn2, y)
        print(f"{city}: maps done ({time.time() - t0:.0f} s)", flush=True)
    out["external"] = external_maps(root, enc, (smooth,))
    return out


def otsu_raw_cva(enc: EarthEncoder, dn1: np.ndarray, dn2: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The baseline mask of a pair: Otsu's threshold on the CVA of the raw bands (normalised as ``enc`` normalises);
    its change-class F1 against the labels ``y`` and the share it marks of the valid pixels."""
    hw = dn1.shape[1:]
    with torch.no_grad():
        ra, rb = as_maps(features("raw", dn1, enc), hw), as_maps(features("raw", dn2, enc), hw)
    cva = score_map(ra, rb, "cva")
    ok = np.isfinite(cva)
    otsu = ok & (np.where(ok, cva, -np.inf) > auto_threshold(cva[ok], "otsu"))
    return {"f1": mask_f1(otsu, y, ok), "share": float(otsu[ok].mean())}


def external_maps(root: Path, enc: EarthEncoder, smooth: Iterable[int] = (0, 3)) -> dict[str, dict]:
    """``pair_maps`` of each real short-term pair of :data:`EXTERNAL` (date B read on date A's grid)."""
    out = {}
    for pair, (pa, pb) in EXTERNAL.items():
        grid = scene_grid(root / pa)
        dn_a, dn_b = read_scene_on_grid(root / pa, enc.bands, grid), read_scene_on_grid(root / pb, enc.bands, grid)
        out[pair] = pair_maps(enc, dn_a, dn_b, smooth)
    return out


def mark(
    maps: tuple[np.ndarray, np.ndarray], rule: tuple[str, float], floor: float, min_px: int, y: np.ndarray | None = None
) -> dict[str, float]:
    """Marked share, patch count (and change F1 if ``y``) of one mask of ``maps`` (score, level): the score above
    ``rule``'s cut (``change_mask.auto_threshold`` on the valid scores) and the level above ``floor``, changed patches
    under ``min_px`` (8-connected) dropped."""
    s, lv = maps
    valid = np.isfinite(s) & np.isfinite(lv)
    cut = auto_threshold(s[valid], *rule)
    m = drop_small(valid & (np.where(valid, lv, -np.inf) > floor) & (np.where(valid, s, -np.inf) > cut), min_px)
    out = {"share": float(m[valid].mean()), "patches": len(component_sizes(m)[1]) - 1}
    if y is not None:
        out["f1"] = mask_f1(m, y, valid)
    return out


def log_ratio(share: float, true: float) -> float:
    """|log(marked / true share)|: 0 where a mask marks the true share (one marking nothing: infinite)."""
    return abs(math.log(share / true)) if share > 0 else math.inf
