"""Write a tiled, compressed GeoTIFF under a temporary name and rename it into place on success.

All metadata is set before the first pixel, so GDAL puts the directory (IFD) at the start of the
file and the image blocks after it: the Cloud-Optimized GeoTIFF layout (without overviews unless
asked for; ``overviews=True`` adds them through GDAL's COG driver, one more pass).

Float outputs are float16 (IEEE half, stored with ``NBITS=16``) or float32 with NaN as nodata.
int8 outputs are quantised per band with a linear scale/offset from the band's min/max over the
whole scene (the TIFF's scale/offset metadata: ``value = stored * scale + offset``), -128 is nodata;
this needs one more pass over the file after streaming. uint8 is for class maps (0 = nodata).
A crash or exception never leaves a file under the final name.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from ..errors import RasterInputError

OUTPUT_DTYPES = ("float16", "float32", "int8", "uint8")
COMPRESSIONS = ("zstd", "deflate", "lzw", "none")
INT8_NODATA = -128


def check_output_path(dst: str | os.PathLike, overwrite: bool) -> Path:
    """Validate an output path early (before any computation) and return it as a Path."""
    path = Path(dst).expanduser()
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise RasterInputError(
            f"The output folder {folder} does not exist; create it first (mkdir -p {folder}) or choose another path."
        )
    if path.is_dir():
        raise RasterInputError(
            f"The output path {path} is a folder; give a file name such as {path / 'embeddings.tif'}."
        )
    if path.exists() and not overwrite:
        raise RasterInputError(f"{path} already exists; pass overwrite=True (CLI: --overwrite) or choose another name.")
    if not os.access(folder, os.W_OK):
        raise RasterInputError(f"Cannot write into {folder} (permission denied); choose a writable folder.")
    return path


def _temp_name(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}.tif")


class GeoTiffWriter:
    """Stream blocks into a GeoTIFF; :meth:`commit` renames it into place, :meth:`abort` removes it.

    Use as a context manager: leaving the block with an exception aborts, otherwise commits.
    """

    def __init__(
        self,
        dst: str | os.PathLike,
        *,
        height: int,
        width: int,
        count: int,
        crs: Any,
        transform: Any,
        dtype: str = "float16",
        descriptions: Sequence[str] | None = None,
        tags: Mapping[str, Any] | None = None,
        colormap: Mapping[int, Sequence[int]] | None = None,
        blocksize: int = 256,
        compress: str = "zstd",
        overwrite: bool = False,
        threads: int = 1,
        overviews: bool = False,
    ) -> None:
        if dtype not in OUTPUT_DTYPES:
            raise RasterInputError(f"dtype={dtype!r} is not supported; use one of {', '.join(OUTPUT_DTYPES)}.")
        if compress not in COMPRESSIONS:
            raise RasterInputError(f"compress={compress!r} is not supported; use one of {', '.join(COMPRESSIONS)}.")
        if blocksize % 16 or blocksize < 16:
            raise RasterInputError(f"blocksize={blocksize} must be a multiple of 16 (GeoTIFF tiles).")
        self.path = check_output_path(dst, overwrite)
        self.dtype = dtype
        self.count = count
        self.height, self.width = height, width
        self._tags = {k: str(v) for k, v in (tags or {}).items()}
        self._descriptions = list(descriptions or [])
        self._colormap = colormap
        self._threads = max(1, int(threads))
        self._overviews = bool(overviews)
        self._min = np.full(count, np.inf)
        self._max = np.full(count, -np.inf)
        self._tmp = _temp_name(self.path, "partial")
        self._profile = self._make_profile(crs, transform, blocksize, compress)
        stream_profile = dict(self._profile)
        if dtype == "int8":  # stream float16 first, quantise once the range is known
            stream_profile.update(dtype="float32", nbits=16, nodata=float("nan"))
        self._ds = rasterio.open(self._tmp, "w", **stream_profile)
        self._finished = False
        if dtype != "int8":
            # metadata before any pixel: GDAL then writes the directory (IFD) at the start of the file,
            # ahead of the image blocks, as the Cloud-Optimized GeoTIFF layout wants
            try:
                self._finish_metadata(self._ds)
            except BaseException:
                self.abort()
                raise

    def _make_profile(self, crs, transform, blocksize: int, compress: str) -> dict[str, Any]:
        small = max(self.height, self.width) <= blocksize
        # band interleaving: each embedding dimension is a smooth image that compresses well with the
        # floating-point predictor (about half the size of pixel interleaving, for ~30 % more write time)
        profile: dict[str, Any] = dict(
            driver="GTiff",
            height=self.height,
            width=self.width,
            count=self.count,
            crs=crs,
            transform=transform,
            tiled=not small,
            bigtiff="IF_SAFER",
            interleave="band",
        )
        if not small:
            profile.update(blockxsize=blocksize, blockysize=blocksize)
        if compress != "none":
            profile["compress"] = compress
            if compress == "zstd":
                profile["zstd_level"] = 1
            profile["predictor"] = 3 if self.dtype.startswith("float") else 2
            if self._threads > 1:
                profile["num_threads"] = self._threads
        if self.dtype == "float16":
            profile.update(dtype="float32", nbits=16, nodata=float("nan"))
        elif self.dtype == "float32":
            profile.update(dtype="float32", nodata=float("nan"))
        elif self.dtype == "int8":
            profile.update(dtype="int8", nodata=INT8_NODATA)
        else:
            profile.update(dtype="uint8", nodata=0)
        return profile

    # -- writing -------------------------------------------------------------------------------
    def write(self, row: int, col: int, block: np.ndarray) -> None:
        """Write ``block`` (count, h, w) at (row, col). Float blocks use NaN for nodata."""
        if block.ndim != 3 or block.shape[0] != self.count:
            raise ValueError(f"block must be ({self.count}, h, w), got {block.shape}")
        if self.dtype == "int8":
            with np.errstate(invalid="ignore"):
                flat = block.reshape(self.count, -1)
                finite = np.isfinite(flat)
                if finite.any():
                    lo = np.where(finite, flat, np.inf).min(axis=1)
                    hi = np.where(finite, flat, -np.inf).max(axis=1)
                    np.minimum(self._min, lo, out=self._min)
                    np.maximum(self._max, hi, out=self._max)
        data = block if self.dtype == "uint8" else block.astype(np.float32, copy=False)
        self._ds.write(data, window=Window(col, row, block.shape[2], block.shape[1]))

    def _finish_metadata(self, ds) -> None:
        if self._tags:
            ds.update_tags(**self._tags)
        for i, d in enumerate(self._descriptions[: self.count]):
            ds.set_band_description(i + 1, d)
        if self._colormap is not None:
            ds.write_colormap(1, {int(k): tuple(int(c) for c in v) for k, v in self._colormap.items()})

    def _quantise(self) -> Path:
        """Second pass for int8: linear per-band quantisation to -127..127 from the scene min/max."""
        lo = np.where(np.isfinite(self._min), self._min, 0.0)
        hi = np.where(np.isfinite(self._max), self._max, 0.0)
        offset = (hi + lo) / 2.0
        scale = np.maximum((hi - lo) / 254.0, 1e-12)
        out = _temp_name(self.path, "int8")
        try:
            with rasterio.open(self._tmp) as src, rasterio.open(out, "w", **self._profile) as dst:
                dst.scales = tuple(float(s) for s in scale)
                dst.offsets = tuple(float(o) for o in offset)
                self._finish_metadata(dst)
                step = self._profile.get("blockysize", self.height)
                for r in range(0, self.height, step):
                    win = Window(0, r, self.width, min(step, self.height - r))
                    x = src.read(window=win)
                    q = np.rint((x - offset[:, None, None]) / scale[:, None, None])
                    q = np.where(np.isfinite(x), np.clip(q, -127, 127), INT8_NODATA).astype(np.int8)
                    dst.write(q, window=win)
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        self._tmp.unlink(missing_ok=True)
        return out

    def _with_overviews(self, src: Path) -> Path:
        """One more pass through GDAL's COG driver: the same file plus internal overviews."""
        from rasterio.shutil import copy as gdal_copy

        out = _temp_name(self.path, "cog")
        p = self._profile
        opts: dict[str, Any] = dict(
            driver="COG",
            blocksize=p.get("blockxsize", 256),
            bigtiff="IF_SAFER",
            compress=p.get("compress", "none"),
            overviews="AUTO",
            overview_resampling="mode" if self.dtype == "uint8" else "average",
        )
        if "predictor" in p:
            opts["predictor"] = "YES" if p["predictor"] == 2 else "FLOATING_POINT"
        if p.get("compress") == "zstd":
            opts["level"] = 1
        if self.dtype == "float16":
            opts["nbits"] = 16
        if self._threads > 1:
            opts["num_threads"] = self._threads
        try:
            gdal_copy(src, out, **opts)
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        src.unlink(missing_ok=True)
        return out

    def commit(self) -> Path:
        """Finish the file and move it to its final name (atomic on one filesystem)."""
        if self._finished:
            return self.path
        current = self._tmp
        try:
            self._ds.close()
            if self.dtype == "int8":
                current = self._quantise()
            if self._overviews:
                current = self._with_overviews(current)
            os.replace(current, self.path)
        except BaseException:
            self.abort()
            current.unlink(missing_ok=True)
            raise
        self._finished = True
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file(s); the final name is never touched."""
        try:
            if not self._ds.closed:
                self._ds.close()
        finally:
            self._tmp.unlink(missing_ok=True)
            self._finished = True

    def __enter__(self) -> GeoTiffWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
