"""Stream one Sentinel-2 scene through a model into a georeferenced GeoTIFF.

The single-scene case of the chunk plan (:mod:`earth_embed.tiling.plan`): the scene is the plan's
only group, a work unit is one compute block (``tile - overlap`` px, read with ``overlap / 2`` px
of halo and trimmed back), and the local engine (:mod:`earth_embed.tiling.engine_local`: reader
thread, model, writer thread) hands each finished unit to a :class:`~.writer.GeoTiffWriter`.
Memory is bounded by a few windows, not by the scene size.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import rasterio
import torch

from .. import quantize
from ..errors import BandError, RasterInputError
from ..hub import weights_sha256
from ..inputs.masks import DEFAULT_MASK, MaskSpec
from ..inputs.spec import SceneSpec, settle_scene
from ..outputs.classmap import class_map_style
from ..outputs.embeddings import RUN_TAG
from ..outputs.geotiff import (
    OUTPUT_DTYPES,
    GeoTiffWriter,
    band_names,
    check_geotiff_name,
    check_output_path,
    scales_path,
)
from ..outputs.provenance import WEIGHTS_TAG
from ..precision import DEFAULT_PRECISION, resolve_precision
from ..runtime import DEFAULT_RUNTIME, resolve_runtime
from ..tiling.engine import GDAL_CACHE_MB, RunOptions, pick_device, run_plan
from ..tiling.plan import RegionPlan, WorkUnit
from ..tiling.unit import UnitOutput
from ..tiling.windows import block_and_halo, check_tiling, default_tiling
from ..version import __version__

#: Output tags of the cloud/shadow mask: its source, and the share of valid input pixels it hid (filled at the end).
MASK_TAG, MASKED_SHARE_TAG = "MASK", "MASKED_SHARE"
log = logging.getLogger("earth_embed")


def model_identity(model: Any) -> tuple[str, str]:
    """(model id, revision) for output tags: attributes set by the loader, else the config name."""
    name = getattr(model, "name_or_path", None) or getattr(model.config, "name", "") or "unsaved model (random init)"
    revision = getattr(model, "revision", None) or "none"
    return str(name), str(revision)


class _GeoTiffSink:
    """The engine's sink for one scene: every unit goes to the writer (int8: codes, and scales to a
    second writer); nothing is ever 'done' before."""

    def __init__(self, writer: GeoTiffWriter, scales: GeoTiffWriter | None = None) -> None:
        self.writer = writer
        self.scales = scales
        self.observed = 0  # pixels with a valid input
        self.masked = 0  # of those, hidden by the cloud/shadow mask

    def is_done(self, unit: WorkUnit) -> bool:
        return False

    def write_unit(self, unit: WorkUnit, out: UnitOutput) -> None:
        self.writer.write(unit.row, unit.col, out.data)
        if self.scales is not None and out.scales is not None:
            self.scales.write(unit.row, unit.col, out.scales[None])
        self.observed += out.observed
        self.masked += out.masked

    def finish_mask_tags(self, source: str) -> None:
        """Fill the masked-share tag of the outputs and say the share aloud; a scene that only the mask empties
        is still written (all nodata), since that is the honest answer."""
        share = self.masked / self.observed if self.observed else 0.0
        for w in (self.writer, self.scales):
            if w is not None:
                w.set_late_tag(MASKED_SHARE_TAG, f"{share:.6f}")
                w.require_valid = w.require_valid and not (0 < self.observed == self.masked)
        if source == "none":
            return
        text = f"{share:.1%} of the valid input pixels are cloud or shadow ({source} mask): nodata in the output"
        if share >= 0.5:
            log.warning("the output is mostly nodata: %s", text)
        elif self.masked:
            log.info(text)


def _source(src: Any) -> str | tuple[str, ...]:
    if isinstance(src, (str, os.PathLike)):
        return os.path.abspath(os.fspath(src))
    return tuple(os.path.abspath(os.fspath(p)) for p in src)


def _plan(model: Any, src: Any, dst: Any, tile, overlap, batch_size, device, bands, overwrite, dn_offset, mask):
    """Common checks (cheap ones first), the scene's DN offset and mask source settled, then the single-scene plan."""
    check_geotiff_name(check_output_path(dst, overwrite))
    dev = pick_device(device)
    m = int(model.pad_multiple)
    default_tile, default_overlap = default_tiling(m)
    tile = default_tile if tile is None else tile
    overlap = default_overlap if overlap is None else overlap
    check_tiling(tile, overlap, m)
    batch_size = (4 if dev.type == "cuda" else 1) if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise RasterInputError(f"batch_size={batch_size} must be >= 1.")
    block, halo = block_and_halo(tile, overlap)
    if isinstance(bands, str):
        raise BandError(f"bands={bands!r} is one string; pass a list of band names, e.g. bands=[{bands!r}, ...].")
    spec = replace(SceneSpec.of(_source(src)), mask=mask)
    spec = settle_scene(replace(spec, bands=tuple(bands)) if bands else spec, model, dn_offset)
    dn_offset = spec.dn_offset
    chunk = next((b for b in (256, 512, 128, 64, 32, 16) if block % b == 0 and b % m == 0), block)
    plan = RegionPlan.from_scenes([spec], model, chunk=chunk, shard=block, block=block, halo=halo)
    return plan, dev, batch_size, (tile, overlap), dn_offset


