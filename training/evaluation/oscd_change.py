"""The 10 labelled OSCD city pairs of the change evaluations: both dates on the earlier date's grid with their
change map, per-pixel features of any source, and the change class's AP / AUROC / best F1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch

from earth_embed import EarthEncoder
from earth_embed.apps.change_inputs import SATURATED_FILL, Grid, read_scene_on_grid, scene_grid
from earth_embed.inputs.scene import saturated, valid_pixels
from training.evaluation.features import scene_features

#: The cities of ``labelled/oscd-change``.
CITIES = ("abudhabi", "beihai", "bercy", "bordeaux", "hongkong", "mumbai", "nantes", "paris", "pisa", "saclay_e")


def metrics(score: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """AP, AUROC and best-threshold F1 of the change class (``y`` 1) over finite scores, from one sort.

    AP is scikit-learn's ``average_precision_score`` (sum over thresholds of the recall step times the
    precision), AUROC the trapezoidal area under the ROC curve (ties count half), both over distinct score
    values; the test suite checks them against scikit-learn.
    """
    ok = np.isfinite(score)
    s, t = score[ok].astype(np.float64), y[ok].astype(np.int64)
    order = np.argsort(-s, kind="stable")
    s, t = s[order], t[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each distinct score
    tp = np.cumsum(t)[last].astype(np.float64)
    fp = (last + 1) - tp
    pos, neg = tp[-1], fp[-1]
    precision, recall = tp / (tp + fp), tp / pos
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    tpr, fpr = np.r_[0.0, recall], np.r_[0.0, fp / neg]
    auroc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return {"ap": ap, "auroc": auroc, "f1": float(f1.max())}


def city_arrays(root: Path, city: str, bands: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, Grid]:
    """Digital numbers of both dates on the date-1 grid (C, H, W), the labels (H, W) and the grid."""
    date1 = root / "unlabelled" / "oscd-date1" / city
    grid = scene_grid(date1)
    dn1 = read_scene_on_grid(date1, bands, grid)
    dn2 = read_scene_on_grid(root / "unlabelled" / "oscd" / city, bands, grid)
    with rasterio.open(root / "labelled" / "oscd-change" / city / "change.tif") as ds:
        y = ds.read(1)
        if Grid.of(ds).offset_px(grid) > 0.01 or y.shape != (grid.height, grid.width):
            raise ValueError(f"{city}: the change map is not on the date-1 grid")
    return dn1, dn2, y.astype(np.int64), grid


def features(
    source: Any, dn: np.ndarray, enc: EarthEncoder, runtime: str = "torch", invalid: np.ndarray | None = None
) -> np.ndarray:
    """(H*W, F) float32 features of one date; ``runtime``: the encoder's (:mod:`earth_embed.runtime`). The invalid
    pixels (``invalid`` (H, W); default the pipeline's rule, ``earth_embed.inputs.scene.valid_pixels``: DN 0, or
    within ``SATURATION_BUFFER`` px of a saturated value) enter as the band mean, as in the pipeline
    (``tiling.unit._model_input``), and get NaN rows."""
    if invalid is None:
        invalid = ~valid_pixels(dn)
    norm = enc.config.normalization
    refl = (torch.from_numpy(dn) + norm.dn_offset) / norm.dn_scale
    refl[:, torch.from_numpy(invalid)] = torch.tensor(list(norm.mean), dtype=refl.dtype)[:, None]
    x = scene_features(source, refl, norm.mean, norm.std, runtime=runtime).numpy().astype(np.float32, copy=False)
    x[invalid.ravel()] = np.nan
    return x


def as_maps(rows: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(H*W, F) rows -> (F, H, W) contiguous maps (what ``change_scores.score_map`` takes)."""
    return np.ascontiguousarray(rows.T).reshape(rows.shape[1], *hw)


def mask_f1(mask: np.ndarray, y: np.ndarray, valid: np.ndarray) -> float:
    """F1 of the change class of a boolean mask over the valid pixels."""
    tp = float((mask & (y == 1) & valid).sum())
    fp, fn = float((mask & (y == 0) & valid).sum()), float((~mask & (y == 1) & valid).sum())
    return 2 * tp / max(2 * tp + fp + fn, 1.0)


def shifted(dn: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Pairs of date 1 against itself moved by 1 px and 0.5 px along x, (C, H, W - 1) each; a blend that draws on a
    saturated pixel is saturated (``SATURATED_FILL``), as ``earth-embed change`` carries saturation."""
    left, right = dn[:, :, :-1], dn[:, :, 1:]
    half = [0.75 * left + 0.25 * right, 0.25 * left + 0.75 * right]
    drawn = saturated(left).any(axis=0) | saturated(right).any(axis=0)
    for x in half:
        x[:, drawn] = SATURATED_FILL
    return {"1 px": (left, right), "0.5 px": (half[0], half[1])}
