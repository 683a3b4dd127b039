"""Embed many scenes (several CRSs) into one resumable Zarr store: the region run behind ``embed-region``.

:func:`embed_region` settles every scene's input as ``embed`` does (:func:`~earth_embed.inputs.spec.settle_scene`),
plans the region (:class:`~earth_embed.tiling.plan.RegionPlan`), creates or reopens the store
(:class:`~earth_embed.outputs.zarr_store.RegionStore`), runs the plan on an engine and, when asked,
exports COGs and a STAC catalogue.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rasterio.crs import CRS

from ..errors import EarthEmbedError
from ..inputs.spec import SceneSpec, settle_scene
from ..inputs.stac_items import scenes_from_item_collection
from ..released import load_model
from ..tiling.engine import RunOptions, RunSummary, run_plan
from ..tiling.plan import DEFAULT_CHUNK, DEFAULT_SHARD, RegionPlan, pixel_size

log = logging.getLogger("earth_embed")

SceneLike = str | os.PathLike | Sequence[str | os.PathLike] | SceneSpec


@dataclass
class RegionRun:
    """What :func:`embed_region` did: the engine's summary, the store, its groups and what was published."""

    summary: RunSummary
    store: Path
    groups: list[str]
    cogs: list[Any] = field(default_factory=list)  # CogTile per exported shard
    catalog: Path | None = None  # the STAC Collection file

    @property
    def failed(self) -> list[tuple[str, str]]:
        return self.summary.failed

    def __str__(self) -> str:
        return str(self.summary)


def scene_sources(scenes: Sequence[SceneLike]) -> list[Any]:
    """The scenes as given; a ``.json`` path is a STAC ItemCollection (one scene per Item)."""
    sources: list[Any] = []
    for scene in scenes:
        if isinstance(scene, (str, os.PathLike)) and os.fspath(scene).lower().endswith(".json"):
            sources.extend(scenes_from_item_collection(scene))
        else:
            sources.append(scene)
    return sources


def usable_scenes(scenes: Sequence[SceneLike], model: Any, on_bad: str, dn_offset: float | None) -> list[SceneSpec]:
    """SceneSpecs of the scenes that open with the model's bands, each with its DN offset settled as
    ``embed`` settles it (said aloud); a bad one stops the run (``on_bad="stop"``) or is skipped."""
    specs = []
    for src in scene_sources(scenes):
        spec = SceneSpec.of(src)
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
    cog_dir: str | os.PathLike | None = None,
    stac_dir: str | os.PathLike | None = None,
    on_bad_scene: str = "stop",
    chunk: int = DEFAULT_CHUNK,
    shard: int = DEFAULT_SHARD,
    block: int | None = None,
    halo: int | None = None,
    batch_size: int = 1,
    device: str | None = None,
    dn_offset: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> RegionRun:
    """Embed ``scenes`` (folders, files, band-file lists, SceneSpecs or STAC ItemCollection ``.json`` files)
    into the Zarr v3 store ``store`` (one group per CRS, int8 codes + per-pixel scales); resume it when it
    holds this plan. ``model``: an encoder, a folder or Hub id, or None for the released encoder.
    ``engine``: "local" (in-process) or "ray" (``workers`` actors; ``address`` joins a cluster).
    ``cog_dir`` / ``stac_dir``: also export the finished shards as COGs / write a STAC catalogue.
    Returns a :class:`RegionRun` (``run.failed`` lists units that failed; rerun the same call to retry them)."""
    from ..outputs.zarr_store import RegionStore

    if engine != "ray" and (address or workers):
        raise EarthEmbedError("address and workers apply to the Ray engine; pass engine='ray' (--engine ray).")
    name = model if isinstance(model, (str, os.PathLike)) else None
    encoder = load_model(model, "encoder", revision)
    model_id = os.fspath(name) if name is not None else _model_id(encoder)
    specs = usable_scenes(scenes, encoder, on_bad_scene, dn_offset)
    plan = RegionPlan.from_scenes(specs, encoder, chunk=chunk, shard=shard, block=block, halo=halo)
    sink = RegionStore.create(store, plan, model_id=model_id, revision=revision or "none", overwrite=overwrite)
    for key, grid in plan.groups.items():
        n = sum(1 for u in plan.units if u.group == key)
        size = pixel_size(grid.transform, CRS.from_user_input(grid.crs))
        log.info("%s: %d x %d px of %s, %d unit(s) of <= %d px", key, grid.height, grid.width, size, n, shard)
    options = RunOptions(
        output="int8",
        device=device,
        batch_size=batch_size,
        dn_offset=dn_offset,
        on_error=on_bad_scene,
        progress=progress,
        desc="embed-region",
        workers=workers,
        address=address,
    )
    # Ray actors load a named model themselves (once each) instead of receiving this process's copy
    if engine == "ray" and name is not None:
        factory: Any = functools.partial(load_model, name, "encoder", revision)
    else:
        factory = functools.partial(_same, encoder)
    run = RegionRun(run_plan(plan, factory, sink, options, engine=engine), Path(store), sorted(plan.groups))
    if cog_dir is not None or stac_dir is not None:
        from ..outputs.stac import publish

        run.cogs, run.catalog = publish(store, cog_dir, stac_dir)
    return run


def _same(model: Any) -> Any:
    return model


def _model_id(model: Any) -> str:
    return str(getattr(model, "name_or_path", None) or getattr(model.config, "name", "") or "unsaved model")
