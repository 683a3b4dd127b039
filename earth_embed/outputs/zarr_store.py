"""The region store: a Zarr v3 hierarchy, one group per CRS, int8 embeddings written unit by unit.

Layout of ``OUT.zarr``::

    zarr.json                   root group: the run's plan fingerprint, model, quantisation, scenes
    EPSG_32618/                 one group per CRS (the plan's group key)
        embeddings              int8 codes (band, y, x): all bands in each chunk, sharded, zstd, -128 nodata
        scales                  float32 (y, x): each pixel's scale (value = code * scale), NaN nodata
        x, y                    pixel-centre coordinates (CRS units), band (0..D-1)
        spatial_ref             CF grid mapping (crs_wkt, GeoTransform): xarray/rioxarray georeference
    _units/EPSG_32618/3.4.json  registry of finished units, written after the unit's data

Group attributes follow the draft Zarr conventions ``proj:`` (geo-proj) and ``spatial:`` and a
``geoemb:`` namespace for the embedding (model, revision, bands, quantisation, software, sources).

Writes are whole units (one shard each, clipped at the grid edge), so no two writers ever touch
one shard. zarr's local store writes each shard under a temporary name and renames it; the unit's
registry entry is written (also by rename) only after its data, so a unit killed half-way is
neither visible as done nor half-visible under its key, and a rerun computes exactly the units
without an entry. The store is picklable (workers reopen it by path).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .. import quantize
from ..errors import RasterInputError
from ..tiling.plan import RegionPlan, WorkUnit
from ..tiling.unit import UnitOutput
from ..version import __version__

_REGISTRY = "_units"
_CONVENTIONS = [
    {
        "schema_url": "https://raw.githubusercontent.com/zarr-conventions/geo-proj/refs/tags/v1/schema.json",
        "spec_url": "https://github.com/zarr-conventions/geo-proj/blob/v1/README.md",
        "uuid": "f17cb550-5864-4468-aeb7-f3180cfb622f",
        "name": "proj:",
        "description": "Coordinate reference system information for geospatial data",
    },
    {
        "schema_url": "https://raw.githubusercontent.com/zarr-conventions/spatial/refs/tags/v1/schema.json",
        "spec_url": "https://github.com/zarr-conventions/spatial/blob/v1/README.md",
        "uuid": "689b58e2-cf7b-45e0-9fff-9cfc0883d6b4",
        "name": "spatial:",
        "description": "Spatial coordinate information",
    },
]


def _zarr():
    try:
        import zarr
    except ImportError as err:  # pragma: no cover - zarr is a core dependency of the region engine
        raise RasterInputError('The region store needs zarr >= 3; pip install "earth-embed[region]".') from err
    return zarr


def _write_json(path: Path, obj: Any) -> None:
    """Write JSON under a temporary name, then rename: readers see all of it or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    tmp.write_text(json.dumps(obj, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def plan_fingerprint(plan: RegionPlan, model_id: str) -> str:
    """A short hash of what decides the store's content: grids, chunking, halo, scenes, model."""
    facts = {
        "groups": {k: [g.crs, list(g.transform)[:6], g.height, g.width] for k, g in plan.groups.items()},
        "sizes": [plan.chunk, plan.shard, plan.block, plan.halo],
        "scenes": [[s.spec.name, s.group, s.row, s.col] for s in plan.scenes],
        "model": [model_id, plan.embed_dim, list(plan.bands)],
        "quantization": quantize.RULE,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


class RegionStore:
    """An embedding store at ``path`` (a ``.zarr`` folder). Build it with :meth:`create`."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._arrays: dict[tuple[str, str], Any] = {}

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
    ) -> RegionStore:
        """Create the store for ``plan``, or reopen it to resume when it was made for the same plan.

        A store made for a different plan (other scenes, sizes or model) raises unless
        ``overwrite=True``, which deletes it first.
        """
        zarr = _zarr()
        store = cls(path)
        p = store.path
        fingerprint = plan_fingerprint(plan, model_id)
        if p.exists():
            old = store.attrs().get("earth_embed:plan") if (p / "zarr.json").is_file() else None
            if old == fingerprint and not overwrite:
                return store  # resume
            if not overwrite:
                why = "was made for a different plan" if old else "is not an earth-embed store"
                raise RasterInputError(
                    f"{p} exists and {why}; pass overwrite=True (CLI: --overwrite) or choose another path."
                )
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        parent = p.parent if str(p.parent) else Path(".")
        if not parent.is_dir():
            raise RasterInputError(f"The output folder {parent} does not exist; create it first (mkdir -p {parent}).")
        root = zarr.open_group(p, mode="w", zarr_format=3)
        sources = [
            {"name": s.spec.name, "date": s.spec.date, "group": s.group, "row": s.row, "col": s.col}
            for s in plan.scenes
        ]
        root.attrs.update(
            {
                "earth_embed:plan": fingerprint,
                "earth_embed:sizes": {"chunk": plan.chunk, "shard": plan.shard, "block": plan.block, "halo": plan.halo},
                "earth_embed:groups": sorted(plan.groups),
                **_embedding_attrs(plan, model_id, revision, sources),
                **(extra or {}),
            }
        )
        for key, grid in plan.groups.items():
            _create_group(root, key, grid, plan, model_id, revision, [s for s in sources if s["group"] == key])
        return store

    # -- reading metadata ------------------------------------------------------------------------
    def attrs(self) -> dict[str, Any]:
        """The root group's attributes."""
        meta = json.loads((self.path / "zarr.json").read_text(encoding="utf-8"))
        return dict(meta.get("attributes", {}))

    def array(self, group: str, name: str = "embeddings") -> Any:
        """The ``embeddings`` (or ``scales``) zarr array of ``group`` (opened once per process)."""
        if (group, name) not in self._arrays:
            zarr = _zarr()
            self._arrays[group, name] = zarr.open_array(self.path / group / name, mode="r+")
        return self._arrays[group, name]

    # -- the UnitSink interface --------------------------------------------------------------------
    def _entry(self, unit: WorkUnit) -> Path:
        return self.path / _REGISTRY / unit.group / f"{unit.shard[0]}.{unit.shard[1]}.json"

    def is_done(self, unit: WorkUnit) -> bool:
        """True when ``unit``'s data and registry entry were written."""
        return self._entry(unit).is_file()

    def write_unit(self, unit: WorkUnit, out: UnitOutput) -> None:
        """Write a whole unit (int8 codes ``(D, unit.height, unit.width)`` and their scales), then register it."""
        data = out.data
        if data.dtype != np.int8 or data.shape[1:] != (unit.height, unit.width) or out.scales is None:
            raise ValueError(
                f"unit {unit.key} needs int8 codes (D, {unit.height}, {unit.width}) and scales, got {data.dtype} {data.shape}"
            )
        rows, cols = slice(unit.row, unit.row + unit.height), slice(unit.col, unit.col + unit.width)
        self.array(unit.group)[:, rows, cols] = data
        self.array(unit.group, quantize.SCALES_NAME)[rows, cols] = out.scales
        valid = int(quantize.valid_mask(data).sum())
        _write_json(self._entry(unit), {"unit": unit.key, "pixels": unit.pixels, "valid_pixels": valid})

    def done_units(self) -> list[str]:
        """Keys of the registered (finished) units."""
        root = self.path / _REGISTRY
        return sorted(f"{p.parent.name}/{p.stem}" for p in root.glob("*/*.json")) if root.is_dir() else []

    def open_xarray(self, group: str) -> Any:
        """The group as an ``xarray.Dataset`` (int8 codes kept as stored; decode with :func:`quantize.decode`)."""
        import xarray as xr

        return xr.open_zarr(self.path, group=group, consolidated=False, mask_and_scale=False)


def _embedding_attrs(plan: RegionPlan, model_id: str, revision: str, sources: list) -> dict[str, Any]:
    return {
        "geoemb:type": "pixel",
        "geoemb:model": model_id,
        "geoemb:model_revision": revision,
        "geoemb:dimensions": plan.embed_dim,
        "geoemb:data_type": "int8",
        "geoemb:quantization": quantize.geoemb_quantization(),
        "geoemb:nodata": quantize.NODATA,
        "geoemb:input_bands": list(plan.bands),
        "geoemb:software": f"earth-embed {__version__}",
        "geoemb:source_scenes": sources,
    }


def _create_group(root, key: str, grid, plan: RegionPlan, model_id: str, revision: str, sources: list) -> None:
    from pyproj import CRS
    from zarr.codecs import ZstdCodec

    crs = CRS.from_user_input(grid.crs)
    t = grid.transform
    gdal_transform = f"{t.c} {t.a} {t.b} {t.f} {t.d} {t.e}"
    group = root.create_group(key)
    group.attrs.update(
        {
            "zarr_conventions": _CONVENTIONS,
            "proj:code": grid.crs,
            "proj:wkt2": crs.to_wkt(),
            "spatial:dimensions": ["y", "x"],
            "spatial:transform": [t.a, t.b, t.c, t.d, t.e, t.f],
            "spatial:shape": [grid.height, grid.width],
            "spatial:bbox": [t.c, t.f + t.e * grid.height, t.c + t.a * grid.width, t.f],
            "spatial:registration": "pixel",
            **_embedding_attrs(plan, model_id, revision, sources),
        }
    )
    d = plan.embed_dim
    emb = group.create_array(
        "embeddings",
        shape=(d, grid.height, grid.width),
        dtype="int8",
        chunks=(d, plan.chunk, plan.chunk),
        shards=(d, plan.shard, plan.shard),
        compressors=ZstdCodec(level=3),
        fill_value=quantize.NODATA,
        dimension_names=("band", "y", "x"),
        attributes={
            "grid_mapping": "spatial_ref",
            "_FillValue": quantize.NODATA,
            "coordinates": "spatial_ref",
            "long_name": "per-pixel embedding, int8 codes",
            "description": quantize.DESCRIPTION,
            "quantization": quantize.RULE,
        },
    )
    del emb
    group.create_array(
        quantize.SCALES_NAME,
        shape=(grid.height, grid.width),
        dtype="float32",
        chunks=(plan.chunk, plan.chunk),
        shards=(plan.shard, plan.shard),
        compressors=ZstdCodec(level=3),
        fill_value=np.nan,
        dimension_names=("y", "x"),
        attributes={
            "grid_mapping": "spatial_ref",
            "coordinates": "spatial_ref",
            "long_name": "per-pixel scale of the int8 codes (value = code * scale)",
        },
    )
    x = t.c + t.a * (np.arange(grid.width) + 0.5)
    y = t.f + t.e * (np.arange(grid.height) + 0.5)
    for name, values in (("x", x), ("y", y), ("band", np.arange(d, dtype=np.int32))):
        arr = group.create_array(name, shape=values.shape, dtype=values.dtype, dimension_names=(name,))
        arr[:] = values
    cf = crs.to_cf()
    ref = group.create_array(
        "spatial_ref",
        shape=(),
        dtype="int32",
        dimension_names=(),
        attributes={**cf, "spatial_ref": crs.to_wkt(), "GeoTransform": gdal_transform},
    )
    ref[()] = 0
