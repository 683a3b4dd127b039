"""Write a tiled, compressed GeoTIFF under a temporary name and rename it into place on success.

All metadata is set before the first pixel, so GDAL puts the directory (IFD) at the start of the
file and the image blocks after it: the Cloud-Optimized GeoTIFF layout (without overviews unless
asked for; ``overviews=True`` adds them through GDAL's COG driver, one more pass).

Float outputs are float16 (IEEE half, stored with ``NBITS=16``) or float32 with NaN as nodata.
int8 outputs hold codes exactly as given (the fixed rule of ``earth_embed.quantize``, whose
per-pixel scales the caller writes to a second file), -128 is nodata. uint8 is for class maps (0 = nodata).
A crash, an exception or a signal never leaves a file under the final name: every write and the
close are checked, the file is flushed (``fsync``) and verified before the rename, and one run at a
time may write a name (see ``outputs``). Unwritten blocks are left sparse, so an aborted run closes
at once instead of GDAL filling every block it never got to.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from ..errors import InputWarning, OutputError, RasterInputError
from ..inputs.scene import S2_SATURATED
from .atomic import GdalErrors, OutputLock, fsync, temp_name, verify_geotiff, write_failure

OUTPUT_DTYPES = ("float16", "float32", "int8", "uint8")
COMPRESSIONS = ("zstd", "deflate", "lzw", "none")
INT8_NODATA = -128


#: Output names that promise a picture, not a GeoTIFF.
_PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")


def check_geotiff_name(path: Path) -> None:
    """Refuse a GeoTIFF output named like a picture (``emb.png``)."""
    if path.suffix.lower() in _PICTURE_SUFFIXES:
        raise RasterInputError(
            f"{path} names a {path.suffix[1:].upper()} picture, but the output is a GeoTIFF; name it "
            f"{path.with_suffix('.tif').name} (for a picture of the embeddings: earth-embed preview)."
        )


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


def _size(nbytes: float) -> str:
    """``nbytes`` for a reader: GB from 1 GB up, else MB, else kB (never "0.0 GB")."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes / 1e3:.1f} kB"


def _warn_if_short_of_space(path: Path, nbytes: float) -> None:
    """Warn when the uncompressed output would not fit the free space (compression often halves it)."""
    try:
        free = shutil.disk_usage(path.parent if str(path.parent) else ".").free
    except OSError:
        return
    if nbytes > free:
        warnings.warn(
            f"{path} may need up to {_size(nbytes)} (uncompressed) and {_size(free)} are free in "
            f"{path.parent}. If the disk fills up the run stops with an error and leaves nothing; free space or "
            "write elsewhere to be sure (int8 output is a quarter of float32).",
            InputWarning,
            stacklevel=3,
        )


