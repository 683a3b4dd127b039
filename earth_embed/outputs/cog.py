"""Export a region store to Cloud-Optimized GeoTIFFs, one per shard, that any GIS and TorchGeo read.

For every finished shard of every CRS group of ``OUT.zarr`` (see :mod:`earth_embed.outputs.zarr_store`),
:func:`export_cogs` writes two COGs with GDAL's COG driver:

- ``emb_<group>_r<row>_c<col>.tif``: the int8 codes, one band per embedding dimension (descriptions
  ``emb_00`` ...), nodata ``-128``;
- ``scales_<group>_r<row>_c<col>.tif``: the float32 per-pixel scale of the int8 rule, nodata NaN
  (value = code * scale, :mod:`earth_embed.quantize`).

Both are north-up on the group's grid (its CRS and transform), tiled 256 px, ZSTD-compressed, with
internal overviews (nearest neighbour, so a code and its scale always come from the same pixel) and
tags naming the quantisation rule, the model and the source scenes. The shard is copied strip by
strip into a temporary tiled GeoTIFF and then into the COG, so memory stays at one strip whatever the
shard size; a COG appears under its final name only when complete.
"""

from __future__ import annotations

import json
import os
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.transform import Affine
from rasterio.windows import Window

from .. import quantize
from ..errors import RasterInputError
from ..version import __version__
from .embeddings import RUN_TAG
from .geotiff import band_names
from .provenance import PRECISION_COG_TAG, RUNTIME_COG_TAG, WEIGHTS_COG_TAG, relative_href
from .zarr_groups import GroupInfo, StoreLinks, finished_shards, group_info, store_groups, store_links

COG_OPTIONS = {
    "COMPRESS": "ZSTD",
    "BLOCKSIZE": 256,
    "OVERVIEWS": "AUTO",
    "OVERVIEW_RESAMPLING": "NEAREST",
    "BIGTIFF": "IF_SAFER",
}


@dataclass(frozen=True)
class CogTile:
    """One exported shard: its code and scale COGs, store group and shard index."""

    path: Path
    scales_path: Path
    group: str
    shard: tuple[int, int]


def _link_tags(links: StoreLinks, out_dir: Path) -> dict[str, str]:
    """The model folder and source scenes, relative to the COG folder (absolute only when the store's user asked)."""

    def href(p: Path | None) -> str | None:
        return None if p is None else (p.as_posix() if links.absolute else relative_href(p, out_dir))

    tags = {"EMBEDDING_SOURCE_PATHS": json.dumps([href(p) for p in links.sources])}
    if links.model_path is not None:
        tags["EMBEDDING_MODEL_PATH"] = str(href(links.model_path))
    if links.absolute:
        tags["EMBEDDING_ABSOLUTE_PATHS"] = "yes"
    return tags


def _tags(info: GroupInfo, shard: tuple[int, int]) -> dict[str, str]:
    run = f"{info.run_id or uuid.uuid4()}/{info.name}/{shard[0]}.{shard[1]}"  # the pair's one identity
    return {
        RUN_TAG: run,
        **quantize.metadata(),
        "EMBEDDING_MODEL": info.model,
        "EMBEDDING_MODEL_REVISION": info.revision or "none",
        **({WEIGHTS_COG_TAG: info.weights} if info.weights else {}),
        **({PRECISION_COG_TAG: info.precision} if info.precision else {}),
        **({RUNTIME_COG_TAG: info.runtime} if info.runtime else {}),
        "EMBEDDING_SOURCES": json.dumps(info.sources),
        "EMBEDDING_SOURCE_DATES": json.dumps(info.dates),
        "EMBEDDING_STORE_GROUP": info.name,
        "EMBEDDING_STORE_SHARD": f"{shard[0]}.{shard[1]}",
        "EMBEDDING_SCALES_FILE": f"scales_{info.name}_r{shard[0]:03d}_c{shard[1]:03d}.tif",
        "SOFTWARE": f"earth-embed {__version__}",
    }


