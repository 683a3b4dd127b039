"""The region store's metadata: its groups and arrays as zarr v3 writes them, their checks and their repair.

:func:`write_layout` creates the hierarchy (root attributes, one group per CRS with its ``embeddings`` and
``scales`` arrays, coordinates and CF grid mapping). :func:`check_layout` reads every metadata file of a
store and raises an :class:`~earth_embed.errors.OutputError` naming the first file that cannot be read or
does not match the plan, and the fix. :func:`rewrite_layout` writes the metadata (and the small coordinate
arrays) again, in place, leaving every shard of data untouched: the repair of corrupt metadata.
:func:`consolidate` adds zarr's consolidated metadata, so ``xarray.open_zarr`` opens the store without
its fallback warning.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .. import quantize
from ..errors import OutputError
from ..tiling.plan import RegionPlan
from .provenance import PRECISION_ATTR, RUNTIME_ATTR, WEIGHTS_ATTR
from .zarr_dates import create_layer_arrays
from .zarr_units import compressor

#: What a group records of the run that wrote it, beside the ``geoemb:`` attributes.
RUN_FACTS = (WEIGHTS_ATTR, PRECISION_ATTR, RUNTIME_ATTR)

RUN_ID = "earth_embed:run_id"
COORDINATES = ("x", "y", "band", "spatial_ref")
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


def fix_hint(store: Path) -> str:
    return (
        f"Run `earth-embed verify {store} --repair` to write it again from the run's recorded plan (finished units "
        "are kept), or pass --overwrite to start over."
    )


def read_meta(path: Path, store: Path) -> dict[str, Any]:
    """The parsed ``zarr.json`` at ``path``, or an :class:`OutputError` naming it and the fix."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OutputError(f"{path} is missing: the store's metadata is incomplete. {fix_hint(store)}") from None
    except (OSError, ValueError) as err:
        raise OutputError(f"{path} is corrupt ({err}): the store's metadata cannot be read. {fix_hint(store)}") from err
    if not isinstance(meta, dict) or meta.get("zarr_format") != 3:
        raise OutputError(f"{path} is not zarr v3 metadata: the store's metadata is corrupt. {fix_hint(store)}")
    return meta


def _expect(cond: bool, path: Path, store: Path, what: str) -> None:
    if not cond:
        raise OutputError(f"{path} does not match the store's plan ({what}). {fix_hint(store)}")


def check_layout(store: Path, plan: RegionPlan | None = None) -> dict[str, Any]:
    """Read every metadata file of ``store``; raise for the first one that is missing, corrupt or (with
    ``plan``) does not match it. Returns the root attributes."""
    root = read_meta(store / "zarr.json", store)
    _expect(root.get("node_type") == "group", store / "zarr.json", store, "not a group")
    attrs = dict(root.get("attributes") or {})
    groups = attrs.get("earth_embed:groups") or []
    sizes = attrs.get("earth_embed:sizes") or {}
    if plan is not None:
        _expect(sorted(plan.groups) == sorted(groups), store / "zarr.json", store, "its CRS groups")
    run_id = attrs.get(RUN_ID)
    for group in groups:
        g = read_meta(store / group / "zarr.json", store)
        _expect(g.get("node_type") == "group", store / group / "zarr.json", store, "not a group")
        shape = (g.get("attributes") or {}).get("spatial:shape")
        if plan is not None:
            grid = plan.groups[group]
            shape = [grid.height, grid.width]
        for name in ("embeddings", quantize.SCALES_NAME, *COORDINATES):
            path = store / group / name / "zarr.json"
            meta = read_meta(path, store)
            _expect(meta.get("node_type") == "array", path, store, "not an array")
            if name not in ("embeddings", quantize.SCALES_NAME):
                continue
            theirs = (meta.get("attributes") or {}).get(RUN_ID)
            if run_id and theirs != run_id:
                raise OutputError(
                    f"{path} carries the run id {theirs or '(none)'}, the store {run_id}: the array comes from another "
                    f"store, so its codes and scales do not belong together. {fix_hint(store)}"
                )
            want_dtype = "int8" if name == "embeddings" else "float32"
            _expect(meta.get("data_type") == want_dtype, path, store, f"data type {meta.get('data_type')}")
            got = list(meta.get("shape") or [])
            if shape:
                _expect(got[-2:] == list(shape), path, store, f"shape {got}")
            enc = meta.get("chunk_key_encoding") or {}
            _expect(
                enc.get("name") == "default" and (enc.get("configuration") or {}).get("separator", "/") == "/",
                path,
                store,
                "chunk key encoding",
            )
            shard = (meta.get("chunk_grid") or {}).get("configuration", {}).get("chunk_shape", [])
            if sizes:
                _expect(list(shard[-2:]) == [sizes.get("shard")] * 2, path, store, f"shard shape {shard}")
    return attrs


