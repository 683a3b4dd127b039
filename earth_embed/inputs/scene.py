"""A Sentinel-2 scene opened as one band stack (:class:`Scene`): windowed reads on the grid of the finest band.

:func:`earth_embed.inputs.open_scene` builds one from a multi-band GeoTIFF, a folder or a list of per-band files;
coarser bands arrive already resampled by georeference (a GDAL ``WarpedVRT``), so a read is one window per band.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window

from ..bands import canonical_band_names
from ..errors import BandError, RasterInputError
from .masks.grid import dilate
from .pixel_grid import Grid, drawn_on
from .safe import ProductInfo

WindowLike = Union[Window, tuple]  # noqa: UP007

#: Sentinel-2 digital numbers use 0 for "no data".
S2_NODATA = 0.0
#: A band value at or above this is saturated (its radiance was clipped), so the pixel is invalid like nodata. The
#: L1C product's special value SATURATED is 65535 and its 15-bit encoding caps at 32767; the OSCD scenes (L1C of
#: baselines before 04.00) clip saturated pixels at 28000 (in 10 of the 48 scenes of ``unlabelled/oscd*`` the
#: brightest pixels hold 28000-28003 after the makers' warp, and no scene goes higher). 28000 DN is a top-of-atmosphere reflectance of 2.7-2.8 (baseline 04.00 adds
#: an offset of 1000), beyond any ground or cloud, so the bound catches all three conventions and no real value.
S2_SATURATED = 28000.0
#: px of the scene grid by which the saturated pixels grow before they are invalid (the cloud mask's ``dilate``): the
#: point-spread function and the 20 m bands blend a saturated object into its neighbours. Chosen leave-one-city-out
#: on the 10 OSCD cities among 0-8 px by the default change score's AP and mask F1 (docs/results/change_saturation.md).
SATURATION_BUFFER = 8


def saturated(values: np.ndarray) -> np.ndarray:
    """True where a value is saturated (at least :data:`S2_SATURATED`); NaN is not."""
    with np.errstate(invalid="ignore"):
        return np.asarray(values) >= S2_SATURATED


def valid_pixels(
    data: np.ndarray, nodata: float | None = S2_NODATA, carried: np.ndarray | None = None,
    buffer: int = SATURATION_BUFFER,
) -> np.ndarray:  # fmt: skip
    """Boolean ``(h, w)`` of digital numbers ``data`` ``(C, h, w)``: False where any band equals ``nodata`` (or is
    NaN when ``nodata`` is NaN), and within ``buffer`` px of a pixel that is saturated in any band or marked in
    ``carried`` (saturation found on a band's own grid before it was resampled, :func:`.pixel_grid.drawn_on`)."""
    bad: np.ndarray = np.asarray(saturated(data).any(axis=0))
    if carried is not None:
        bad |= carried
    bad = dilate(bad, buffer)
    if nodata is not None:
        bad |= (np.isnan(data) if np.isnan(nodata) else data == nodata).any(axis=0)
    return np.logical_not(bad)


@dataclass
class _BandSource:
    """Where one band of the stack comes from: a dataset (or warped view of one) and its band index."""

    name: str
    path: str
    dataset: Any  # rasterio DatasetReader or WarpedVRT on the scene grid
    index: int  # 1-based band index inside ``dataset``
    resolution: float  # native pixel size (CRS units)
    warped: bool  # True when resampled onto the finest grid
    dtype: str = "float32"  # data type in the file
    native: Any = None  # when warped: the dataset on its own grid, where saturation is decided


class Scene:
    """A stack of Sentinel-2 bands on one grid (the finest band's). Use :func:`open_scene`."""

    def __init__(
        self,
        sources: list[_BandSource],
        owned: list,
        crs,
        transform,
        height: int,
        width: int,
        nodata: float,
        description: str,
    ):
        self._sources = sources
        self._owned = owned  # datasets to close, in closing order
        self.crs = crs
        self.transform = transform
        self.height = int(height)
        self.width = int(width)
        self.nodata = nodata
        self.description = description
        self.source: list[str] = []  # the file, folder or files the scene was opened from
        self.product = ProductInfo()  # what the product says about itself (baseline, DN offset)
        self.closed = False

    # -- metadata ----------------------------------------------------------------------------
    @property
    def band_names(self) -> list[str]:
        """Canonical band names in stack order."""
        return [s.name for s in self._sources]

    @property
    def count(self) -> int:
        """Number of bands."""
        return len(self._sources)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the scene grid."""
        return self.height, self.width

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) of the scene grid in CRS units."""
        return abs(self.transform.a), abs(self.transform.e)

    @property
    def band_resolutions(self) -> dict[str, float]:
        """Native pixel size of each band before resampling."""
        return {s.name: s.resolution for s in self._sources}

    @property
    def dtypes(self) -> dict[str, str]:
        """Data type of each band in its file."""
        return {s.name: s.dtype for s in self._sources}

    @property
    def paths(self) -> dict[str, str]:
        """File each band is read from."""
        return {s.name: s.path for s in self._sources}

    def __repr__(self) -> str:
        return (
            f"Scene({self.description!r}, bands={self.band_names}, {self.height}x{self.width} px, "
            f"crs={self.crs}, nodata={self.nodata})"
        )

    # -- reading -----------------------------------------------------------------------------
    def _band_indices(self, bands: Sequence[str] | None) -> list[int]:
        if bands is None:
            return list(range(self.count))
        if isinstance(bands, str):
            raise BandError(f"bands={bands!r} is a string; pass a list of band names such as ['B04', 'B03', 'B02'].")
        want = canonical_band_names(bands)
        missing = [b for b in want if b not in self.band_names]
        if missing:
            raise BandError(
                f"Missing band(s) {', '.join(missing)}: the scene {self.description} has "
                f"{', '.join(self.band_names)}. Provide an input that includes them."
            )
        return [self.band_names.index(b) for b in want]

    def read(
        self,
        window: WindowLike | None = None,
        bands: Sequence[str] | None = None,
        out_shape: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """Raw digital numbers as float32 ``(C, h, w)`` on the scene grid.

        ``window``: a :class:`rasterio.windows.Window` or ``((row0, row1), (col0, col1))`` on the scene
        grid; parts outside the scene are filled with ``nodata``. ``bands``: names (any alias) to
        read, in this order; default all bands in stack order. ``out_shape=(h, w)`` (whole scene
        only) reads a reduced-resolution version (block averages), e.g. for previews.
        """
        if self.closed:
            raise RasterInputError(
                f"The scene {self.description} is closed; read inside the `with open_scene(...)` block."
            )
        idx = self._band_indices(bands)
        if out_shape is not None:
            if window is not None:
                raise RasterInputError("out_shape works on the whole scene only; leave window=None.")
            return self._read_reduced(idx, (int(out_shape[0]), int(out_shape[1])))
        win = _as_window(window, self.height, self.width)
        h, w = int(win.height), int(win.width)
        out = np.full((len(idx), h, w), self.nodata, dtype=np.float32)
        # part of the window inside the scene
        r0, c0 = max(0, int(win.row_off)), max(0, int(win.col_off))
        r1, c1 = min(self.height, int(win.row_off) + h), min(self.width, int(win.col_off) + w)
        if r1 <= r0 or c1 <= c0:
            return out
        inner = Window(c0, r0, c1 - c0, r1 - r0)
        dr, dc = r0 - int(win.row_off), c0 - int(win.col_off)
        for k, i in enumerate(idx):
            src = self._sources[i]
            try:
                data = src.dataset.read(src.index, window=inner, out_dtype=np.float32)
            except RasterioError as err:
                raise RasterInputError(
                    f"Cannot read band {src.name} from {src.path}: {err}. The file is truncated or corrupt; "
                    "download or export it again."
                ) from err
            out[k, dr : dr + (r1 - r0), dc : dc + (c1 - c0)] = data
        return out

    def _read_reduced(self, idx: list[int], out_shape: tuple[int, int]) -> np.ndarray:
        out = np.empty((len(idx), *out_shape), dtype=np.float32)
        for k, i in enumerate(idx):
            src = self._sources[i]
            try:
                out[k] = src.dataset.read(
                    src.index, out_shape=out_shape, resampling=Resampling.average, out_dtype=np.float32
                )
            except RasterioError as err:
                raise RasterInputError(
                    f"Cannot read band {src.name} from {src.path}: {err}. The file is truncated or corrupt; "
                    "download or export it again."
                ) from err
        return out

    def valid_mask(
        self, window: WindowLike | None = None, bands: Sequence[str] | None = None, data: np.ndarray | None = None
    ) -> np.ndarray:
        """Boolean ``(h, w)`` of ``window`` (default the whole scene): False where a band (of ``bands``) equals
        ``nodata``, and within :data:`SATURATION_BUFFER` px of a saturated pixel (at least :data:`S2_SATURATED`).
        Saturation of a resampled band is decided on its own grid and carried through the resampling, so a pixel
        whose value draws on a saturated source pixel is invalid however the blend came out. ``data``: the window
        as :meth:`read` gives it (read here when omitted)."""
        win = _as_window(window, self.height, self.width)
        if data is None:
            data = self.read(win, bands)
        if data.shape[-2:] != (int(win.height), int(win.width)):
            raise RasterInputError(f"data of shape {data.shape} does not match the window {win}; pass its window.")
        carried = None
        for i in self._band_indices(bands):
            src = self._sources[i]
            if src.warped and src.native is not None:
                grid = Grid(self.crs, self.transform, self.height, self.width)
                mark = drawn_on(src.native, src.index, grid, win, saturated)
                carried = mark if carried is None else carried | mark
        return valid_pixels(data, self.nodata, carried, SATURATION_BUFFER)

    # -- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        """Close every file the scene opened."""
        for ds in self._owned:
            try:
                ds.close()
            except Exception:  # pragma: no cover - closing must never mask the real error
                pass
        self.closed = True

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _as_window(window: WindowLike | None, height: int, width: int) -> Window:
    if window is None:
        return Window(0, 0, width, height)
    if isinstance(window, Window):
        win = window
    else:
        try:
            (r0, r1), (c0, c1) = window
        except (TypeError, ValueError) as err:
            raise RasterInputError(
                f"window={window!r} is not understood; pass rasterio.windows.Window(col, row, width, height) "
                "or ((row0, row1), (col0, col1))."
            ) from err
        win = Window(c0, r0, c1 - c0, r1 - r0)
    if win.width <= 0 or win.height <= 0:
        raise RasterInputError(f"window {win} is empty; give a window with positive width and height.")
    if any(float(v) != int(v) for v in (win.col_off, win.row_off, win.width, win.height)):
        raise RasterInputError(f"window {win} has fractional offsets or size; use whole pixels.")
    return win