def _write_cog(
    dst: Path,
    profile: dict[str, Any],
    strips: Any,
    tags: dict[str, str],
    descriptions: Sequence[str],
) -> None:
    """Strips ``(row0, data)`` -> a temporary tiled GeoTIFF -> the COG ``dst`` (renamed into place)."""
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp_tif = dst.with_name(f".{dst.stem}.{token}.src.tif")
    tmp_cog = dst.with_name(f".{dst.stem}.{token}.cog.tif")
    try:
        with rasterio.open(tmp_tif, "w", driver="GTiff", tiled=True, blockxsize=256, blockysize=256, **profile) as ds:
            for row0, data in strips:
                ds.write(data, window=Window(0, row0, data.shape[-1], data.shape[-2]))
            ds.update_tags(**tags)
            for i, name in enumerate(descriptions, start=1):
                ds.set_band_description(i, name)
        rasterio.shutil.copy(tmp_tif, tmp_cog, driver="COG", **COG_OPTIONS)
        os.replace(tmp_cog, dst)
    finally:
        for p in (tmp_tif, tmp_cog):
            p.unlink(missing_ok=True)


def export_shard(store: str | os.PathLike, info: GroupInfo, shard: tuple[int, int], out_dir: Path) -> CogTile | None:
    """Write the code and scale COGs of one shard; None when the shard holds no valid pixel."""
    import zarr

    g = zarr.open_group(Path(store) / info.name, mode="r")
    codes_arr: Any = g["embeddings"]
    if quantize.SCALES_NAME not in g:
        raise RasterInputError(
            f"group {info.name} of {store} has no '{quantize.SCALES_NAME}' array, so its int8 codes cannot be "
            "decoded; re-embed the region with this version of earth-embed."
        )
    scales_arr: Any = g[quantize.SCALES_NAME]
    r0, c0 = shard[0] * info.shard, shard[1] * info.shard
    h, w = min(info.shard, info.shape[0] - r0), min(info.shard, info.shape[1] - c0)
    if h <= 0 or w <= 0:
        raise RasterInputError(f"shard {shard} lies outside group {info.name} ({info.shape[0]} x {info.shape[1]} px)")
    step = info.chunk
    if not any(
        quantize.valid_mask(codes_arr[:, r0 + r : r0 + min(h, r + step), c0 : c0 + w]).any() for r in range(0, h, step)
    ):
        return None
    transform = info.transform @ Affine.translation(c0, r0)
    base = {"height": h, "width": w, "crs": info.crs, "transform": transform}
    tags = {**_tags(info, shard), **_link_tags(store_links(store, info), out_dir)}
    tile = CogTile(
        path=out_dir / f"emb_{info.name}_r{shard[0]:03d}_c{shard[1]:03d}.tif",
        scales_path=out_dir / tags["EMBEDDING_SCALES_FILE"],
        group=info.name,
        shard=shard,
    )

    def strips(arr: Any, three_d: bool) -> Any:
        for r in range(0, h, step):
            rows = slice(r0 + r, r0 + min(h, r + step))
            data = arr[:, rows, c0 : c0 + w] if three_d else arr[rows, c0 : c0 + w][None]
            yield r, np.asarray(data)

    _write_cog(
        tile.scales_path,
        {**base, "count": 1, "dtype": "float32", "nodata": float("nan")},
        strips(scales_arr, False),
        {k: v for k, v in tags.items() if k != "EMBEDDING_SCALES_FILE"},
        [quantize.SCALES_NAME],
    )
    _write_cog(
        tile.path,
        {**base, "count": info.dimensions, "dtype": "int8", "nodata": quantize.NODATA},
        strips(codes_arr, True),
        tags,
        band_names(info.dimensions),
    )
    return tile


def export_cogs(
    store: str | os.PathLike, out_dir: str | os.PathLike, groups: Sequence[str] | None = None
) -> list[CogTile]:
    """Export every finished shard of ``groups`` (default: all) of a region store as COGs under ``out_dir``.

    Existing COGs of the same name are replaced. Shards without a valid pixel are not written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tiles = []
    for name in groups or store_groups(store):
        info = group_info(store, name)
        for shard in finished_shards(store, info):
            tile = export_shard(store, info, shard, out)
            if tile is not None:
                tiles.append(tile)
    return tiles


def read_cog_tags(path: str | os.PathLike) -> dict[str, Any]:
    """Grid and tags of an exported COG (for the STAC catalogue)."""
    with rasterio.open(path) as ds:
        return {
            "crs": ds.crs,
            "transform": ds.transform,
            "shape": (ds.height, ds.width),
            "count": ds.count,
            "dtype": ds.dtypes[0],
            "tags": ds.tags(),
        }
