"""Embed many scenes (several CRSs) into one resumable Zarr store: the region run behind ``embed-region``.

:func:`embed_region`, in this order: takes the store's one-writer lock (a second run is refused at once);
with the Ray engine, joins or starts Ray and checks its workers (:func:`~earth_embed.tiling.ray_connect.ray_session`:
a wrong address fails in seconds, before the store is touched); settles every scene's input as ``embed``
does (:func:`~earth_embed.inputs.spec.settle_scene`); plans the region (:class:`~earth_embed.tiling.plan.RegionPlan`);
creates or reopens the store (:class:`~earth_embed.outputs.zarr_store.RegionStore`: units whose files no longer
match their registry are computed again); records the run's recipe (for ``verify --repair``); runs the plan;
writes consolidated metadata; refuses a region without one valid pixel; exports COGs and STAC when asked.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rasterio.crs import CRS

from ..errors import EarthEmbedError, OutputError, RasterInputError
from ..hub import weights_sha256
from ..inputs.masks import DEFAULT_MASK, MaskSpec
from ..inputs.scene import S2_SATURATED
from ..inputs.spec import SceneSpec, settle_scene
from ..inputs.stac_items import scenes_from_item_collection
from ..precision import DEFAULT_PRECISION
from ..released import load_model
from ..runtime import DEFAULT_RUNTIME
from ..tiling.engine import RunOptions, RunSummary, run_plan
from ..tiling.plan import DEFAULT_CHUNK, DEFAULT_SHARD, RegionPlan, pixel_size

log = logging.getLogger("earth_embed")

#: The run's keyword arguments a store's recipe records (``_units/run.json``), for ``verify --repair``.
RECIPE_KEYS = (
    "revision",
    "chunk",
    "shard",
    "block",
    "halo",
    "batch_size",
    "dn_offset",
    "on_bad_scene",
    "absolute_paths",
    "precision",
    "runtime",
    "mask",
    "mask_buffer",
)

SceneLike = str | os.PathLike | Sequence[str | os.PathLike] | SceneSpec


@dataclass
class RegionRun:
    """What :func:`embed_region` did: the engine's summary, the store, its groups and what was published."""

    summary: RunSummary
    store: Path
    groups: list[str]
    cogs: list[Any] = field(default_factory=list)  # CogTile per exported shard
    catalog: Path | None = None  # the STAC Collection file
    observed_pixels: int = 0  # pixels of the store's units with a valid input (all runs, mosaic and layers)
    masked_pixels: int = 0  # of those, hidden by the cloud/shadow masks (nodata)

    @property
    def failed(self) -> list[tuple[str, str]]:
        return self.summary.failed

    @property
    def masked_share(self) -> float:
        return self.masked_pixels / self.observed_pixels if self.observed_pixels else 0.0

    def __str__(self) -> str:
        return f"{self.summary}; {self.masked_share:.1%} of the valid input pixels masked as cloud/shadow"


def scene_sources(scenes: Sequence[SceneLike]) -> list[Any]:
    """The scenes as given; a ``.json`` path is a STAC ItemCollection (one scene per Item)."""
    sources: list[Any] = []
    for scene in scenes:
        if isinstance(scene, (str, os.PathLike)) and os.fspath(scene).lower().endswith(".json"):
            sources.extend(scenes_from_item_collection(scene))
        else:
            sources.append(scene)
    return sources


def usable_scenes(
    scenes: Sequence[SceneLike], model: Any, on_bad: str, dn_offset: float | None, mask: MaskSpec | None = None
) -> list[SceneSpec]:
    """SceneSpecs of the scenes that open with the model's bands, each with its DN offset and mask source (``mask``
    for scenes without their own) settled as ``embed`` settles them (said aloud); a bad one stops the run
    (``on_bad="stop"``) or is skipped."""
    specs = []
    for src in scene_sources(scenes):
        spec = SceneSpec.of(src)
        if spec.mask is None:
            spec = replace(spec, mask=mask)
        try:
            spec = settle_scene(spec, model, dn_offset)
        except EarthEmbedError as err:
            if on_bad == "stop":
                raise EarthEmbedError(
                    f"bad scene {spec.name}: {err} (pass on_bad_scene='skip' / --on-bad-scene skip to embed the "
                    "other scenes)"
                ) from err
            log.warning("skipping bad scene %s: %s", spec.name, err)
            continue
        specs.append(spec)
    if not specs:
        raise EarthEmbedError("none of the scenes can be used (see the warnings above); fix or replace them.")
    return specs


