"""PNG renderings of the apps' continuous outputs (class maps use ``raster.classmap.landcover_png``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling

from .deps import require


def similarity_png(
    tif: str | os.PathLike,
    png: str | os.PathLike,
    rows: np.ndarray | None = None,
    cols: np.ndarray | None = None,
    *,
    title: str = "cosine similarity",
    max_size: int = 1024,
) -> Path:
    """The similarity raster (reduced to ``max_size`` px) in a perceptual colour map with a colour bar;
    the query pixels ``rows``/``cols`` are marked with white crosses."""
    require("matplotlib")
    from matplotlib.figure import Figure

    with rasterio.open(tif) as ds:
        factor = max(1, -(-max(ds.height, ds.width) // max_size))
        shape = (max(1, ds.height // factor), max(1, ds.width // factor))
        sim = ds.read(1, out_shape=shape, resampling=Resampling.average, masked=True).filled(np.nan)
    fig = Figure(figsize=(8, 7), dpi=120)
    ax = fig.add_subplot()
    finite = sim[np.isfinite(sim)]
    lo = float(np.percentile(finite, 1)) if finite.size else -1.0
    im = ax.imshow(sim, cmap="magma", vmin=lo, vmax=1.0, interpolation="nearest")
    if rows is not None and cols is not None and len(rows) <= 200:
        ax.plot(
            np.asarray(cols) / factor, np.asarray(rows) / factor, "+", color="cyan", markersize=9, markeredgewidth=1.5
        )
    ax.set_title(title)
    ax.set_axis_off()
    fig.colorbar(im, ax=ax, fraction=0.04, label="cosine similarity")
    return save_png(fig, png)


def _reduced(tif: str | os.PathLike, max_size: int, resampling: Resampling) -> np.ndarray:
    with rasterio.open(tif) as ds:
        factor = max(1, -(-max(ds.height, ds.width) // max_size))
        shape = (max(1, ds.height // factor), max(1, ds.width // factor))
        return ds.read(1, out_shape=shape, resampling=resampling, masked=True).filled(
            0 if ds.dtypes[0] == "uint8" else np.nan
        )


def change_png(
    score_tif: str | os.PathLike,
    mask_tif: str | os.PathLike,
    png: str | os.PathLike,
    *,
    threshold: float,
    title: str = "change",
    max_size: int = 1024,
    changed_share: float | None = None,
) -> Path:
    """Two panels: the change score (colour bar with the threshold marked) and the change mask (legend with
    each class's share of the valid pixels, ``changed_share`` where given, the report's figure at full
    resolution, else counted on the reduced mask; white is nodata)."""
    require("matplotlib")
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    score = _reduced(score_tif, max_size, Resampling.average)
    mask = _reduced(mask_tif, max_size, Resampling.nearest)
    fig = Figure(figsize=(14, 6.5), dpi=110)
    ax1, ax2 = fig.subplots(1, 2)
    finite = score[np.isfinite(score)]
    lo, hi = (float(np.percentile(finite, 1)), float(np.percentile(finite, 99.5))) if finite.size else (0.0, 1.0)
    im = ax1.imshow(score, cmap="magma", vmin=lo, vmax=max(hi, threshold, lo + 1e-6), interpolation="nearest")
    bar = fig.colorbar(im, ax=ax1, fraction=0.04, label="change score")
    bar.ax.axhline(threshold, color="cyan", linewidth=2)
    ax1.set_title(f"{title}: score (threshold {threshold:.4g}, cyan)")
    colours = ListedColormap([(1, 1, 1), (0.8, 0.8, 0.8), (0.86, 0.16, 0.16)])
    ax2.imshow(mask, cmap=colours, vmin=0, vmax=2, interpolation="nearest")
    valid = max(1, int((mask > 0).sum()))
    shares = [100 * float((mask == v).sum()) / valid for v in (1, 2)]
    if changed_share is not None:
        shares = [100 * (1 - changed_share), 100 * changed_share]
    ax2.legend(
        handles=[
            Patch(color=colours(1), label=f"no change ({shares[0]:.2f} %)"),
            Patch(color=colours(2), label=f"change ({shares[1]:.2f} %)"),
            Patch(facecolor="white", edgecolor="black", label="nodata"),
        ],
        loc="lower right",
        fontsize=9,
    )
    ax2.set_title(f"{title}: change mask")
    for ax in (ax1, ax2):
        ax.set_axis_off()
    return save_png(fig, png)


def save_png(fig: Any, png: str | os.PathLike) -> Path:
    """Write a matplotlib figure to ``png`` under a temporary name, renamed when complete."""
    out = Path(png)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}.png")
    try:
        fig.savefig(tmp, format="png", bbox_inches="tight")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
