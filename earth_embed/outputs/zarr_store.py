"""The region store: a Zarr v3 hierarchy, one group per CRS, int8 embeddings written unit by unit.

Layout of ``OUT.zarr``::

    zarr.json                   root group: the plan's fingerprint, run id, model, quantisation, scenes
    EPSG_32618/                 one group per CRS (the plan's group key)
        embeddings              int8 codes (band, y, x): all bands in each chunk, sharded, Blosc-zstd + CRC-32C, -128 nodata
        scales                  float32 (y, x): each pixel's scale (value = code * scale), NaN nodata
        x, y                    pixel-centre coordinates (CRS units), band (0..D-1)
        spatial_ref             CF grid mapping (crs_wkt, GeoTransform): xarray/rioxarray georeference
    _units/EPSG_32618/3.4.json  registry of finished units: each shard file's bytes and SHA-256
    _units/run.json             the run's recipe (scenes, model, sizes), for ``earth-embed verify --repair``

Group attributes follow the draft Zarr conventions ``proj:`` (geo-proj) and ``spatial:`` and a
``geoemb:`` namespace for the embedding (model, revision, bands, quantisation, software, sources). The
``embeddings`` and ``scales`` arrays carry the store's run id (``earth_embed:run_id``): a reader refuses
codes and scales of different runs.

Writes are whole units (one shard of each array, clipped at the grid edge), so no two writers ever touch
one shard; one run at a time writes a store (:func:`~earth_embed.outputs.zarr_cleanup.store_lock`). zarr writes each shard under a
temporary name and renames it; the unit's registry entry is written (by rename) only after its data is
flushed, and records what was written (:mod:`~earth_embed.outputs.zarr_units`). A rerun computes exactly
the units without an entry or whose files no longer match it. The store is picklable (workers reopen it
by path).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .. import quantize
from ..errors import OutputError, RasterInputError
from ..tiling.plan import RegionPlan, WorkUnit
from ..tiling.unit import UnitOutput
from . import zarr_layout as layout
from .provenance import PRECISION_ATTR, RUNTIME_ATTR, WEIGHTS_ATTR, model_facts, relative_href, source_entry
from .zarr_dates import unit_arrays, unit_keys
from .zarr_units import (
    ENTRY_FORMAT,
    REGISTRY,
    UnitCheck,
    check_entry,
    record_file,
    write_json,
)

log = logging.getLogger("earth_embed")
RECIPE = "run.json"
#: Version of the store's bookkeeping (2: registry entries with checksums, run id on the arrays).
STORE_FORMAT = 2


def _zarr():
    try:
        import zarr
    except ImportError as err:  # pragma: no cover - zarr is a core dependency of the region engine
        raise RasterInputError('The region store needs zarr >= 3; pip install "earth-embed[region]".') from err
    return zarr


def plan_fingerprint(
    plan: RegionPlan, model_id: str, weights: str | None = None, precision: str = "fp32", runtime: str = "torch"
) -> str:
    """A short hash of what decides the store's content: grids, chunking, halo, scenes, the model (its weights'
    hash; ``model_id``, its folder or Hub id, when no hash is given: the fingerprint of earlier versions), the
    forward's precision and runtime (fp32 by torch, the only ones of earlier versions, leave the fingerprint as it
    was) and the scenes' cloud masks (none leaves it as it was)."""
    facts: dict[str, Any] = {
        "groups": {k: [g.crs, list(g.transform)[:6], g.height, g.width] for k, g in plan.groups.items()},
        "sizes": [plan.chunk, plan.shard, plan.block, plan.halo],
        "scenes": [[s.spec.name, s.group, s.row, s.col] for s in plan.scenes],
        "model": [weights or model_id, plan.embed_dim, list(plan.bands)],
        "quantization": quantize.RULE,
    }
    if plan.layers:  # keep="all-dates"; a latest-only plan keeps the fingerprint of earlier versions
        facts["layers"] = {k: list(v) for k, v in plan.layers.items()}
    if precision != "fp32":
        facts["precision"] = precision
    if runtime != "torch":
        facts["runtime"] = runtime
    masks = [s.spec.mask.describe() if s.spec.mask else "none" for s in plan.scenes]
    if any(m != "none" for m in masks):  # unmasked plans keep the fingerprint of earlier versions
        facts["masks"] = masks
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