def embed_region(
    scenes: Sequence[SceneLike],
    store: str | os.PathLike,
    model: Any = None,
    *,
    revision: str | None = None,
    engine: str = "local",
    workers: int | None = None,
    address: str | None = None,
    ray_timeout: float | None = None,
    ray_env: dict | None = None,
    cog_dir: str | os.PathLike | None = None,
    stac_dir: str | os.PathLike | None = None,
    on_bad_scene: str = "stop",
    chunk: int = DEFAULT_CHUNK,
    shard: int = DEFAULT_SHARD,
    block: int | None = None,
    halo: int | None = None,
    batch_size: int = 1,
    device: str | None = None,
    precision: str = DEFAULT_PRECISION,
    runtime: str = DEFAULT_RUNTIME,
    dn_offset: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
    scene_root: str | os.PathLike | None = None,
    absolute_paths: bool = False,
    keep: str = "latest",
    mask: Any = DEFAULT_MASK,
    mask_buffer: int = 0,
) -> RegionRun:
    """Embed ``scenes`` (folders, files, band-file lists, SceneSpecs or STAC ItemCollection ``.json`` files)
    into the Zarr v3 store ``store`` (one group per CRS, int8 codes + per-pixel scales); resume it when it
    holds this plan. ``model``: an encoder, a folder or Hub id, or None for the released encoder.
    ``engine``: "local" (in-process) or "ray" (``workers`` actors; ``address`` joins a cluster, checked within
    ``ray_timeout`` s; ``ray_env``: the Ray runtime_env of the tasks). ``cog_dir`` / ``stac_dir``: also export
    the finished shards as COGs / write a STAC catalogue. ``precision``: the forward's precision (auto, fp32,
    bf16, fp16; :mod:`earth_embed.precision`); ``runtime``: what runs it (auto, torch, onnx, onnx-int8;
    :mod:`earth_embed.runtime`). Both are recorded in the store's recipe. The outputs name scenes by id and the model by Hub
    id or folder name; ``scene_root`` records scene paths relative to it, ``absolute_paths`` absolute paths.
    ``keep="all-dates"`` also keeps every acquisition date as a layer of each group's time axis
    (``embeddings_by_date``; :mod:`~earth_embed.outputs.zarr_dates`), beside the latest-clear-pixel mosaic, and
    per pixel the number of clear observations (``clear_observations``). ``mask`` / ``mask_buffer``: each scene's
    cloud/shadow mask as in :func:`~earth_embed.pipeline.scene.embed_raster`; a masked pixel never overwrites a
    clear one of an earlier scene, and is nodata in its own layer.
    One run at a time may write a store. Returns a :class:`RegionRun` (``run.failed`` lists units that failed;
    rerun the same call to retry them); a region without one valid pixel raises."""
    from ..outputs.zarr_cleanup import store_lock

    mask = MaskSpec.of(mask, mask_buffer).source  # checked before anything is opened; a plain string for the recipe
    if engine != "ray" and (address or workers or ray_env):
        raise EarthEmbedError("address, workers and ray_env apply to the Ray engine; pass engine='ray' (--engine ray).")
    parent = Path(store).parent if str(Path(store).parent) else Path(".")
    if not parent.is_dir():
        raise RasterInputError(f"The output folder {parent} does not exist; create it first (mkdir -p {parent}).")
    with store_lock(store, clean=False):
        return _embed_locked(**{k: v for k, v in locals().items() if k not in ("store_lock", "parent")})