def embedding_attrs(plan: RegionPlan, facts: dict[str, Any]) -> dict[str, Any]:
    """The ``geoemb:`` attributes (``facts``: model label, revision, software, source scenes...)."""
    from ..version import __version__

    return {
        "geoemb:type": "pixel",
        "geoemb:model": facts.get("geoemb:model", "unknown"),
        "geoemb:model_revision": facts.get("geoemb:model_revision", "none"),
        "geoemb:dimensions": plan.embed_dim,
        "geoemb:data_type": "int8",
        "geoemb:quantization": quantize.geoemb_quantization(),
        "geoemb:nodata": quantize.NODATA,
        "geoemb:input_bands": list(plan.bands),
        "geoemb:software": f"earth-embed {__version__}",
        "geoemb:source_scenes": facts.get("geoemb:source_scenes", []),
        **{k: facts[k] for k in RUN_FACTS if k in facts},
    }


def write_layout(path: Path, plan: RegionPlan, root_attrs: dict[str, Any], facts: dict[str, Any]) -> None:
    """Create the store's hierarchy at ``path`` (which must not exist)."""
    import zarr

    root = zarr.open_group(path, mode="w", zarr_format=3)
    root.attrs.update(root_attrs)
    for key, grid in plan.groups.items():
        sources = [s for s in facts.get("geoemb:source_scenes", []) if s.get("group") == key]
        _create_group(root, key, grid, plan, {**facts, "geoemb:source_scenes": sources}, root_attrs[RUN_ID])


def rewrite_layout(path: Path, plan: RegionPlan, root_attrs: dict[str, Any], facts: dict[str, Any]) -> list[str]:
    """Write every metadata file (and the coordinate arrays) of the store at ``path`` again; data shards are
    not touched. Returns the store-relative files that were replaced because they differed or were missing."""
    skeleton = path.with_name(f".{path.name}.layout-{os.getpid()}-{secrets.token_hex(4)}")  # see zarr_store
    replaced = []
    try:
        write_layout(skeleton, plan, root_attrs, facts)
        for folder, _dirs, names in os.walk(skeleton):
            for name in names:
                src = Path(folder) / name
                rel = src.relative_to(skeleton)
                dst = path / rel
                if dst.is_file() and dst.read_bytes() == src.read_bytes():
                    continue
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
                replaced.append(rel.as_posix())
    finally:
        shutil.rmtree(skeleton, ignore_errors=True)
    return sorted(replaced)


#: Attributes that say where the inputs are: they follow the latest run's options (scene root, absolute paths).
LINK_FACTS = ("earth_embed:model_path", "earth_embed:scene_root", "earth_embed:absolute_paths")


def refresh_facts(path: Path, facts: dict[str, Any]) -> bool:
    """Bring the recorded model and source-scene facts of the store at ``path`` up to ``facts`` (a resumed run
    with other path options); returns True when something changed."""
    import zarr

    root: Any = zarr.open_group(path, mode="r+", use_consolidated=False)
    changed = False
    want = {k: facts[k] for k in ("geoemb:model", "geoemb:source_scenes", *LINK_FACTS) if k in facts}
    for key in LINK_FACTS:
        if key in root.attrs and key not in want:
            del root.attrs[key]
            changed = True
    if any(root.attrs.get(k) != v for k, v in want.items()):
        root.attrs.update(want)
        changed = True
    for name in root.attrs.get("earth_embed:groups", []):
        group = root[name]
        sources = [s for s in facts.get("geoemb:source_scenes", []) if s.get("group") == name]
        if group.attrs.get("geoemb:source_scenes") != sources:
            group.attrs["geoemb:source_scenes"] = sources
            changed = True
    return changed


def consolidate(path: Path) -> None:
    """Write zarr's consolidated metadata into the root ``zarr.json`` (zarr warns that v3 has no such spec yet)."""
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(path)


def _create_group(root: Any, key: str, grid: Any, plan: RegionPlan, facts: dict[str, Any], run_id: str) -> None:
    from pyproj import CRS

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
            **embedding_attrs(plan, facts),
        }
    )
    d = plan.embed_dim
    group.create_array(
        "embeddings",
        shape=(d, grid.height, grid.width),
        dtype="int8",
        chunks=(d, plan.chunk, plan.chunk),
        shards=(d, plan.shard, plan.shard),
        compressors=compressor(),
        fill_value=quantize.NODATA,
        dimension_names=("band", "y", "x"),
        attributes={
            "grid_mapping": "spatial_ref",
            "_FillValue": quantize.NODATA,
            "coordinates": "spatial_ref",
            "long_name": "per-pixel embedding, int8 codes",
            "description": quantize.DESCRIPTION,
            "quantization": quantize.RULE,
            RUN_ID: run_id,
        },
    )
    group.create_array(
        quantize.SCALES_NAME,
        shape=(grid.height, grid.width),
        dtype="float32",
        chunks=(plan.chunk, plan.chunk),
        shards=(plan.shard, plan.shard),
        compressors=compressor(),
        fill_value=np.nan,
        dimension_names=("y", "x"),
        attributes={
            "grid_mapping": "spatial_ref",
            "coordinates": "spatial_ref",
            "long_name": "per-pixel scale of the int8 codes (value = code * scale)",
            RUN_ID: run_id,
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
    create_layer_arrays(group, key, plan, run_id, list(facts.get("geoemb:source_scenes", [])))


__all__ = [
    "LINK_FACTS",
    "RUN_ID",
    "check_layout",
    "consolidate",
    "embedding_attrs",
    "read_meta",
    "refresh_facts",
    "rewrite_layout",
    "write_layout",
]
