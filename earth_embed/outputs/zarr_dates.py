"""The region store's time axis (``keep="all-dates"``): every acquisition date as its own layer.

Beside the latest-valid-pixel mosaic (``embeddings`` / ``scales``), a group of a store written with
``keep="all-dates"`` holds::

    embeddings_by_date   int8 codes (time, band, y, x): one layer per acquisition date, oldest first
    scales_by_date       float32 (time, y, x): each layer's per-pixel scales
    clear_observations   uint16 (y, x): per pixel, the layers holding an embedding (a clear, valid observation)
    attributes           geoemb:dates (the layers' dates), geoemb:layer_sources (the scene ids of each layer)

A layer is computed as the mosaic is, by the same rule, from that date's scenes only (so each layer keeps its own
cloud/shadow mask: a masked pixel is nodata in its layer): its work units
(``WorkUnit.layer``) write one shard of each time array and are registered as ``_units/GROUP@DATE/R.C.json``
with the same checksums as the mosaic's units, so resume, verify and the engines treat them alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import quantize
from ..tiling.plan import RegionPlan, WorkUnit
from .zarr_units import compressor

CODES_BY_DATE = "embeddings_by_date"
SCALES_BY_DATE = "scales_by_date"
CLEAR_COUNT = "clear_observations"
DATES_ATTR = "geoemb:dates"
SOURCES_ATTR = "geoemb:layer_sources"


def unit_arrays(unit: WorkUnit) -> tuple[str, str]:
    """The (codes, scales) arrays that ``unit`` writes."""
    return ("embeddings", quantize.SCALES_NAME) if unit.layer is None else (CODES_BY_DATE, SCALES_BY_DATE)


def unit_keys(unit: WorkUnit) -> dict[str, str]:
    """Store-relative paths of the two shard files that ``unit`` writes (zarr v3 default keys), by data role."""
    r, c = unit.shard
    if unit.layer is None:
        return {
            "embeddings": f"{unit.group}/embeddings/c/0/{r}/{c}",
            quantize.SCALES_NAME: f"{unit.group}/{quantize.SCALES_NAME}/c/{r}/{c}",
        }
    t = unit.layer
    return {
        "embeddings": f"{unit.group}/{CODES_BY_DATE}/c/{t}/0/{r}/{c}",
        quantize.SCALES_NAME: f"{unit.group}/{SCALES_BY_DATE}/c/{t}/{r}/{c}",
    }


def layer_sources(dates: list[str], sources: list[dict[str, Any]]) -> list[list[str]]:
    """Per layer date, the ids of the group's source scenes (``geoemb:source_scenes`` entries) of that date."""
    return [sorted(str(s.get("id")) for s in sources if s.get("date") == d) for d in dates]


def create_layer_arrays(group: Any, key: str, plan: RegionPlan, run_id: str, sources: list[dict[str, Any]]) -> None:
    """Add the time arrays and their attributes to the new zarr ``group`` (plan group ``key``; ``sources``: its
    ``geoemb:source_scenes`` entries, which name the scenes without local paths)."""
    dates = list(plan.layers.get(key, ()))
    if not dates:
        return
    grid = plan.groups[key]
    d, n = plan.embed_dim, len(dates)
    group.attrs.update({DATES_ATTR: dates, SOURCES_ATTR: layer_sources(dates, sources)})
    common = {
        "grid_mapping": "spatial_ref",
        "coordinates": "spatial_ref",
        DATES_ATTR: dates,
        "earth_embed:run_id": run_id,
    }
    group.create_array(
        CODES_BY_DATE,
        shape=(n, d, grid.height, grid.width),
        dtype="int8",
        chunks=(1, d, plan.chunk, plan.chunk),
        shards=(1, d, plan.shard, plan.shard),
        compressors=compressor(),
        fill_value=quantize.NODATA,
        dimension_names=("time", "band", "y", "x"),
        attributes={
            **common,
            "_FillValue": quantize.NODATA,
            "long_name": "per-pixel embedding of each acquisition date, int8 codes",
            "description": quantize.DESCRIPTION,
            "quantization": quantize.RULE,
        },
    )
    group.create_array(
        SCALES_BY_DATE,
        shape=(n, grid.height, grid.width),
        dtype="float32",
        chunks=(1, plan.chunk, plan.chunk),
        shards=(1, plan.shard, plan.shard),
        compressors=compressor(),
        fill_value=np.nan,
        dimension_names=("time", "y", "x"),
        attributes={**common, "long_name": "per-pixel scale of each date's int8 codes (value = code * scale)"},
    )
    group.create_array(
        CLEAR_COUNT,
        shape=(grid.height, grid.width),
        dtype="uint16",
        chunks=(plan.chunk, plan.chunk),
        shards=(plan.shard, plan.shard),
        compressors=compressor(),
        fill_value=0,
        dimension_names=("y", "x"),
        attributes={
            "grid_mapping": "spatial_ref",
            "coordinates": "spatial_ref",
            "long_name": "number of acquisition layers with a clear (unmasked, valid) embedding at this pixel",
        },
    )
    days = np.array([np.datetime64(x, "D").astype(np.int64) for x in dates], np.int32)
    times = group.create_array(
        "time",
        shape=(n,),
        dtype="int32",
        dimension_names=("time",),
        attributes={"units": "days since 1970-01-01", "calendar": "proleptic_gregorian", "standard_name": "time"},
    )
    times[:] = days


def count_clear_observations(store: Any, plan: RegionPlan) -> None:
    """Write each group's :data:`CLEAR_COUNT` from its layers' scales (finite = an embedding), shard by shard."""
    for key, dates in plan.layers.items():
        if not dates:
            continue
        grid = plan.groups[key]
        scales, counts = store.array(key, SCALES_BY_DATE), store.array(key, CLEAR_COUNT)
        for r in range(0, grid.height, plan.shard):
            for c in range(0, grid.width, plan.shard):
                rows, cols = slice(r, min(r + plan.shard, grid.height)), slice(c, min(c + plan.shard, grid.width))
                counts[rows, cols] = np.isfinite(scales[:, rows, cols]).sum(axis=0).astype(np.uint16)


__all__ = [
    "CLEAR_COUNT",
    "CODES_BY_DATE",
    "DATES_ATTR",
    "SCALES_BY_DATE",
    "SOURCES_ATTR",
    "count_clear_observations",
    "create_layer_arrays",
    "layer_sources",
    "unit_arrays",
    "unit_keys",
]
