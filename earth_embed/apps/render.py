"""PNG renderings of the apps' continuous outputs (class maps use ``raster.classmap.landcover_png``)."""

from __future__ import annotations

import os
from pathlib import Path

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
    out = Path(png)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}.png")
    try:
        fig.savefig(tmp, format="png", bbox_inches="tight")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
