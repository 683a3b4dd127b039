"""ukis-csmask (DLR): a cloud and cloud-shadow CNN whose ONNX models ship in its wheel (``earth-embed[clouds]``).

It takes top-of-atmosphere (L1C) or surface (L2A) reflectance in [0, 1] of B02 B03 B04 B08 (+ B11 B12: the
6-band model, used when the scene has them) and returns 0 clear, 1 cloud, 2 cloud shadow per pixel. It was trained
at ~30 m, so windows of the 10 m grid are averaged by :data:`FACTOR` before it runs and its classes are repeated
back. Chosen over s2cloudless by measurement (docs/results/cloud_masks.md).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from rasterio.windows import Window

from ...errors import MissingDependencyError

NAME = "ukis-csmask"
INSTALL = 'pip install "earth-embed[clouds]"'
#: 10 m pixels averaged into one library pixel (~30 m, its working resolution; docs/results/cloud_masks.md).
FACTOR = 3
BANDS_6 = ("B02", "B03", "B04", "B08", "B11", "B12")
_LIBRARY_NAMES = ("blue", "green", "red", "nir", "swir16", "swir22")
_TILE = 256  # the library's own tile: smaller inputs are mirrored up to it
_MODELS: dict[tuple[int, str], Any] = {}  # one loaded model per (bands, level) and process


def available() -> bool:
    """True when ukis-csmask and its ONNX runtime import."""
    try:
        import onnxruntime  # noqa: F401
        import ukis_csmask.mask  # noqa: F401
    except ImportError:
        return False
    return True


def require() -> None:
    if not available():
        raise MissingDependencyError(f"--mask {NAME} needs the ukis-csmask library; install it with {INSTALL}.")


def bands_for(scene_bands: list[str]) -> tuple[str, ...] | None:
    """The bands the library will use from a scene's bands (6, else 4), or None when it cannot run."""
    if all(b in scene_bands for b in BANDS_6):
        return BANDS_6
    if all(b in scene_bands for b in BANDS_6[:4]):
        return BANDS_6[:4]
    return None


def classify(reflectance: np.ndarray, level: str = "L1C") -> np.ndarray:
    """The library's classes (h, w) uint8 (0 clear, 1 cloud, 2 shadow) of ``reflectance`` (h, w, 4 or 6) in [0, 1],
    bands in :data:`BANDS_6` order, at the library's resolution."""
    require()
    from ukis_csmask.mask import CSmask

    h, w, c = reflectance.shape
    img = reflectance.astype(np.float32)
    if h < _TILE or w < _TILE:
        img = np.pad(img, ((0, max(0, _TILE - h)), (0, max(0, _TILE - w)), (0, 0)), mode="symmetric")
    names = list(_LIBRARY_NAMES[:c])
    key = (c, level.lower())
    model = _MODELS.get(key)
    if model is None:  # the first call loads the ONNX model (~0.5 s); later calls reuse the loaded one
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = CSmask(img, names, product_level=key[1], invalid_buffer=0)
        _MODELS[key] = model
        return model.csm[:h, :w, 0].astype(np.uint8)
    # the same steps as CSmask's constructor (bands already in the model's order), without reloading the model;
    # _csm is the library's own tiled prediction (pinned: ukis-csmask 1.0.x)
    model.img = model.normalize(img=img, mean=model.band_mean, std=model.band_std)
    return model._csm()[:h, :w, 0].astype(np.uint8)


def _down(x: np.ndarray, f: int) -> np.ndarray:
    """(C, h, w) averaged over f x f blocks (edges padded by repetition) -> (h', w', C)."""
    c, h, w = x.shape
    ph, pw = -h % f, -w % f
    x = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="edge")
    return x.reshape(c, (h + ph) // f, f, (w + pw) // f, f).mean(axis=(2, 4)).transpose(1, 2, 0)


class LibraryMask:
    """Masks cloud and cloud shadow found by ukis-csmask in each window."""

    name = NAME

    def __init__(self, scene: Any, dn_offset: float, factor: int = FACTOR) -> None:
        require()
        self.scene = scene
        self.offset = float(dn_offset)
        self.factor = factor
        self.level = scene.product.level or "L1C"
        found = bands_for(scene.band_names)
        if found is None:
            raise MissingDependencyError(
                f"--mask {NAME} needs bands B02 B03 B04 B08 (and B11 B12 for its better model); "
                f"{scene.description} has {', '.join(scene.band_names)}. Use another --mask source."
            )
        self.bands = found

    def masked(self, window: Window, dn: np.ndarray, bands: list[str]) -> np.ndarray:
        if all(b in bands for b in self.bands):
            x = dn[[bands.index(b) for b in self.bands]]
        else:
            x = self.scene.read(window, bands=list(self.bands))
        bad = ~np.isfinite(x).all(axis=0)
        if self.scene.nodata is not None and np.isfinite(self.scene.nodata):
            bad |= (x == self.scene.nodata).any(axis=0)
        x = ((x + self.offset) / 10000.0).clip(0, 2)
        if bad.any():  # nodata enters as the window's median, not as black (which the CNN would call shadow)
            fill = np.median(x[:, ~bad], axis=1) if (~bad).any() else np.zeros(len(x), np.float32)
            x[:, bad] = fill[:, None]
        h, w = x.shape[1:]
        classes = classify(_down(x, self.factor), self.level)
        full = classes.repeat(self.factor, axis=0).repeat(self.factor, axis=1)[:h, :w]
        return full > 0

    def close(self) -> None:
        pass