def _root_cause(err: BaseException) -> str:
    """The innermost message of a chain of GDAL errors (rasterio wraps them several times)."""
    while err.__cause__ is not None:
        err = err.__cause__
    return str(err)


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
        require_valid: bool = True,
        late_tags: Sequence[str] = (),
    ) -> None:
        if dtype not in OUTPUT_DTYPES:
            raise RasterInputError(f"dtype={dtype!r} is not supported; use one of {', '.join(OUTPUT_DTYPES)}.")
        if compress not in COMPRESSIONS:
            raise RasterInputError(f"compress={compress!r} is not supported; use one of {', '.join(COMPRESSIONS)}.")
        if blocksize % 16 or blocksize < 16:
            raise RasterInputError(f"blocksize={blocksize} must be a multiple of 16 (GeoTIFF tiles).")
        self.path = check_output_path(dst, overwrite)
        self._overwrite = overwrite
        self.require_valid = require_valid
        self.dtype = dtype
        self.count = count
        self.height, self.width = height, width
        self._tags = {k: str(v) for k, v in (tags or {}).items()}
        self._descriptions = list(descriptions or [])
        self._colormap = colormap
        self._threads = max(1, int(threads))
        self._overviews = bool(overviews)
        self.valid_pixels = 0  # pixels written with a value (not nodata) in band 1
        # tags known only at the end (a run's masked share): reserved now at a fixed width, so the directory
        # stays ahead of the blocks, and filled in place at commit (:meth:`set_late_tag`)
        self._late: dict[str, str] = {}
        for key in late_tags:
            self._tags[key] = _LATE_PLACEHOLDER
        self._lock = OutputLock(self.path)
        self._lock.acquire()  # refuses a second writer; removes leftovers of killed runs to this name
        self._tmp = temp_name(self.path, "partial")
        self._finished = False
        try:
            self._profile = self._make_profile(crs, transform, blocksize, compress)
            stream_profile = dict(self._profile)
            _warn_if_short_of_space(self.path, height * width * count * (1 if dtype in ("int8", "uint8") else 2))
            self._ds = rasterio.open(self._tmp, "w", **stream_profile)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            self._lock.release()
            raise
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
            sparse_ok=True,  # blocks never written stay empty: an aborted run closes at once
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
        data = block if self.dtype in ("uint8", "int8") else block.astype(np.float32, copy=False)
        if self.dtype == "int8":
            valid = data[0] != INT8_NODATA
        else:
            valid = data[0] != 0 if self.dtype == "uint8" else np.isfinite(data[0])
        self.valid_pixels += int(np.count_nonzero(valid))
        try:
            self._ds.write(data, window=Window(col, row, block.shape[2], block.shape[1]))
        except Exception as err:  # RasterioIOError and rasterio's CPLE_* errors
            raise write_failure(self.path, f"GDAL could not write a block ({_root_cause(err)}).") from err

    def set_late_tag(self, key: str, value: str) -> None:
        """The value of a tag reserved with ``late_tags=`` (at most 8 characters), written at :meth:`commit`."""
        if key not in self._tags or len(value) > len(_LATE_PLACEHOLDER):
            raise ValueError(f"{key!r} is not a late tag of {self.path}, or {value!r} is longer than 8 characters")
        self._late[key] = value

    def _close_and_fill(self) -> None:
        """Close the file, then write the late tags' values over their placeholders (same length, in place)."""
        self._ds.close()
        if not self._late:
            return
        with open(self._tmp, "r+b") as f:
            head = f.read(1 << 20)  # the directory and its metadata lie at the start (COG layout)
            for key, value in self._late.items():
                old = f'<Item name="{key}">{_LATE_PLACEHOLDER}</Item>'.encode()
                at = head.find(old)
                if at < 0:
                    raise write_failure(self.path, f"its tag {key} could not be filled in.")
                f.seek(at)
                f.write(f'<Item name="{key}">{value.ljust(len(_LATE_PLACEHOLDER))}</Item>'.encode())

    def _finish_metadata(self, ds) -> None:
        if self._tags:
            ds.update_tags(**self._tags)
        for i, d in enumerate(self._descriptions[: self.count]):
            ds.set_band_description(i + 1, d)
        if self._colormap is not None:
            ds.write_colormap(1, {int(k): tuple(int(c) for c in v) for k, v in self._colormap.items()})

    def _finish_file(self, path: Path, close) -> None:
        """``close()`` the file at ``path`` and check it: GDAL's errors, fsync, every block inside the file."""
        with GdalErrors() as gdal:
            try:
                close()
            except Exception as err:  # RasterioIOError and rasterio's CPLE_* errors
                raise write_failure(self.path, f"GDAL could not finish the file ({_root_cause(err)}).") from err
        if gdal.messages:
            raise write_failure(self.path, f"GDAL reported: {gdal.messages[0]}.")
        try:
            fsync(path)
        except OSError as err:
            raise write_failure(self.path, f"flushing it to disk failed ({err.strerror}).") from err
        try:
            verify_geotiff(path, self.height, self.width, self.count)
        except OutputError as err:
            raise write_failure(self.path, str(err)) from err

    def _with_overviews(self, src: Path) -> Path:
        """One more pass through GDAL's COG driver: the same file plus internal overviews."""
        from rasterio.shutil import copy as gdal_copy

        out = temp_name(self.path, "cog")
        p = self._profile
        opts: dict[str, Any] = dict(
            driver="COG",
            blocksize=p.get("blockxsize", 256),
            bigtiff="IF_SAFER",
            compress=p.get("compress", "none"),
            overviews="AUTO",
            overview_resampling={"uint8": "mode", "int8": "nearest"}.get(self.dtype, "average"),
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
            self._finish_file(out, lambda: gdal_copy(src, out, **opts))
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        src.unlink(missing_ok=True)
        return out

    def _move_into_place(self, current: Path) -> None:
        """Rename the verified file to the final name; without ``overwrite`` never replace a file."""
        if self._overwrite:
            os.replace(current, self.path)
        else:
            try:
                os.link(current, self.path)  # atomic, and fails if the name was taken meanwhile
            except FileExistsError as err:
                raise OutputError(
                    f"{self.path} appeared while this run was writing it (another program wrote it); it was left "
                    "untouched and this run's result discarded. Pass overwrite=True (CLI: --overwrite) to "
                    "replace it, or choose another name."
                ) from err
            except OSError:  # a filesystem without hard links
                if self.path.exists():
                    raise OutputError(
                        f"{self.path} appeared while this run was writing it; it was left untouched. "
                        "Pass overwrite=True (CLI: --overwrite) or choose another name."
                    ) from None
                os.replace(current, self.path)
            current.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # make the rename itself durable
            fd = os.open(self.path.parent if str(self.path.parent) else ".", os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def commit(self) -> Path:
        """Finish, verify and move the file to its final name (atomic on one filesystem).

        Raises :class:`OutputError` when any write, the close or the verification failed and
        :class:`RasterInputError` when no pixel had a value; nothing is then left on disk.
        """
        if self._finished:
            return self.path
        current = self._tmp
        try:
            if self.require_valid and self.valid_pixels == 0:
                raise RasterInputError(
                    "Nothing valid to write: every pixel of the input is nodata (0), NaN or saturated (at or above "
                    f"{S2_SATURATED:.0f}) in at least one of the bands the model uses, so {self.path} would hold no "
                    "value at all and was not written. Check the input: all-zero or all-NaN band files, band files of "
                    "different scenes, the wrong bands, or values scaled beyond Sentinel-2's digital numbers."
                )
            self._finish_file(self._tmp, self._close_and_fill)
            if self._overviews:
                current = self._with_overviews(current)
            self._move_into_place(current)
        except BaseException:
            self.abort()
            current.unlink(missing_ok=True)
            raise
        self._finished = True
        self._lock.release()
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file(s) and release the name; the final name is never touched.

        Blocks never written stay sparse, so closing is quick whatever the size of the output.
        """
        try:
            if not self._ds.closed:
                with contextlib.suppress(Exception), GdalErrors():  # the file is discarded anyway
                    self._ds.close()
        finally:
            self._tmp.unlink(missing_ok=True)
            self._finished = True
            self._lock.release()

    def __enter__(self) -> GeoTiffWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


_LATE_PLACEHOLDER = "-" * 8  # room for a share written "%.6f"


def band_names(dimensions: int) -> list[str]:
    """Band descriptions of an embedding raster: ``emb_00`` ... ``emb_<D-1>``."""
    return [f"emb_{i:02d}" for i in range(dimensions)]


def scales_path(dst: str | os.PathLike) -> Path:
    """Where the per-pixel scales of an int8 embedding GeoTIFF go: ``NAME.scales.tif`` beside it."""
    p = Path(dst)
    return p.with_name(f"{p.stem}.scales.tif")
