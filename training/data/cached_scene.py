"""One scene of an array cache (:mod:`training.data.array_cache`): a crop's digital numbers and transform, read with numpy."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from earth_embed.errors import RasterInputError

CACHE_FILE = "array_cache.npz"


class GridTransform(NamedTuple):
    """The six coefficients of an affine pixel -> map transform (``rasterio``'s ``Affine`` order)."""

    a: float
    b: float
    c: float
    d: float
    e: float
    f: float


def to_map(t: Sequence[float], col: float, row: float) -> tuple[float, float]:
    """Map coordinates of pixel position (col, row) under the affine ``t`` (an ``Affine`` or a :class:`GridTransform`)."""
    return t[0] * col + t[1] * row + t[2], t[3] * col + t[4] * row + t[5]


def to_pixel(t: Sequence[float], x: float, y: float) -> tuple[float, float]:
    """Pixel position (col, row) of the map point (x, y): the inverse of :func:`to_map`."""
    a, b, c, d, e, f = (t[n] for n in range(6))
    det = a * e - b * d
    return (e * (x - c) - b * (y - f)) / det, (a * (y - f) - d * (x - c)) / det


class CachedScene:
    """One cached scene: ``height``, ``width``, ``transform`` and ``read(window, bands)`` as ``Scene`` has them."""

    def __init__(self, folder: str | Path, bands: Sequence[str] | None = None) -> None:
        path = Path(folder) / CACHE_FILE
        with np.load(path) as z:
            self._dn = z["dn"]
            self.band_names = [str(b) for b in z["bands"]]
            self.transform = GridTransform(*(float(v) for v in z["transform"]))
        missing = [b for b in bands or [] if b not in self.band_names]
        if missing:
            raise RasterInputError(
                f"{path} holds bands {self.band_names}, not {missing}; rebuild the cache with "
                "`python -m training.data.array_cache --bands ...` naming the bands the config reads"
            )
        self.height, self.width = int(self._dn.shape[1]), int(self._dn.shape[2])

    @staticmethod
    def holds(folder: str | Path) -> bool:
        """Whether ``folder`` is a cached scene."""
        return (Path(folder) / CACHE_FILE).is_file()

    def read(
        self, window: tuple[tuple[int, int], tuple[int, int]] | None = None, bands: Sequence[str] | None = None
    ) -> np.ndarray:
        """Digital numbers as float32 ``(C, h, w)``; ``window`` = ``((row0, row1), (col0, col1))``, outside = 0."""
        (r0, r1), (c0, c1) = window if window is not None else ((0, self.height), (0, self.width))
        idx = [self.band_names.index(b) for b in bands] if bands is not None else list(range(len(self.band_names)))
        out = np.zeros((len(idx), r1 - r0, c1 - c0), dtype=np.float32)
        rr0, cc0, rr1, cc1 = max(r0, 0), max(c0, 0), min(r1, self.height), min(c1, self.width)
        if rr1 > rr0 and cc1 > cc0:
            out[:, rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0] = self._dn[idx, rr0:rr1, cc0:cc1]
        return out

    def __enter__(self) -> CachedScene:
        return self

    def __exit__(self, *exc: object) -> None:
        return None