class RegionStore:
    """An embedding store at ``path`` (a ``.zarr`` folder). Build it with :meth:`create`."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._arrays: dict[tuple[str, str], Any] = {}
        self.fingerprint: str | None = None  # the plan's, once created or reopened

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self._arrays = {}

    # -- creation ------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        plan: RegionPlan,
        *,
        model_id: str,
        revision: str = "none",
        overwrite: bool = False,
        extra: dict[str, Any] | None = None,
        scene_root: str | os.PathLike | None = None,
        absolute_paths: bool = False,
        repair: bool = False,
        weights: str | None = None,
        precision: str = "fp32",
        runtime: str = "torch",
    ) -> RegionStore:
        """Create the store for ``plan``, or reopen it to resume when it was made for the same plan.

        A store made for a different plan (other scenes, sizes or model) raises unless ``overwrite=True``,
        which deletes it first. Metadata that is missing, corrupt or not the plan's raises an
        :class:`OutputError` naming the file, unless ``repair=True``, which writes it again (data untouched).
        ``model_id`` (a folder or Hub id) and the scenes are recorded without local paths unless
        ``scene_root`` (scene paths relative to it) or ``absolute_paths`` is given. ``weights`` (the model's
        weights' hash) identifies the model wherever its folder lies; a store of an earlier version, made
        without it, still resumes with the model at the path it was made with.
        """
        _zarr()
        store = cls(path)
        p = store.path
        fingerprint = plan_fingerprint(plan, model_id, weights, precision, runtime)
        legacy = plan_fingerprint(plan, model_id, None, precision, runtime)  # stores made before the weights' hash
        facts = store._facts(plan, model_id, revision, scene_root, absolute_paths, weights, precision, runtime)
        if p.exists() and overwrite:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        if p.exists():
            store._reopen(plan, (fingerprint, legacy), facts, extra, repair)
            return store
        parent = p.parent if str(p.parent) else Path(".")
        if not parent.is_dir():
            raise RasterInputError(f"The output folder {parent} does not exist; create it first (mkdir -p {parent}).")
        store.fingerprint = fingerprint
        root_attrs = store._root_attrs(plan, fingerprint, str(uuid.uuid4()), facts, extra)
        tmp = p.with_name(f".{p.name}.new-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            layout.write_layout(tmp, plan, root_attrs, facts)
            (tmp / REGISTRY).mkdir()
            os.rename(tmp, p)  # the store appears whole, or not at all
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return store

    def _facts(
        self, plan: RegionPlan, model_id: str, revision: str, scene_root: Any, absolute: bool, *run: Any
    ) -> dict[str, Any]:
        base = self.path.parent
        facts = {**model_facts(model_id, base, absolute, *run), "geoemb:model_revision": revision}
        facts["geoemb:source_scenes"] = [
            {
                **source_entry(s.spec.source, scene_root, absolute),
                "date": s.spec.date,
                "group": s.group,
                "row": s.row,
                "col": s.col,
            }
            for s in plan.scenes
        ]
        if scene_root is not None and not absolute:
            facts["earth_embed:scene_root"] = relative_href(scene_root, base)
        if absolute:
            facts["earth_embed:absolute_paths"] = True
        return facts

    def _root_attrs(self, plan: RegionPlan, fingerprint: str, run_id: str, facts: dict, extra: dict | None) -> dict:
        keep = {k: v for k, v in facts.items() if k.startswith("earth_embed:")}
        return {
            "earth_embed:plan": fingerprint,
            "earth_embed:store_format": STORE_FORMAT,
            layout.RUN_ID: run_id,
            "earth_embed:sizes": {"chunk": plan.chunk, "shard": plan.shard, "block": plan.block, "halo": plan.halo},
            "earth_embed:groups": sorted(plan.groups),
            **layout.embedding_attrs(plan, facts),
            **keep,
            **(extra or {}),
        }

    def _reopen(
        self, plan: RegionPlan, fingerprints: tuple[str, str], facts: dict, extra: dict | None, repair: bool
    ) -> None:
        """Resume: the same plan (``fingerprints``: by the weights' hash, and by model path as earlier versions
        recorded it), metadata intact (or rewritten with ``repair``)."""
        p = self.path
        fingerprint = fingerprints[0]
        if not p.is_dir() or not ((p / "zarr.json").exists() or (p / REGISTRY / RECIPE).is_file()):
            raise RasterInputError(
                f"{p} exists and is not an earth-embed store; pass overwrite=True (CLI: --overwrite) or choose "
                "another path."
            )
        recipe = self.recipe() or {}
        try:
            attrs = layout.check_layout(p)
            old, run_id = attrs.get("earth_embed:plan"), attrs.get(layout.RUN_ID)
        except OutputError:
            if not repair or recipe.get("plan") not in fingerprints:
                raise
            attrs, old, run_id = {}, recipe.get("plan"), recipe.get("run_id")
        if old is None and not recipe:
            raise RasterInputError(
                f"{p} exists and is not an earth-embed store; pass overwrite=True (CLI: --overwrite) or choose "
                "another path."
            )
        if old not in fingerprints:
            legacy = "" if attrs.get(WEIGHTS_ATTR) or not attrs else (
                " It was made by an earlier earth-embed, which identified the model by its folder's path: give the "
                "model at the path it was made with to resume it."
            )  # fmt: skip
            raise RasterInputError(
                f"{p} was made for a different plan (other scenes, sizes, model weights, precision or runtime); pass "
                f"overwrite=True (CLI: --overwrite) to start over, or choose another path.{legacy}"
            )
        if old != fingerprint:  # an earlier version's store: it keeps what it recorded
            facts = {k: v for k, v in facts.items() if k not in (WEIGHTS_ATTR, PRECISION_ATTR, RUNTIME_ATTR)}
        self.fingerprint = str(old)
        try:
            layout.check_layout(p, plan)
        except OutputError:
            if not repair:
                raise
            root_attrs = self._root_attrs(
                plan, self.fingerprint, str(run_id or recipe.get("run_id") or uuid.uuid4()), facts, extra
            )
            fixed = layout.rewrite_layout(p, plan, root_attrs, facts)
            log.warning("rewrote the metadata of %s: %s", p, ", ".join(fixed))
        layout.refresh_facts(p, facts)

    # -- reading metadata ------------------------------------------------------------------------
    def attrs(self) -> dict[str, Any]:
        """The root group's attributes (an :class:`OutputError` naming the file when it is corrupt)."""
        return dict(layout.read_meta(self.path / "zarr.json", self.path).get("attributes") or {})

    @property
    def run_id(self) -> str | None:
        """The id the store's arrays carry (one per store, kept across resumed runs)."""
        value = self.attrs().get(layout.RUN_ID)
        return str(value) if value else None

    def recipe(self) -> dict[str, Any] | None:
        """The recorded recipe of the run (``_units/run.json``), or None."""
        from .zarr_units import read_entry

        return read_entry(self.path / REGISTRY / RECIPE)

    def write_recipe(self, recipe: dict[str, Any]) -> None:
        """Record how the store was made (for ``earth-embed verify --repair``)."""
        write_json(self.path / REGISTRY / RECIPE, recipe)

    def array(self, group: str, name: str = "embeddings") -> Any:
        """The ``embeddings`` (or ``scales``) zarr array of ``group`` (opened once per process)."""
        if (group, name) not in self._arrays:
            zarr = _zarr()
            self._arrays[group, name] = zarr.open_array(self.path / group / name, mode="r+")
        return self._arrays[group, name]

    # -- the UnitSink interface --------------------------------------------------------------------
    def _entry(self, unit: WorkUnit) -> Path:
        return self.path / REGISTRY / f"{unit.key}.json"  # GROUP/R.C.json, or GROUP@DATE/R.C.json for a layer

    def check_unit(self, unit: WorkUnit, full: bool = False) -> UnitCheck:
        """Whether ``unit``'s files still match its registry entry (``full``: hash every file)."""
        return check_entry(self.path, self._entry(unit), unit.key, full=full)

    def is_done(self, unit: WorkUnit) -> bool:
        """True when ``unit`` was written and its files still match what was written (cheap check: no chunk
        is read unless a file's time changed); a unit that fails is said aloud and computed again."""
        check = self.check_unit(unit)
        if not check.ok and self._entry(unit).exists():
            log.warning("unit %s is computed again: %s", unit.key, check.problem)
        return check.ok

    def write_unit(self, unit: WorkUnit, out: UnitOutput) -> None:
        """Write a whole unit (int8 codes ``(D, unit.height, unit.width)`` and their scales), then register it."""
        data = out.data
        if data.dtype != np.int8 or data.shape[1:] != (unit.height, unit.width) or out.scales is None:
            raise ValueError(
                f"unit {unit.key} needs int8 codes (D, {unit.height}, {unit.width}) and scales, got {data.dtype} {data.shape}"
            )
        entry = self._entry(unit)
        entry.unlink(missing_ok=True)
        keys = unit_keys(unit)
        for key in keys.values():  # an old (maybe damaged) shard must not be read back into this write
            (self.path / key).unlink(missing_ok=True)
        rows, cols = slice(unit.row, unit.row + unit.height), slice(unit.col, unit.col + unit.width)
        codes, scales = unit_arrays(unit)
        # a layer unit writes its date's slice of the time arrays
        at: tuple[int, ...] = () if unit.layer is None else (unit.layer,)
        self.array(unit.group, codes)[at + (slice(None), rows, cols)] = data
        self.array(unit.group, scales)[at + (rows, cols)] = out.scales
        valid = int(np.isfinite(out.scales).sum())  # the rule's nodata: scale NaN (and every code -128)
        files = {name: record_file(self.path, key) for name, key in keys.items()}
        record = {"format": ENTRY_FORMAT, "unit": unit.key, "pixels": unit.pixels, "valid_pixels": valid}
        record.update(observed_pixels=out.observed, masked_pixels=out.masked)  # the cloud/shadow mask's share
        if unit.layer is not None:
            record.update(layer=unit.layer, date=unit.date)
        write_json(entry, {**record, "files": files})

    def mask_counts(self) -> tuple[int, int]:
        """(pixels with a valid input, of those masked as cloud/shadow) over the registered units; the masked
        share is also written to the root attribute ``earth_embed:masked_share``."""
        observed = masked = 0
        for path in sorted((self.path / REGISTRY).glob("*/*.json")):
            record = json.loads(path.read_text())
            observed += int(record.get("observed_pixels", 0))
            masked += int(record.get("masked_pixels", 0))
        root = _zarr().open_group(self.path, mode="r+")
        root.attrs["earth_embed:masked_share"] = round(masked / observed, 6) if observed else 0.0
        return observed, masked

    def done_units(self) -> list[str]:
        """Keys of the registered (finished) units."""
        root = self.path / REGISTRY
        return (
            sorted(f"{p.parent.name}/{p.stem}" for p in root.glob("*/*.json")) if root.is_dir() else []
        )  # with GROUP@DATE

    def consolidate(self) -> None:
        """Write consolidated metadata (``xarray.open_zarr`` then opens the store without a warning)."""
        layout.consolidate(self.path)

    def open_xarray(self, group: str) -> Any:
        """The group as an ``xarray.Dataset`` (int8 codes kept as stored; decode with :func:`quantize.decode`)."""
        import xarray as xr

        return xr.open_zarr(self.path, group=group, consolidated=False, mask_and_scale=False)