def _mask_source(plan: RegionPlan) -> str:
    mask = plan.scenes[0].spec.mask
    return "none" if mask is None else mask.describe()


def _writer_threads(device: torch.device) -> int:
    """Compression threads: all cores when a GPU computes, else one (the CPU cores run the model)."""
    return (os.cpu_count() or 1) if device.type == "cuda" else 1


def _base_tags(model, plan: RegionPlan, tiling, dn_offset, model_id, revision, bands) -> dict[str, str]:
    name, rev = model_identity(model)
    norm = model.config.normalization
    source = plan.scenes[0].spec.source
    extra = {"INPUT_OPEN_BANDS": json.dumps(list(bands))} if bands else {}  # how to reopen the input
    return {
        **extra,
        "EARTH_EMBED_VERSION": __version__,
        "MODEL": model_id or name,
        "MODEL_REVISION": revision or rev,
        "MODEL_ARCHITECTURE": model.config.architecture,
        WEIGHTS_TAG: weights_sha256(model),
        "INPUT": source if isinstance(source, str) else json.dumps(list(source)),
        "INPUT_BANDS": ",".join(model.bands),
        "DN_OFFSET": str(norm.dn_offset if dn_offset is None else dn_offset),
        "TILE": str(tiling[0]),
        "OVERLAP": str(tiling[1]),
        "HALO": str(plan.halo),
        "CREATED": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        MASK_TAG: _mask_source(plan),
    }


def _write(
    model,
    plan: RegionPlan,
    dev,
    batch_size,
    dn_offset,
    progress,
    output: str,
    desc: str,
    precision: str,
    runtime: str,
    **writer_args,
):
    """Run the plan on the local engine into a GeoTiffWriter (int8: plus one for the scales); return the path."""
    grid = next(iter(plan.groups.values()))
    dst = writer_args.pop("dst")
    geo: dict[str, Any] = dict(
        height=grid.height, width=grid.width, crs=grid.crs, transform=grid.transform, blocksize=plan.chunk
    )
    late = (MASKED_SHARE_TAG,)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        writer = GeoTiffWriter(dst, threads=_writer_threads(dev), late_tags=late, **geo, **writer_args)
        scales = None
        with writer:
            if output == "int8":  # the codes' per-pixel scales, one float32 band, committed before the codes
                tags = {k: v for k, v in writer_args["tags"].items() if k not in ("KIND", "OUTPUT_DTYPE")}
                scales = GeoTiffWriter(
                    scales_path(dst),
                    count=1,
                    dtype="float32",
                    descriptions=["scale"],
                    tags={**tags, "KIND": "embedding-scales"},
                    overwrite=writer_args.get("overwrite", False),
                    overviews=writer_args.get("overviews", False),
                    late_tags=late,
                    **geo,
                )
            options = RunOptions(
                output=output,
                device=str(dev),
                batch_size=batch_size,
                dn_offset=dn_offset,
                progress=progress,
                desc=desc,
                precision=precision,
                runtime=runtime,
            )
            sink = _GeoTiffSink(writer, scales)
            if scales is None:
                run_plan(plan, lambda: model, sink, options)
                sink.finish_mask_tags(_mask_source(plan))
            else:
                with scales:
                    run_plan(plan, lambda: model, sink, options)
                    sink.finish_mask_tags(_mask_source(plan))
    return writer.path