def _embed_locked(
    scenes: Sequence[SceneLike], store: str | os.PathLike, model: Any, *, repair: bool = False, **kw: Any
) -> RegionRun:
    """:func:`embed_region` holding the store's lock (``repair``: rewrite damaged metadata, see ``verify_store``)."""
    from ..outputs.zarr_cleanup import remove_leftovers
    from ..outputs.zarr_dates import count_clear_observations
    from ..outputs.zarr_store import RegionStore

    engine = kw["engine"]
    session: Any = contextlib.nullcontext()
    if engine == "ray":
        from ..tiling.ray_connect import ray_session

        session = ray_session(kw["address"], kw["ray_timeout"], kw["ray_env"])
    with session:  # Ray is up and its workers can run earth-embed before anything is written
        remove_leftovers(Path(store))
        name = model if isinstance(model, (str, os.PathLike)) else None
        encoder = load_model(model, "encoder", kw["revision"])
        model_id = _model_id(encoder) if name is None else _local_or_hub(os.fspath(name))
        mask = MaskSpec.of(kw["mask"], kw["mask_buffer"])
        specs = usable_scenes(scenes, encoder, kw["on_bad_scene"], kw["dn_offset"], mask)
        plan = RegionPlan.from_scenes(
            specs, encoder, chunk=kw["chunk"], shard=kw["shard"], block=kw["block"], halo=kw["halo"], keep=kw["keep"]
        )
        fresh = kw["overwrite"] or not Path(store).exists()
        precision = _recorded_precision(kw["precision"], kw["device"], engine)
        runtime = _recorded_runtime(kw["runtime"], kw["device"], engine, precision)
        sink = RegionStore.create(
            store,
            plan,
            model_id=model_id,
            revision=kw["revision"] or "none",
            overwrite=kw["overwrite"],
            scene_root=kw["scene_root"],
            absolute_paths=kw["absolute_paths"],
            repair=repair,
            weights=weights_sha256(encoder),
            precision=precision,
            runtime=runtime,
        )
        sink.write_recipe(_recipe(sink, plan, scenes, model, model_id, kw))
        for key, grid in plan.groups.items():
            n = sum(1 for u in plan.units if u.group == key and u.layer is None)
            size = pixel_size(grid.transform, CRS.from_user_input(grid.crs))
            log.info("%s: %d x %d px of %s, %d unit(s) of <= %d px", key, grid.height, grid.width, size, n, kw["shard"])
            if plan.layers.get(key):
                log.info(
                    "%s: also %d acquisition layer(s): %s", key, len(plan.layers[key]), ", ".join(plan.layers[key])
                )
        options = RunOptions(
            output="int8",
            device=kw["device"],
            batch_size=kw["batch_size"],
            dn_offset=kw["dn_offset"],
            precision=kw["precision"],
            runtime=kw["runtime"],
            on_error=kw["on_bad_scene"],
            progress=kw["progress"],
            desc="embed-region",
            workers=kw["workers"],
            address=kw["address"],
            runtime_env=kw["ray_env"],
            timeout=kw["ray_timeout"],
        )
        # Ray actors load a named model themselves (once each) instead of receiving this process's copy
        if engine == "ray" and name is not None:
            factory: Any = functools.partial(load_model, name, "encoder", kw["revision"])
        else:
            factory = functools.partial(_same, encoder)
        try:
            summary = run_plan(plan, factory, sink, options, engine=engine)
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise
            raise OutputError(
                f"Writing {store} failed: {err.strerror} ({err.filename or 'a shard'}). The disk is full or a "
                f"file-size limit (ulimit -f) was reached ({_free(Path(store).parent)}). The units finished so far "
                "are kept: free some space or raise the limit, then run the same command again to compute the rest."
            ) from err
    count_clear_observations(sink, plan)
    counts = sink.mask_counts()
    sink.consolidate()
    run = RegionRun(summary, Path(store), sorted(plan.groups))
    run.observed_pixels, run.masked_pixels = counts
    if run.masked_pixels:
        log.info("%.1f%% of the valid input pixels are cloud or shadow: nodata there", 100 * run.masked_share)
    _refuse_empty(sink, plan, run, fresh)
    if kw["cog_dir"] is not None or kw["stac_dir"] is not None:
        from ..outputs.stac import publish

        run.cogs, run.catalog = publish(store, kw["cog_dir"], kw["stac_dir"])
    return run


