"""A full check of a region store (``earth-embed verify``): metadata, every finished unit's files and chunks.

:func:`check_store` reads every metadata file, hashes every shard file against its registry entry and
decodes every finished unit (its chunks must be readable, its count of valid pixels must be the recorded
one, and a code is nodata exactly where its scale is NaN). The :class:`StoreReport` names each problem.
:func:`reset_units` forgets failed units (their entries and shard files) so that the next run computes
them again; the pipeline's ``verify_store(..., repair=True)`` does that and recomputes them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import quantize
from ..errors import OutputError
from . import zarr_layout as layout
from .zarr_units import DATA_ARRAYS, REGISTRY, UnitCheck, check_entry, read_entry, shard_keys, store_leftovers


@dataclass
class StoreReport:
    """What :func:`check_store` found. ``ok``: metadata readable and every finished unit intact."""

    path: Path
    metadata_error: str | None = None
    units: list[UnitCheck] = field(default_factory=list)  # every registered unit
    planned: int | None = None  # units of the run's plan (from its recipe), when recorded
    leftovers: list[Path] = field(default_factory=list)
    bytes_checked: int = 0
    seconds: float = 0.0
    repaired: list[str] = field(default_factory=list)  # what a repair did, in words

    @property
    def failed(self) -> list[UnitCheck]:
        return [u for u in self.units if not u.ok]

    @property
    def ok(self) -> bool:
        return self.metadata_error is None and not self.failed

    def __str__(self) -> str:
        good = sum(u.ok for u in self.units)
        of = f" of {self.planned} planned" if self.planned is not None else ""
        lines = [
            f"{self.path}: {good} unit(s) intact{of}, {len(self.failed)} damaged; "
            f"{self.bytes_checked / 1e6:.1f} MB hashed and decoded in {self.seconds:.1f} s"
        ]
        if self.metadata_error:
            lines.append(f"metadata: {self.metadata_error}")
        lines += [f"unit {u.key}: {u.problem}" for u in self.failed]
        if self.planned is not None and len(self.units) < self.planned:
            lines.append(
                f"{self.planned - len(self.units)} unit(s) not finished yet: rerun embed-region to compute them"
            )
        if self.leftovers:
            lines.append(
                f"{len(self.leftovers)} temporary file(s) of interrupted runs (earth-embed clean removes them)"
            )
        lines += self.repaired
        return "\n".join(lines)


def _units_on_disk(store: Path) -> list[tuple[str, tuple[int, int], Path]]:
    found = []
    registry = store / REGISTRY
    for entry in sorted(registry.glob("*/*.json")) if registry.is_dir() else []:
        try:
            r, c = (int(v) for v in entry.stem.split("."))
        except ValueError:
            continue
        found.append((entry.parent.name, (r, c), entry))
    return found


def _decode_check(store: Path, group: str, shard: tuple[int, int], size: int, check: UnitCheck) -> None:
    """Read the unit's chunks back; mark ``check`` failed when they cannot be decoded or disagree. A unit of an
    acquisition layer (``GROUP@DATE``) is read from its date's slice of the time arrays."""
    import zarr

    from .zarr_dates import CODES_BY_DATE, DATES_ATTR, SCALES_BY_DATE

    try:
        name, _, date = group.partition("@")
        at: tuple[int, ...] = ()
        codes_name, scales_name = "embeddings", quantize.SCALES_NAME
        if date:
            found: Any = zarr.open_group(store / name, mode="r").attrs.get(DATES_ATTR) or []
            dates = [str(d) for d in found]
            at, codes_name, scales_name = (dates.index(date),), CODES_BY_DATE, SCALES_BY_DATE
        codes_arr = zarr.open_array(store / name / codes_name, mode="r")
        scales_arr = zarr.open_array(store / name / scales_name, mode="r")
        r0, c0 = shard[0] * size, shard[1] * size
        rows, cols = slice(r0, r0 + size), slice(c0, c0 + size)
        codes = np.asarray(codes_arr[at + (slice(None), rows, cols)])
        scales = np.asarray(scales_arr[at + (rows, cols)])
    except Exception as err:  # zarr/numcodecs raise many kinds for damaged chunks
        check.ok, check.problem = False, f"its chunks cannot be decoded ({type(err).__name__}: {err})"
        return
    valid = quantize.valid_mask(codes)
    if int(valid.sum()) != check.valid_pixels:
        check.ok = False
        check.problem = f"it holds {int(valid.sum())} valid pixels, {check.valid_pixels} were written"
    elif not np.array_equal(valid, np.isfinite(scales)):
        check.ok, check.problem = False, "its codes and scales disagree on which pixels are nodata"


def check_store(store: str | os.PathLike, decode: bool = True) -> StoreReport:
    """Check everything of the store at ``store`` (see the module doc); never raises for damage it finds."""
    p = Path(store)
    if not (p / REGISTRY).is_dir() and not (p / "zarr.json").is_file():
        raise OutputError(f"{p} is not an earth-embed region store; pass the OUT.zarr written by embed-region.")
    t0 = time.perf_counter()
    report = StoreReport(p, leftovers=store_leftovers(p))
    recipe = read_entry(p / REGISTRY / "run.json") or {}
    if isinstance(recipe.get("units"), list):
        report.planned = len(recipe["units"])
    try:
        attrs = layout.check_layout(p)
        size = int((attrs.get("earth_embed:sizes") or {}).get("shard", 0))
    except OutputError as err:
        report.metadata_error, size = str(err), 0
    for group, shard, entry in _units_on_disk(p):
        check = check_entry(p, entry, f"{group}/{shard[0]}.{shard[1]}", full=True)
        if check.ok:
            report.bytes_checked += sum(int(f.get("bytes", 0)) for f in check.files.values())
            if decode and size and report.metadata_error is None:
                _decode_check(p, group, shard, size, check)
        report.units.append(check)
    report.seconds = time.perf_counter() - t0
    return report


def reset_units(store: str | os.PathLike, keys: list[str]) -> None:
    """Forget units ``GROUP/R.C`` (or layer units ``GROUP@DATE/R.C``): remove their registry entries, then their
    shard files (computed again next run)."""
    p = Path(store)
    for key in keys:
        group, rc = key.split("/")
        r, c = (int(v) for v in rc.split("."))
        entry = p / REGISTRY / group / f"{r}.{c}.json"
        files = (read_entry(entry) or {}).get("files") if "@" in group else None
        entry.unlink(missing_ok=True)
        if "@" in group:  # a layer unit: the shard files its entry recorded
            for rec in (files or {}).values():
                if isinstance(rec, dict) and rec.get("key"):
                    (p / str(rec["key"])).unlink(missing_ok=True)
            continue
        for name in DATA_ARRAYS:
            (p / shard_keys(group, (r, c))[name]).unlink(missing_ok=True)


__all__ = ["StoreReport", "check_store", "reset_units"]