def embed_raster(
    model: Any,
    src: str | os.PathLike | Sequence[str | os.PathLike],
    dst: str | os.PathLike,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    dtype: str = "int8",
    progress: bool = True,
    bands: Sequence[str] | None = None,
    dn_offset: float | None = None,
    precision: str = DEFAULT_PRECISION,
    runtime: str = DEFAULT_RUNTIME,
    compress: str = "zstd",
    overwrite: bool = False,
    overviews: bool = False,
    model_id: str | None = None,
    revision: str | None = None,
    mask: Any = DEFAULT_MASK,
    mask_buffer: int = 0,
) -> Path:
    """Write per-pixel embeddings of a Sentinel-2 scene as a GeoTIFF with ``model.embed_dim`` bands.

    ``src``: multi-band GeoTIFF, folder or list of per-band files (see :func:`open_scene`;
    ``bands`` names/picks the input's bands). The output has the input's CRS and transform (finest
    band's grid), bands ``emb_00...``, NaN (int8: -128) where the input is nodata.
    ``tile`` (window) / ``overlap`` (between neighbouring windows) default to a 1024 px block plus a
    48 px halo on each side (stride 16/32 backbones: 1120/96); ``batch_size`` to 1 on CPU, 4 on CUDA;
    ``device`` to CUDA when available. ``dtype``: int8 (default, as ``earth-embed embed``: the fixed
    per-pixel-scale rule of :mod:`earth_embed.quantize`: int8 codes here, their float32
    scales in ``NAME.scales.tif`` beside it, tag ``EMBEDDING_SCALES_FILE``), float16 or float32. ``dn_offset``
    overrides the model's DN offset (-1000 for processing baseline >= 04.00). ``precision``: the forward's
    precision, auto | fp32 | bf16 | fp16 (:mod:`earth_embed.precision`; tag ``PRECISION``); ``runtime``: what runs
    it, auto | torch | onnx | onnx-int8 (:mod:`earth_embed.runtime`; tag ``RUNTIME``). The file is a tiled,
    compressed Cloud-Optimized GeoTIFF (directory first, then blocks); ``overviews=True`` adds
    internal overviews through one more pass with GDAL's COG driver. Written under a temporary
    name, renamed on success. ``mask``: the cloud/shadow mask (:mod:`earth_embed.inputs.masks`): ``"auto"``
    (the product's SCL, else ukis-csmask when installed, else none with a note), ``"scl"``, ``"ukis-csmask"``, a
    mask raster path (0 = clear) or ``"none"``; ``mask_buffer`` grows it by that many pixels. Masked pixels are
    nodata; tags ``MASK`` (the source used) and ``MASKED_SHARE`` (share of valid input pixels masked).
    """
    if dtype not in OUTPUT_DTYPES or dtype == "uint8":
        raise RasterInputError(f"dtype={dtype!r} is not supported; use float16, float32 or int8.")
    plan, dev, batch_size, tiling, dn_offset = _plan(
        model, src, dst, tile, overlap, batch_size, device, bands, overwrite, dn_offset, MaskSpec.of(mask, mask_buffer)
    )
    used = resolve_precision(precision, dev)  # a request the device cannot honour warns or stops here
    engine = resolve_runtime(runtime, dev, used)
    tags = _base_tags(model, plan, tiling, dn_offset, model_id, revision, bands)
    tags.update(PRECISION=used, RUNTIME=engine)
    tags.update(KIND="embeddings", EMBED_DIM=str(model.embed_dim), OUTPUT_DTYPE=dtype)
    if dtype == "int8":  # the codes and their scales file carry one run id, checked when they are read
        tags.update(quantize.metadata(), EMBEDDING_SCALES_FILE=scales_path(dst).name, **{RUN_TAG: str(uuid.uuid4())})
    output = dtype
    return _write(
        model,
        plan,
        dev,
        batch_size,
        dn_offset,
        progress,
        output,
        "embedding",
        used,
        engine,
        dst=dst,
        count=model.embed_dim,
        dtype=dtype,
        descriptions=band_names(model.embed_dim),
        tags=tags,
        compress=compress,
        overwrite=overwrite,
        overviews=overviews,
    )


def classify_raster(
    segmenter: Any,
    src: str | os.PathLike | Sequence[str | os.PathLike],
    dst: str | os.PathLike,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    bands: Sequence[str] | None = None,
    dn_offset: float | None = None,
    precision: str = DEFAULT_PRECISION,
    runtime: str = DEFAULT_RUNTIME,
    compress: str = "deflate",
    overwrite: bool = False,
    overviews: bool = False,
    model_id: str | None = None,
    revision: str | None = None,
    mask: Any = DEFAULT_MASK,
    mask_buffer: int = 0,
) -> Path:
    """Write a land-cover map (uint8 GeoTIFF with a colour table) from an :class:`EarthSegmenter`.

    Class ``i`` of ``segmenter.classes`` is written as ``i + 1``; 0 is nodata (like the labelled
    sets' ``labels.tif``). Class names are in the tags ``CLASS_NAMES`` (JSON) and ``CLASS_<value>``.
    Each pixel's class is the arg-max of the logits of the window whose block holds it. Other
    arguments as :func:`embed_raster`.
    """
    classes = list(getattr(segmenter, "classes", []) or [])
    if not classes:
        raise RasterInputError(
            "classify_raster needs an EarthSegmenter (a model with classes); for an encoder use embed_raster."
        )
    style_tags, colormap = class_map_style(classes, segmenter.class_colors or None)
    plan, dev, batch_size, tiling, dn_offset = _plan(
        segmenter,
        src,
        dst,
        tile,
        overlap,
        batch_size,
        device,
        bands,
        overwrite,
        dn_offset,
        MaskSpec.of(mask, mask_buffer),
    )
    used = resolve_precision(precision, dev)
    engine = resolve_runtime(runtime, dev, used)
    tags = _base_tags(segmenter, plan, tiling, dn_offset, model_id, revision, bands)
    tags.update(style_tags, PRECISION=used, RUNTIME=engine)
    return _write(
        segmenter,
        plan,
        dev,
        batch_size,
        dn_offset,
        progress,
        "classes",
        "classifying",
        used,
        engine,
        dst=dst,
        count=1,
        dtype="uint8",
        descriptions=["class"],
        tags=tags,
        colormap=colormap,
        compress=compress,
        overwrite=overwrite,
        overviews=overviews,
    )
