"""Is a (Big)TIFF file whole? Read its directories (IFDs) and check every stored strip or tile lies inside it.

A truncated file (a copy cut short, a full disk) opens in GDAL and fails only when a missing block is
read ("Read failed"). :func:`check_tiff_complete` reads the offset and byte-count arrays of every IFD
(the full image, overviews, masks) straight from the file — a few kilobytes to a few megabytes, no pixel
— and raises at open time instead. Blocks never written (offset and size 0, ``SPARSE_OK``) are fine.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from ..errors import RasterInputError

_OFFSETS = {273: 279, 324: 325}  # StripOffsets -> StripByteCounts, TileOffsets -> TileByteCounts
_TYPES = {3: "H", 4: "I", 13: "I", 16: "Q", 17: "Q"}  # SHORT, LONG, IFD, LONG8, IFD8


class _Truncated(Exception):
    pass


def _read(f, offset: int, n: int, size: int) -> bytes:
    if offset < 0 or offset + n > size:
        raise _Truncated(f"the directory data at byte {offset} (+{n}) lies past the end ({size} bytes)")
    f.seek(offset)
    return f.read(n)


def tiff_data_end(path: str | os.PathLike) -> tuple[int, int]:
    """(largest byte any stored block reaches, file size) of a classic or BigTIFF file."""
    p = Path(path)
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = _read(f, 0, 16 if size >= 16 else 8, size)
        order = {b"II": "<", b"MM": ">"}.get(head[:2])
        if order is None:
            raise _Truncated("it does not start with a TIFF header")
        (magic,) = struct.unpack(order + "H", head[2:4])
        big = magic == 43
        if magic not in (42, 43):
            raise _Truncated("it does not start with a TIFF header")
        ifd = struct.unpack(order + ("Q" if big else "I"), head[8:16] if big else head[4:8])[0]
        count_fmt, entry_size, inline = ("Q", 20, 8) if big else ("H", 12, 4)
        end, seen = 0, set()
        while ifd:
            if ifd in seen:
                raise _Truncated("its directories loop")
            seen.add(ifd)
            n_size = 8 if big else 2
            (n,) = struct.unpack(order + count_fmt, _read(f, ifd, n_size, size))
            raw = _read(f, ifd + n_size, n * entry_size + (8 if big else 4), size)
            arrays: dict[int, np.ndarray] = {}
            for i in range(n):
                e = raw[i * entry_size : (i + 1) * entry_size]
                tag, typ = struct.unpack(order + "HH", e[:4])
                if tag not in (273, 279, 324, 325) or typ not in _TYPES:
                    continue
                count = struct.unpack(order + ("Q" if big else "I"), e[4:12] if big else e[4:8])[0]
                value = e[12:20] if big else e[8:12]
                dtype = np.dtype(order + _TYPES[typ])
                nbytes = count * dtype.itemsize
                if nbytes <= inline:
                    data = value[:nbytes]
                else:
                    (at,) = struct.unpack(order + ("Q" if big else "I"), value)
                    data = _read(f, at, nbytes, size)
                arrays[tag] = np.frombuffer(data, dtype=dtype).astype(np.int64)
            for off_tag, len_tag in _OFFSETS.items():
                if off_tag in arrays and len_tag in arrays and arrays[off_tag].size:
                    end = max(end, int((arrays[off_tag] + arrays[len_tag]).max()))
            (ifd,) = struct.unpack(order + ("Q" if big else "I"), raw[n * entry_size :])
    return end, size


def check_tiff_complete(path: str | os.PathLike, what: str = "file") -> None:
    """Raise :class:`RasterInputError` naming ``path`` when it is truncated or its directories are damaged."""
    try:
        end, size = tiff_data_end(path)
    except _Truncated as err:
        raise RasterInputError(
            f"The {what} {path} is truncated or corrupt ({err}); copy or write it again (a copy cut short or a "
            "full disk leaves such files)."
        ) from None
    if end > size:
        raise RasterInputError(
            f"The {what} {path} is truncated: its blocks reach byte {end} but the file has {size} bytes. Copy or "
            "write it again (a copy cut short or a full disk leaves such files)."
        )


__all__ = ["check_tiff_complete", "tiff_data_end"]