def _refuse_empty(sink: Any, plan: RegionPlan, run: RegionRun, fresh: bool) -> None:
    """Raise when every unit is done and not one pixel holds an embedding (as ``embed`` refuses it)."""
    if run.failed:
        return
    checks = [sink.check_unit(u) for u in plan.units]
    if not all(c.ok for c in checks) or any(c.valid_pixels for c in checks):
        return
    if fresh:
        shutil.rmtree(sink.path, ignore_errors=True)
    what = "it was removed" if fresh else "it is left as it was"
    raise RasterInputError(
        f"Nothing valid to write: every pixel of every scene is nodata (0), NaN or saturated (at or above "
        f"{S2_SATURATED:.0f}) in at least one of the bands the model uses, so {sink.path} would hold no embedding at "
        f"all ({what}). Check the scenes: all-zero or all-NaN band files, band files of different scenes, the wrong "
        "bands, or values scaled beyond Sentinel-2's digital numbers."
    )


def _recipe(sink: Any, plan: RegionPlan, scenes: Sequence[SceneLike], given: Any, model_id: str, kw: dict) -> dict:
    """How to make the store again (``_units/run.json``): paths relative to the store's folder."""
    from ..outputs.provenance import is_local_model, relative_href

    base = sink.path.parent

    def rel(p: Any) -> Any:
        return relative_href(p, base) if isinstance(p, str) else [relative_href(q, base) for q in p]

    specs = []
    for src in scene_sources(scenes):
        spec = SceneSpec.of(src)
        entry: dict[str, Any] = {"source": rel(spec.source), "bands": list(spec.bands) if spec.bands else None}
        entry.update(date=None if spec.date_from else spec.date, dn_offset=spec.dn_offset)  # a found date: found again
        if spec.name != SceneSpec.of(spec.source).name:  # a name given by the caller
            entry["name"] = spec.name
        specs.append(entry)
    if given is None:
        model: Any = None  # the released encoder
    elif isinstance(given, (str, os.PathLike)):
        name = os.fspath(given)
        model = {"path": rel(name)} if is_local_model(name) else {"hub": name}
    else:
        model = {"object": model_id}  # a model object: a repair needs it passed again
    import torch

    from ..tiling.engine import pick_device

    return {
        "plan": sink.fingerprint,
        # the same device and thread count give the same floats (a repaired unit equals its neighbours' run)
        "device": str(pick_device(kw["device"])),
        "threads": torch.get_num_threads(),
        "run_id": sink.run_id,
        "units": [u.key for u in plan.units],
        "scenes": specs,
        "model": model,
        "scene_root": rel(os.fspath(kw["scene_root"])) if kw["scene_root"] is not None else None,
        **{k: kw[k] for k in RECIPE_KEYS},
        **({"keep": kw["keep"]} if kw["keep"] != "latest" else {}),
    }


def _recorded_precision(requested: str, device: str | None, engine: str) -> str:
    """The precision the run computes in (``auto`` resolved for this machine's device; a Ray run's ``auto``
    is each worker's choice and is recorded as asked)."""
    from ..precision import check_precision, resolve_precision
    from ..tiling.engine import pick_device

    if engine == "ray" and check_precision(requested) == "auto":
        return "auto"
    return resolve_precision(requested, pick_device(device))


def _recorded_runtime(requested: str, device: str | None, engine: str, precision: str) -> str:
    """The runtime the run computes with (``auto`` resolved for this machine; a Ray run's ``auto`` as asked)."""
    from ..runtime import resolve_runtime
    from ..tiling.engine import pick_device

    if engine == "ray" and requested == "auto":
        return "auto"
    return resolve_runtime(requested, pick_device(device), "fp32" if precision == "auto" else precision)


def _local_or_hub(name: str) -> str:
    """A model's identity in the plan's fingerprint: a local folder's absolute path, or the Hub id."""
    from ..outputs.provenance import is_local_model

    return os.path.abspath(name) if is_local_model(name) else name


def _free(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 1e6:,.0f} MB free in {folder} now"
    except OSError:
        return "free space unknown"


def _same(model: Any) -> Any:
    return model


def _model_id(model: Any) -> str:
    return str(getattr(model, "name_or_path", None) or getattr(model.config, "name", "") or "unsaved model")
