"""From a change score map to a change mask: the threshold rules and the minimum area of a change.

Threshold rules, applied to a sample of the valid scores (:func:`auto_threshold`):

* ``otsu``: Otsu's cut of the score histogram (:func:`~.change_scores.otsu_threshold`);
* ``share`` q: the score above which q % of the valid pixels lie;
* ``robust-z`` k: the median plus k robust standard deviations (1.4826 x the median absolute deviation), so
  that a pair with little change marks little.

:func:`drop_small` sets changed components (8-connected, as the polygons are) smaller than a minimum number
of pixels to no change. The defaults (:data:`DEFAULT_RULE`, :data:`DEFAULT_MIN_AREA_PX`) were chosen on the 10
OSCD cities, leave-one-city-out (``docs/results/change_defaults.md``).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import EarthEmbedError
from .change_scores import otsu_threshold

#: Threshold rule names and the meaning of their parameter.
RULES = {"otsu": "none", "share": "per cent of valid pixels marked", "robust-z": "robust standard deviations"}
#: The default threshold rule and its parameter (chosen on the OSCD cities).
DEFAULT_RULE: tuple[str, float] = ("share", 5.0)
#: The default score smoothing (box mean, px) of the default mask (chosen with the rule).
DEFAULT_SMOOTH = 3
#: The default smallest change kept, in pixels of 10 m (chosen with the rule); the CLI takes m².
DEFAULT_MIN_AREA_PX = 16
DEFAULT_MIN_AREA_M2 = 100.0 * DEFAULT_MIN_AREA_PX


def auto_threshold(values: np.ndarray, rule: str = DEFAULT_RULE[0], param: float = DEFAULT_RULE[1]) -> float:
    """The threshold of a sample of scores by ``rule`` (pixels scoring above it are change)."""
    if rule not in RULES:
        raise EarthEmbedError(f"Unknown threshold rule {rule!r}; use one of {', '.join(RULES)}.")
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise EarthEmbedError("No valid score to threshold (every pixel is nodata in one of the dates).")
    if rule == "otsu":
        return otsu_threshold(v)
    if rule == "share":
        return float(np.quantile(v, 1.0 - param / 100.0))
    med = float(np.median(v))
    return med + param * 1.4826 * float(np.median(np.abs(v - med)))


def describe_rule(rule: str, param: float, n: int) -> str:
    """The rule in words, for the report and the mask's tags."""
    if rule == "otsu":
        return f"Otsu on {n} sampled pixels"
    if rule == "share":
        return f"top {param:g} % of {n} sampled pixels"
    return f"median + {param:g} x 1.4826 x MAD of {n} sampled pixels"


def min_pixels(min_area_m2: float, pixel_area_m2: float) -> int:
    """The smallest number of pixels whose area reaches ``min_area_m2`` (at least 1)."""
    return max(1, math.ceil(min_area_m2 / pixel_area_m2 - 1e-9)) if min_area_m2 > 0 else 1


def drop_small(changed: np.ndarray, min_px: int) -> np.ndarray:
    """``changed`` (bool 2-D) without its 8-connected components of fewer than ``min_px`` pixels."""
    if min_px <= 1 or not changed.any():
        return changed
    from scipy import ndimage

    labels, n = ndimage.label(changed, structure=np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_px
    keep[0] = False
    return keep[labels]
