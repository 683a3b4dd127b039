"""Read embedding rasters: one reader, and the dequantisation of every storage rule in one place.

Every consumer of embedding rasters (the apps: fit, similar, cluster; the preview) reads through
:func:`open_embeddings` / :func:`dequantize`, which return float32 values with NaN where the raster
is nodata, whatever the stored type, by the raster's own tags:

* float16/float32 GeoTIFFs of ``earth-embed embed``: as stored (NaN is nodata);
* int8 GeoTIFFs of ``earth-embed embed`` and COGs exported from a region store (tag
  ``EMBEDDING_QUANTIZATION=pixel-scale-int8``): the per-pixel rule of :mod:`earth_embed.quantize`,
  with the scales read from the raster named by ``EMBEDDING_SCALES_FILE`` beside it.

Codes and scales are bound to each other: both files (both Zarr arrays) carry the same run id
(:data:`RUN_TAG`, ``earth_embed:run_id``), checked when they are opened, and every GeoTIFF is checked to
be whole (:mod:`~earth_embed.outputs.tiff_check`) before a pixel is read.

A new storage rule is added here, once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.coords import BoundingBox
from rasterio.transform import array_bounds
from rasterio.windows import Window

from .. import quantize
from ..errors import RasterInputError
from .provenance import PRECISION_COG_TAG, RUNTIME_COG_TAG, WEIGHTS_COG_TAG, resolve_href
from .tiff_check import check_tiff_complete

#: GeoTIFF tag holding the run id that an int8 codes file and its scales file share.
RUN_TAG = "EMBEDDING_RUN_ID"
#: Zarr attribute of the ``embeddings`` and ``scales`` arrays holding the store's run id.
RUN_ATTR = "earth_embed:run_id"

#: Side of the windows that the apps read, predict and write at a time (a multiple of the 256 px tiles).
WINDOW = 512


def is_embedding_tags(tags: dict[str, str]) -> bool:
    """True for the tags of an embedding raster (``embed``'s KIND, or a region COG's quantisation tag)."""
    return tags.get("KIND") == "embeddings" or quantize.TAG in tags


def dequantize(stored: np.ndarray, ds: Any, bands: list[int] | None = None) -> np.ndarray:
    """Stored float values (C, h, w) of the open dataset ``ds`` -> float32, NaN where nodata.

    int8 rasters need their per-pixel scales: read them through :class:`GeoTiffEmbeddings`.
    ``bands`` is accepted for symmetry (the 1-based band indexes that ``stored`` holds).
    """
    if ds.dtypes[0] == "int8":
        raise RasterInputError(
            f"{ds.name} holds int8 codes; read them with earth_embed.outputs.embeddings.open_embeddings, which "
            "applies their per-pixel scales (int8 files without the EMBEDDING_QUANTIZATION tag come from an older "
            "earth-embed: re-embed the scene)."
        )
    x = stored.astype(np.float32, copy=False)
    if ds.nodata is not None and np.isfinite(ds.nodata):
        x = np.where(stored == ds.nodata, np.nan, x)
    return x


class EmbeddingRaster:
    """Open embeddings on one grid: CRS, transform, size, dimension D, tags, and float32 windows.

    Use :func:`open_embeddings`; the subclasses read a GeoTIFF/COG or a region store's Zarr group.
    """

    path: Path
    height: int
    width: int
    dim: int
    crs: Any
    transform: Any
    tags: dict[str, str]

    @property
    def bounds(self) -> BoundingBox:
        """(left, bottom, right, top) in the raster's CRS."""
        return BoundingBox(*array_bounds(self.height, self.width, self.transform))

    @property
    def model(self) -> str | None:
        """The encoder that wrote the embeddings: its local folder when the output records one that exists here
        (``EMBEDDING_MODEL_PATH``, relative to the output's folder), else the MODEL or EMBEDDING_MODEL tag (a Hub
        id, a folder's name, or the path ``embed`` was given), if recorded."""
        local = self.tags.get("EMBEDDING_MODEL_PATH")
        if local:
            folder = resolve_href(local, Path(self.path).parent)
            if folder.exists():
                return str(folder)
        return self.tags.get("MODEL") or self.tags.get("EMBEDDING_MODEL") or None

    def read(self, window: Window | None = None) -> np.ndarray:
        """Float32 embeddings (D, h, w) of ``window`` (default: all), NaN where nodata."""
        raise NotImplementedError

    def read_pixels(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Float32 embeddings (n, D) at pixel positions, read window by window (rows of any order)."""
        rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        out = np.full((rows.size, self.dim), np.nan, np.float32)
        for win in self.windows():
            r0, c0 = int(win.row_off), int(win.col_off)
            inside = (rows >= r0) & (rows < r0 + win.height) & (cols >= c0) & (cols < c0 + win.width)
            if inside.any():
                block = self.read(win)
                out[inside] = block[:, rows[inside] - r0, cols[inside] - c0].T
        return out

    def windows(self, size: int = WINDOW) -> Iterator[Window]:
        """Windows of ``size`` px covering the raster row by row (aligned to the output tiles)."""
        for r in range(0, self.height, size):
            for c in range(0, self.width, size):
                yield Window(c, r, min(size, self.width - c), min(size, self.height - r))

    def to_xarray(self) -> Any:
        """All embeddings as an ``xarray.DataArray`` (band, y, x) of float32, NaN where nodata, with pixel-centre
        ``x``/``y`` coordinates and the CRS (written through rioxarray when it is installed)."""
        import xarray as xr

        t = self.transform
        x = t.c + t.a * (np.arange(self.width) + 0.5)
        y = t.f + t.e * (np.arange(self.height) + 0.5)
        da = xr.DataArray(
            self.read(),
            dims=("band", "y", "x"),
            coords={"band": np.arange(self.dim), "x": x, "y": y},
            name="embeddings",
            attrs={**self.tags, "crs_wkt": self.crs.to_wkt() if self.crs is not None else ""},
        )
        try:
            import rioxarray  # noqa: F401  (registers the .rio accessor)
        except ImportError:
            return da
        return da.rio.write_crs(self.crs).rio.write_transform(t)

    def close(self) -> None:
        """Release the files."""

    def __enter__(self) -> EmbeddingRaster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GeoTiffEmbeddings(EmbeddingRaster):
    """A GeoTIFF of ``earth-embed embed`` (float, or pixel-scale int8 + scales) or a region COG (the same)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            self._ds = rasterio.open(self.path)
        except rasterio.errors.RasterioIOError as err:
            raise RasterInputError(f"{self.path} is not a readable raster ({err}).") from err
        ds = self._ds
        self.tags = ds.tags()
        self.height, self.width, self.dim = int(ds.height), int(ds.width), int(ds.count)
        self.crs, self.transform = ds.crs, ds.transform
        self._scales = None  # the per-pixel scales raster of a region COG
        try:
            if not is_embedding_tags(self.tags):
                kind = self.tags.get("KIND")
                what = f"a {kind!r} raster" if kind else "not an embedding raster (no KIND=embeddings tag)"
                raise RasterInputError(
                    f"{self.path} is {what}; pass a GeoTIFF written by `earth-embed embed` "
                    "(or, for `fit`, a scene together with --model to embed it on the fly)."
                )
            if ds.crs is None:
                raise RasterInputError(f"{self.path} has no CRS; re-run `earth-embed embed` on a georeferenced scene.")
            check_tiff_complete(self.path, "embedding raster")
            if self.tags.get(quantize.TAG) == quantize.RULE:
                self._scales = _open_scales(self.path, self.tags, ds)
        except BaseException:
            ds.close()
            raise

    def read(self, window: Window | None = None) -> np.ndarray:
        if self._scales is not None:
            return quantize.decode(self._ds.read(window=window), self.tags, self._scales.read(1, window=window))
        return dequantize(self._ds.read(window=window), self._ds)

    def close(self) -> None:
        self._ds.close()
        if self._scales is not None:
            self._scales.close()


def _open_scales(path: Path, tags: dict[str, str], codes: Any) -> Any:
    """The scales raster of the int8 codes ``codes`` (at ``path``), checked to be whole and of the same run."""
    scales = path.parent / tags.get("EMBEDDING_SCALES_FILE", "")
    beside = path.with_name(f"{path.stem}.scales.tif")  # the pair renamed together (NAME.tif + NAME.scales.tif)
    if not scales.is_file() and beside.is_file():
        scales = beside  # whether it belongs to these codes is checked below (the run id)
    if not scales.is_file():
        raise RasterInputError(
            f"{path} holds int8 codes whose per-pixel scales are in {scales.name} (or {beside.name}), neither of "
            "which is beside it; keep the scales file beside the codes (they are written, copied and exported "
            f"together; renamed, the pair is NAME.tif + NAME.scales.tif)."
        )
    check_tiff_complete(scales, "scales file")
    try:
        ds = rasterio.open(scales)
    except rasterio.errors.RasterioIOError as err:
        raise RasterInputError(f"The scales file {scales} cannot be opened ({err}); write it again.") from err
    try:
        mine, theirs = tags.get(RUN_TAG), ds.tags().get(RUN_TAG)
        if mine != theirs:
            raise RasterInputError(
                f"{scales} does not belong to {path}: the codes were written by run {mine or '(no run id)'} and "
                f"the scales by run {theirs or '(no run id)'}, so code x scale would give wrong values. Put back "
                f"the {scales.name} written with these codes, or embed the scene again."
            )
        if (ds.height, ds.width, ds.count) != (codes.height, codes.width, 1) or ds.transform != codes.transform:
            raise RasterInputError(
                f"{scales} ({ds.height} x {ds.width} px, {ds.count} band(s)) is not the scales raster of {path} "
                f"({codes.height} x {codes.width} px); put back the scales file written with these codes."
            )
    except BaseException:
        ds.close()
        raise
    return ds


class ZarrEmbeddings(EmbeddingRaster):
    """One CRS group of a region store (``earth-embed embed-region``): int8 codes + per-pixel scales; the
    latest-valid-pixel mosaic, or with ``time`` (``YYYY-MM-DD``) that acquisition's layer (``keep="all-dates"``)."""

    def __init__(self, store: Path, group: str, time: str | None = None) -> None:
        from .zarr_groups import group_info, store_links

        info = group_info(store, group)
        import zarr

        g = zarr.open_group(store / group, mode="r")
        if quantize.SCALES_NAME not in g:
            raise RasterInputError(
                f"group {group} of {store} has no '{quantize.SCALES_NAME}' array, so its int8 codes cannot be "
                "decoded; re-embed the region with this version of earth-embed."
            )
        self.path, self.store, self.group = store / group, store, group
        self.height, self.width = info.shape
        self.dim, self.crs, self.transform = info.dimensions, info.crs, info.transform
        self.tags = {quantize.TAG: quantize.RULE, "EMBEDDING_MODEL": info.model, "KIND": "embeddings"}
        if info.weights:
            self.tags[WEIGHTS_COG_TAG] = info.weights
        if info.precision:
            self.tags[PRECISION_COG_TAG] = info.precision
        if info.runtime:
            self.tags[RUNTIME_COG_TAG] = info.runtime
        local = store_links(store, info).model_path
        if local is not None:
            self.tags["EMBEDDING_MODEL_PATH"] = local.as_posix()
        self._codes: Any = g["embeddings"]
        self._scales: Any = g[quantize.SCALES_NAME]
        self._layer: tuple[int, ...] = ()
        if time is not None:
            self._open_layer(store, group, g, str(time))
        mine, theirs = self._codes.attrs.get(RUN_ATTR), self._scales.attrs.get(RUN_ATTR)
        if mine != theirs:
            raise RasterInputError(
                f"The scales array of {self.path} was written by run {theirs or '(no run id)'}, its codes by run "
                f"{mine or '(no run id)'}: they do not belong together. Run `earth-embed verify {store}` and embed "
                "the region again where it fails."
            )

    def _open_layer(self, store: Path, group: str, g: Any, time: str) -> None:
        """Read the acquisition layer of date ``time`` instead of the mosaic."""
        from .zarr_dates import CODES_BY_DATE, DATES_ATTR, SCALES_BY_DATE

        dates = [str(d) for d in g.attrs.get(DATES_ATTR) or []]
        if CODES_BY_DATE not in g or SCALES_BY_DATE not in g or not dates:
            raise RasterInputError(
                f"group {group} of {store} keeps no acquisition layers (only the latest mosaic), so time={time!r} "
                "cannot be read; embed the region with --keep all-dates (keep='all-dates'), or read the mosaic "
                "without a time."
            )
        if time not in dates:
            raise RasterInputError(
                f"group {group} of {store} has no layer dated {time}; its layers are {', '.join(dates)}."
            )
        self._codes, self._scales = g[CODES_BY_DATE], g[SCALES_BY_DATE]
        self._layer = (dates.index(time),)
        self.path = store / f"{group}@{time}"
        self.tags["EMBEDDING_DATE"] = time

    def read(self, window: Window | None = None) -> np.ndarray:
        win = window or Window(0, 0, self.width, self.height)
        rows = slice(int(win.row_off), int(win.row_off + win.height))
        cols = slice(int(win.col_off), int(win.col_off + win.width))
        at = self._layer
        try:
            codes = np.asarray(self._codes[at + (slice(None), rows, cols)])
            scales = np.asarray(self._scales[at + (rows, cols)])
        except Exception as err:  # a codec's error on damaged bytes (Zstd "Data corruption detected"...)
            raise RasterInputError(
                f"{self.store} is damaged: {', '.join(self._damaged(rows, cols)) or 'a shard'} cannot be decoded "
                f"({type(err).__name__}: {err}). Run `earth-embed verify {self.store} --repair`: it finds every "
                "damaged unit and computes it again."
            ) from err
        return quantize.decode(codes, self.tags, scales)

    def _damaged(self, rows: slice, cols: slice) -> list[str]:
        """The shard files (relative to the store) under ``rows``/``cols`` that fail to decode, one by one."""
        bad = []
        for arr, band in ((self._codes, (0,)), (self._scales, ())):
            step = int((getattr(arr, "shards", None) or arr.chunks)[-1])
            for r in range(rows.start // step, -(-rows.stop // step)):
                for c in range(cols.start // step, -(-cols.stop // step)):
                    one = (slice(r * step, (r + 1) * step), slice(c * step, (c + 1) * step))
                    try:
                        arr[self._layer + (slice(None),) * len(band) + one]
                    except Exception:
                        key = "/".join(str(i) for i in (*self._layer, *band, r, c))
                        bad.append(f"{self.group}/{arr.basename}/c/{key}")
        return bad


def open_embeddings(
    path: str | os.PathLike, group: str | None = None, as_xarray: bool = False, time: str | None = None
) -> Any:
    """Open embeddings, decoded to float32 (NaN where nodata): a GeoTIFF of ``earth-embed embed`` (float16,
    float32 or int8 + scales), a region COG, or a region store (``OUT.zarr`` with ``group`` or one CRS group,
    or ``OUT.zarr/GROUP``). A store written with ``keep="all-dates"`` also gives each acquisition layer: ``time``
    (``YYYY-MM-DD``) or the path ``OUT.zarr/GROUP@YYYY-MM-DD``. Returns an :class:`EmbeddingRaster` (read window
    by window), or with ``as_xarray=True`` the whole raster as an ``xarray.DataArray`` (band, y, x)."""
    p, date = split_layer(Path(path) / group if group else Path(path))
    raster = _open(p, time or date)
    if not as_xarray:
        return raster
    with raster:
        return raster.to_xarray()


def split_layer(path: str | os.PathLike) -> tuple[Path, str | None]:
    """``OUT.zarr/GROUP@YYYY-MM-DD`` -> (``OUT.zarr/GROUP``, ``YYYY-MM-DD``); any other path -> (path, None)."""
    p = Path(path)
    if not p.exists() and "@" in p.name and (p.parent / "zarr.json").is_file():
        name, date = p.name.rsplit("@", 1)
        return p.with_name(name), date
    return p, None


def _open(p: Path, time: str | None = None) -> EmbeddingRaster:
    if not p.exists():
        raise RasterInputError(f"{p} does not exist; write embeddings first with `earth-embed embed`.")
    if p.is_dir() and (p / "zarr.json").is_file():
        if (p.parent / "zarr.json").is_file():  # a group inside a store
            return ZarrEmbeddings(p.parent, p.name, time)
        from .zarr_groups import store_groups

        groups = store_groups(p)
        if len(groups) != 1:
            raise RasterInputError(
                f"The region store {p} has {len(groups)} CRS groups ({', '.join(groups) or 'none'}); pass one of "
                f"them as {p}/GROUP."
            )
        return ZarrEmbeddings(p, groups[0], time)
    if time is not None:
        raise RasterInputError(f"time={time!r} applies to a region store written with --keep all-dates, not to {p}.")
    return GeoTiffEmbeddings(p)
