"""Which file holds which band: band tokens in file names, folders and lists of per-band files.

Names like ``B02.tif``, ``s2_B8A.jp2`` or ``T33UUU_20170216T102101_B02_10m.jp2`` name their band.
Files whose names carry a tile (``T33UUU``) or a sensing time (``20170216T102101``) must agree on
them: band files of two different scenes are refused before any pixel is read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

from ..bands import canonical_band_name
from ..errors import BandError, RasterInputError

PathLike = Union[str, os.PathLike]  # noqa: UP007 (a runtime alias)

#: File suffixes looked at when a folder is given.
RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img")

_TOKEN_SPLIT = re.compile(r"[_\-.\s]+")
_BAND_TOKEN = re.compile(r"^B(0?[1-9]|1[0-2]|8A)$", re.IGNORECASE)
_TILE_TOKEN = re.compile(r"^T\d{2}[A-Z]{3}$")
_TIME_TOKEN = re.compile(r"^\d{8}T\d{6}$")


def band_from_filename(path: PathLike) -> str | None:
    """The canonical band named by a file name (``s2_B8A.jp2`` -> ``'B8A'``), or None.

    The name is split at ``_``, ``-`` and ``.``; the last token like ``B02``/``B2``/``B8A`` wins,
    so ``T33UUU_20170216T102101_B02_10m.jp2`` gives ``'B02'`` and ``labels.tif`` gives None.
    """
    stem = Path(path).name
    for suffix in RASTER_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    found = None
    for token in _TOKEN_SPLIT.split(stem):
        if _BAND_TOKEN.match(token):
            found = canonical_band_name(token)
    return found


def band_files(src: PathLike | Sequence[PathLike]) -> tuple[dict[str, str], str]:
    """Map band name -> file for a folder or an explicit list of files."""
    if isinstance(src, (str, os.PathLike)):
        folder = os.fspath(src)
        entries = sorted(e for e in os.listdir(folder) if e.lower().endswith(RASTER_SUFFIXES))
        paths = [os.path.join(folder, e) for e in entries]
        strict, description = False, folder
    else:
        paths = [os.fspath(p) for p in src]
        if not paths:
            raise RasterInputError("The list of band files is empty; pass one file per band.")
        strict, description = True, f"{len(paths)} band files in {os.path.dirname(paths[0]) or '.'}"
    found: dict[str, str] = {}
    for p in paths:
        band = band_from_filename(p)
        if band is None:
            if strict:
                raise RasterInputError(
                    f"Cannot tell which band {p} holds: its name has no band token such as B02 or B8A. "
                    "Rename it (e.g. B02.tif) or leave it out."
                )
            continue  # e.g. labels.tif, preview.jp2
        if band in found:
            raise RasterInputError(
                f"Two files hold band {band}: {found[band]} and {p}. Keep one file per band "
                "(for an L2A product, point at one resolution folder or pass a list of files)."
            )
        found[band] = p
    if not found:
        raise RasterInputError(
            f"No band files found in {description}: expected names like B02.tif, s2_B02.jp2 or "
            "T33UUU_20170216T102101_B02.jp2."
        )
    return found, description


def named_bands(ds: Any) -> list[str] | None:
    """Canonical band names from the band descriptions (or BAND_NAME tags), or None if any is missing."""
    names = []
    for i in range(1, ds.count + 1):
        candidates = [ds.descriptions[i - 1]] + [ds.tags(i).get(k) for k in ("BAND_NAME", "band_name", "name", "NAME")]
        name = None
        for cand in candidates:
            if not cand:
                continue
            try:
                name = canonical_band_name(cand)
                break
            except BandError:
                continue
        if name is None:
            return None
        names.append(name)
    return names


def check_same_scene(files: dict[str, str], description: str) -> None:
    """Refuse band files whose names name different tiles or sensing times (two scenes mixed up)."""
    for what, pattern in (("tile", _TILE_TOKEN), ("sensing time", _TIME_TOKEN)):
        seen: dict[str, str] = {}
        for band, path in files.items():
            tokens = [t for t in _TOKEN_SPLIT.split(Path(path).name) if pattern.match(t)]
            if tokens:
                seen.setdefault(tokens[0], f"{band} ({Path(path).name})")
        if len(seen) > 1:
            listed = "; ".join(f"{k}: {v}" for k, v in seen.items())
            raise RasterInputError(
                f"The band files in {description} come from different scenes (different {what}s in their names: "
                f"{listed}). Give the band files of one scene (one tile, one date)."
            )


__all__ = ["RASTER_SUFFIXES", "band_files", "band_from_filename", "check_same_scene", "named_bands"]
