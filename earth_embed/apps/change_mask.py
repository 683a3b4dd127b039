"""From a change score map to a change mask: the threshold rules and the minimum area of a change.

Threshold rules, applied to a sample of the valid scores (:func:`auto_threshold`):

* ``otsu``: Otsu's cut of the score histogram (:func:`~.change_scores.otsu_threshold`);
* ``share`` q: the score above which q % of the valid pixels lie;
* ``robust-z`` k: the median plus k robust standard deviations (1.4826 x the median absolute deviation), so
  that a pair with little change marks little;
* ``median-ratio`` r: r times the median score.

A rule can be raised to a noise floor (``floor``: a ``robust-z`` or ``median-ratio`` cut): the threshold is the
higher of the two. Such a floor is computed from the pair's own scores, which the whitened scores normalise by the
pair's own differences, so it cannot tell a quiet pair from a changed one (``docs/results/change_floor.md``,
round 1). What can is a floor on the change level (``change_scores.level_map``, a fixed scale learned from
unchanged ground): :data:`DEFAULT_LEVEL`.

:func:`drop_small` sets changed components (8-connected, as the polygons are) smaller than a minimum number
of pixels to no change. The defaults (:data:`DEFAULT_RULE`, :data:`DEFAULT_SMOOTH`, :data:`DEFAULT_MIN_AREA_PX`,
:data:`DEFAULT_LEVEL`) were chosen on the 10 OSCD cities, leave-one-city-out (``docs/results/change_defaults.md``,
``docs/results/change_floor.md``).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import EarthEmbedError
from .change_scores import otsu_threshold

#: The mask's classes (stored as 1 and 2; 0 is nodata) and colours.
MASK_CLASSES, MASK_COLORS = ["no change", "change"], [(200, 200, 200), (220, 40, 40)]
#: Threshold rule names and the meaning of their parameter.
RULES = {
    "otsu": "none",
    "share": "per cent of valid pixels marked",
    "robust-z": "robust standard deviations",
    "median-ratio": "times the median score",
}
#: Rules that can serve as a noise floor (they do not mark a fixed share).
FLOORS = ("robust-z", "median-ratio")
#: The default threshold rule and its parameter (chosen on the OSCD cities).
DEFAULT_RULE: tuple[str, float] = ("share", 5.0)
#: The default noise floor of the threshold (chosen with the rule; None: none).
DEFAULT_FLOOR: tuple[str, float] | None = None
#: The default score smoothing (box mean, px) of the default mask (chosen with the rule).
DEFAULT_SMOOTH = 3
#: The default smallest change kept, in pixels of 10 m (chosen with the rule); the CLI takes m².
DEFAULT_MIN_AREA_PX = 4
DEFAULT_MIN_AREA_M2 = 100.0 * DEFAULT_MIN_AREA_PX
#: The default floor of the change level (``change_scores.level_map`` of the default score's statistics): a pixel
#: whose smoothed level is not above it is no change, however high its score (chosen with the rule; 0: none). It is
#: the 0.9-quantile of the release-5 encoder's level over the unchanged ground of the 10 OSCD cities (mean of the
#: cities, 3 x 3 smoothing; docs/results/change_floor.md, round 2).
DEFAULT_LEVEL = 1.076


def auto_threshold(
    values: np.ndarray,
    rule: str = DEFAULT_RULE[0],
    param: float = DEFAULT_RULE[1],
    floor: tuple[str, float] | None = None,
) -> float:
    """The threshold of a sample of scores by ``rule`` (pixels scoring above it are change), raised to the cut
    of ``floor`` (a rule of :data:`FLOORS` and its parameter) where that is higher."""
    if rule not in RULES:
        raise EarthEmbedError(f"Unknown threshold rule {rule!r}; use one of {', '.join(RULES)}.")
    if floor is not None and floor[0] not in FLOORS:
        raise EarthEmbedError(f"Unknown noise floor {floor[0]!r}; use one of {', '.join(FLOORS)}.")
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise EarthEmbedError("No valid score to threshold (every pixel is nodata in one of the dates).")
    thr = _cut(v, rule, param)
    return thr if floor is None else max(thr, _cut(v, *floor))


def _cut(v: np.ndarray, rule: str, param: float) -> float:
    if rule == "otsu":
        return otsu_threshold(v)
    if rule == "share":
        return float(np.quantile(v, 1.0 - param / 100.0))
    med = float(np.median(v))
    if rule == "median-ratio":
        return param * med
    return med + param * 1.4826 * float(np.median(np.abs(v - med)))


def _words(rule: str, param: float) -> str:
    return {
        "otsu": "Otsu",
        "share": f"top {param:g} %",
        "robust-z": f"median + {param:g} x 1.4826 x MAD",
        "median-ratio": f"{param:g} x the median",
    }[rule]


def describe_rule(rule: str, param: float, n: int, floor: tuple[str, float] | None = None) -> str:
    """The rule in words, for the report and the mask's tags."""
    text = f"{_words(rule, param)} of {n} sampled pixels"
    return text if floor is None else f"{text}, at least {_words(*floor)} (noise floor)"


def min_pixels(min_area_m2: float, pixel_area_m2: float) -> int:
    """The smallest number of pixels whose area reaches ``min_area_m2`` (at least 1)."""
    return max(1, math.ceil(min_area_m2 / pixel_area_m2 - 1e-9)) if min_area_m2 > 0 else 1


def component_sizes(changed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels of the 8-connected components of ``changed`` (0: none) and each label's pixel count (index 0:
    the unchanged pixels)."""
    from scipy import ndimage

    labels, n = ndimage.label(changed, structure=np.ones((3, 3), bool))
    return labels, np.bincount(labels.ravel(), minlength=n + 1)


def drop_small(changed: np.ndarray, min_px: int) -> np.ndarray:
    """``changed`` (bool 2-D) without its 8-connected components of fewer than ``min_px`` pixels."""
    if min_px <= 1 or not changed.any():
        return changed
    labels, sizes = component_sizes(changed)
    keep = sizes >= min_px
    keep[0] = False
    return keep[labels]
