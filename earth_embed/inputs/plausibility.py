"""Before a run: settle the DN offset and look at a sample of the scene for values that look wrong.

The DN offset comes from, in this order: the caller (``dn_offset=``, CLI ``--dn-offset``), what the
product says about itself (``scene.product``: SAFE metadata, sidecars, tags, product name), the
model's config. The tool says which one it used. The sample (a few small windows spread over the
scene) is checked for data type, value range, the share of valid pixels and signs of a missing
-1000 offset, and for spectra that real ground never has (band names that do not match the data); what
looks wrong is a warning (:class:`~earth_embed.errors.InputWarning`), never a
refusal, except a scene without a single valid pixel, which is an error.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from rasterio.windows import Window

from ..errors import InputWarning, RasterInputError
from .scene import Scene

log = logging.getLogger("earth_embed")

#: Windows of the sample: a grid of SAMPLE_GRID x SAMPLE_GRID windows of SAMPLE_SIZE px.
SAMPLE_GRID = 3
SAMPLE_SIZE = 64
#: Digital numbers of Sentinel-2 (reflectance x 10 000): land and water are far below this.
TYPICAL_MAX_DN = 10_000
#: From processing baseline 04.00 every DN carries +1000; dark pixels then never go below it.
BASELINE_04_FLOOR = 1_000
#: Spectral checks (:func:`spectral_problems`) need this many pixels of the kind they look at.
MIN_SPECTRAL_PIXELS = 50
#: B07, B08 and B8A lie on the near-infrared plateau: on 66 real scenes the median of their max / min ratio over
#: bright pixels was 1.07-1.22; one of them holding another band's data pushes it past this.
NIR_PLATEAU_MAX_RATIO = 1.35
#: Over vegetation (B08 and B8A both > 2 x B04), B11 > B12 and B05 <= B06 <= B07 held on >= 99 % and >= 98 % of
#: the pixels of every real scene; a share below these limits says the names do not match the data.
VEGETATION_SWIR_MIN_SHARE = 0.9
VEGETATION_RED_EDGE_MIN_SHARE = 0.8


def sample_scene(scene: Scene, bands: Sequence[str]) -> tuple[np.ndarray, bool]:
    """Digital numbers ``(C, N)`` of a sample of ``bands``, and whether the sample is the whole scene."""
    h, w = scene.height, scene.width
    if h * w <= (SAMPLE_GRID * SAMPLE_SIZE) ** 2:
        return scene.read(bands=bands).reshape(len(bands), -1), True
    parts = []
    for i in range(SAMPLE_GRID):
        for j in range(SAMPLE_GRID):
            sh, sw = min(SAMPLE_SIZE, h), min(SAMPLE_SIZE, w)
            r = min(max(0, int((i + 0.5) * h / SAMPLE_GRID) - sh // 2), h - sh)
            c = min(max(0, int((j + 0.5) * w / SAMPLE_GRID) - sw // 2), w - sw)
            win = Window(c, r, sw, sh)
            parts.append(scene.read(win, bands=bands).reshape(len(bands), -1))
    return np.concatenate(parts, axis=1), False


def spectral_problems(dn: np.ndarray, bands: Sequence[str], dn_offset: float) -> list[str]:
    """What in the spectra of valid sampled pixels ``dn`` ``(C, N)`` contradicts the names ``bands``.

    Physics that holds on every real scene measured (docs/reliability.md): B07, B08 and B8A agree (the
    near-infrared plateau); over vegetation, B11 is above B12 and the red edge rises (B05 <= B06 <= B07).
    Checks whose bands are not all named are skipped; so are those with too few pixels to judge.
    """
    x = {b: dn[i].astype(np.float64) + dn_offset for i, b in enumerate(bands)}
    found: list[str] = []
    fix = (
        "Check the band order: the file's band descriptions (or --bands) must name each band's real content "
        "(fix them with rasterio's set_band_description or gdal_edit.py)."
    )
    if all(b in x for b in ("B07", "B08", "B8A")):
        nir = np.stack([x["B07"], x["B08"], x["B8A"]])
        bright = nir.max(axis=0) > 800
        if bright.sum() >= MIN_SPECTRAL_PIXELS:
            ratio = float(np.median(nir.max(axis=0)[bright] / np.maximum(nir.min(axis=0)[bright], 1.0)))
            if ratio > NIR_PLATEAU_MAX_RATIO:
                found.append(
                    f"B07, B08 and B8A differ by a median factor of {ratio:.2f} (real ground: at most about 1.2, "
                    f"the near-infrared plateau): the bands named so may hold other bands' data. {fix}"
                )
    if not all(b in x for b in ("B04", "B08", "B8A")):
        return found
    veg = (x["B08"] > 2 * x["B04"]) & (x["B8A"] > 2 * x["B04"]) & (x["B04"] > 0)
    if veg.sum() < MIN_SPECTRAL_PIXELS:
        return found
    checks = [
        (("B11", "B12"), lambda: x["B11"][veg] > x["B12"][veg], VEGETATION_SWIR_MIN_SHARE, "B11 above B12"),
        (
            ("B05", "B06", "B07"),
            lambda: (x["B05"][veg] <= x["B06"][veg]) & (x["B06"][veg] <= x["B07"][veg]),
            VEGETATION_RED_EDGE_MIN_SHARE,
            "B05 <= B06 <= B07 (the red edge)",
        ),
    ]
    for needed, holds, minimum, what in checks:
        if all(b in x for b in needed):
            share = float(holds().mean())
            if share < minimum:
                found.append(
                    f"over {int(veg.sum())} vegetated pixels (B08 and B8A > 2 x B04), {what} holds on only "
                    f"{share:.0%} (real vegetation: >= 98 %): the bands named so may hold other bands' data. {fix}"
                )
    return found


def resolve_dn_offset(scene: Scene, bands: Sequence[str], explicit: float | None, model_offset: float) -> float:
    """The DN offset to use, and a note (logged) on where it came from."""
    product_offset = scene.product.dn_offset(list(bands))
    origin = f"{scene.product.source} ({scene.product.describe()})"
    if explicit is not None:
        if product_offset is not None and product_offset != explicit:
            log.warning(
                "using the DN offset %g given explicitly; %s says %g", float(explicit), origin, float(product_offset)
            )
        return float(explicit)
    if product_offset is not None:
        if product_offset != 0 or model_offset != 0:
            log.info("applying DN offset %g from %s", float(product_offset), origin)
        return float(product_offset)
    return float(model_offset)


def check_values(scene: Scene, bands: Sequence[str], dn_offset: float, offset_known: bool) -> list[str]:
    """What looks wrong in a sample of the scene; raises when not a single pixel is valid."""
    dn, whole = sample_scene(scene, bands)
    valid = np.isfinite(dn).all(axis=0)
    if scene.nodata is not None and not np.isnan(scene.nodata):
        valid &= ~(dn == scene.nodata).any(axis=0)
    found: list[str] = []
    if not valid.any():
        what = "the scene has" if whole else f"none of {dn.shape[1]} pixels sampled across the scene has"
        message = (
            f"No valid pixel: {what} a value in every band of {', '.join(bands)} (all are nodata "
            f"{scene.nodata:g} or NaN). Check that {scene.description} is the right scene and holds data "
            "(all-zero or all-NaN band files, band files of different scenes)."
        )
        if whole:
            raise RasterInputError(message)
        return [message + " The run continues; pixels elsewhere may be valid."]
    share = float(valid.mean())
    if share < 0.05:
        found.append(f"only {share:.1%} of the sampled pixels are valid (the rest is nodata or NaN).")
    x = dn[:, valid]
    small_types = sorted({t for b, t in scene.dtypes.items() if b in bands and t in ("uint8", "int8")})
    if small_types:
        found.append(
            f"the bands are {small_types[0]}: that is a display image (e.g. a true-colour TCI or a screenshot), "
            "not Sentinel-2 digital numbers (uint16, reflectance x 10000). Give the product's band files."
        )
    lo, median, hi = (float(v) for v in np.percentile(x, [1, 50, 99]))
    if lo < 0:
        found.append(
            f"negative values (1st percentile {lo:g}): Sentinel-2 digital numbers are >= 0. Is this "
            "already reflectance or a processed product? Give the original digital numbers."
        )
    elif hi <= 2.0 and x.dtype.kind == "f":
        found.append(
            f"all values are between {lo:g} and {hi:g}: that looks like reflectance (0..1), not digital numbers "
            "(reflectance x 10000). Multiply by 10000 first."
        )
    scaled = median > TYPICAL_MAX_DN or hi > 2 * TYPICAL_MAX_DN  # a 99th percentile above 2.0 reflectance too
    if scaled:
        found.append(
            f"values far above {TYPICAL_MAX_DN} (median {median:g}, 99th percentile {hi:g}): Sentinel-2 digital "
            "numbers are reflectance x 10000. Check the scaling of the input."
        )
    if not offset_known and dn_offset == 0 and lo >= BASELINE_04_FLOOR and not scaled:  # +1000 keeps the spread
        found.append(
            f"every sampled value is >= {BASELINE_04_FLOOR} (1st percentile {lo:g}): that looks like data of "
            "processing baseline 04.00 or later (January 2022 on), which adds +1000 to every value, read without "
            "its -1000 offset. Pass --dn-offset -1000 (Python: dn_offset=-1000) or give the SAFE product, whose "
            "metadata sets it."
        )
    if dn_offset <= -BASELINE_04_FLOOR:
        below = float((x < -dn_offset).mean())
        if below > 0.01:
            found.append(
                f"with the DN offset {dn_offset:g}, {below:.0%} of the sampled values become negative reflectance: "
                "the product may be older than processing baseline 04.00. Pass --dn-offset 0 if so."
            )
    if not scaled and lo >= 0:
        found.extend(spectral_problems(x, bands, dn_offset))
    return found


def inspect_input(scene: Scene, model: Any, dn_offset: float | None) -> float:
    """Settle the DN offset for ``model`` on ``scene`` and warn about implausible values; returns the offset."""
    bands = list(model.bands)
    model_offset = float(model.config.normalization.dn_offset)
    offset = resolve_dn_offset(scene, bands, dn_offset, model_offset)
    known = dn_offset is not None or scene.product.dn_offset(bands) is not None or model_offset != 0
    for problem in check_values(scene, bands, offset, known):
        warnings.warn(f"{scene.description}: {problem}", InputWarning, stacklevel=3)
    return offset


__all__ = ["check_values", "inspect_input", "resolve_dn_offset", "sample_scene", "spectral_problems"]
