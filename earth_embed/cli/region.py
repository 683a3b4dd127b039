"""Region command of ``earth-embed``: embed-region (many scenes, several CRSs, one resumable Zarr store)."""

from __future__ import annotations

import argparse
import functools
import logging
import time

from ..errors import EarthEmbedError
from .common import load_model, model_arg, set_threads

log = logging.getLogger("earth_embed")


def _scene_sources(paths: list[str]) -> list:
    """The scenes named on the command line; a ``.json`` file is a STAC ItemCollection (one scene per Item)."""
    sources: list = []
    for path in paths:
        if str(path).lower().endswith(".json"):
            from ..region.stac import scenes_from_item_collection

            sources.extend(scenes_from_item_collection(path))
        else:
            sources.append(path)
    return sources


def _usable_scenes(paths: list[str], model, on_bad: str, dn_offset: float | None) -> list:
    """SceneSpecs of the scenes that open with the model's bands, each with its DN offset settled as
    ``embed`` settles it (said aloud); bad ones stop the run or are skipped."""
    from ..region.plan import SceneSpec, settle_scene

    specs = []
    for path in _scene_sources(paths):
        spec = SceneSpec.of(path)
        try:
            spec = settle_scene(spec, model, dn_offset)
        except EarthEmbedError as err:
            if on_bad == "stop":
                raise EarthEmbedError(
                    f"bad scene {path}: {err} (pass --on-bad-scene skip to embed the other scenes)"
                ) from err
            log.warning("skipping bad scene %s: %s", path, err)
            continue
        specs.append(spec)
    if not specs:
        raise EarthEmbedError("none of the scenes can be used (see the warnings above); fix or replace them.")
    return specs


def cmd_embed_region(args: argparse.Namespace) -> int:
    from ..region.engine import RunOptions, run_plan
    from ..region.plan import RegionPlan
    from ..region.store import RegionStore

    if args.engine != "ray" and (args.address or args.workers):
        raise EarthEmbedError("--address and --workers apply to the Ray engine; add --engine ray.")
    set_threads(args)
    name = model_arg(args)
    model = load_model("encoder", name, args.revision)
    specs = _usable_scenes(args.scenes, model, args.on_bad_scene, args.dn_offset)
    plan = RegionPlan.from_scenes(specs, model, chunk=args.chunk, shard=args.shard, block=args.block, halo=args.halo)
    store = RegionStore.create(
        args.out, plan, model_id=name, revision=args.revision or "none", overwrite=args.overwrite
    )
    for key, grid in plan.groups.items():
        n = sum(1 for u in plan.units if u.group == key)
        print(f"{key}: {grid.height} x {grid.width} px at {grid.res:g} m, {n} unit(s) of <= {plan.shard} px")
    options = RunOptions(
        output="int8",
        device=args.device,
        batch_size=args.batch_size,
        dn_offset=args.dn_offset,
        on_error=args.on_bad_scene,
        progress=not args.quiet,
        desc="embed-region",
        workers=args.workers,
        address=args.address,
    )
    # Ray actors load the model themselves (once each) instead of receiving this process's copy
    factory = functools.partial(load_model, "encoder", name, args.revision) if args.engine == "ray" else lambda: model
    t0 = time.perf_counter()
    summary = run_plan(plan, factory, store, options, engine=args.engine)
    print(f"{args.out}: {summary} (wall {time.perf_counter() - t0:.1f} s)")
    if args.cog_dir or args.stac_dir:
        from ..region.stac import publish

        tiles, collection = publish(args.out, args.cog_dir, args.stac_dir)
        if args.cog_dir:
            print(f"{args.cog_dir}: {len(tiles)} embedding COG(s) + their scale COG(s), one pair per finished shard")
        if collection:
            print(f"{collection}: STAC Collection (validated), one Item per store group and per COG")
    if summary.failed:
        print("rerun the same command to retry the failed units; finished units are kept")
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``embed-region`` to the ``earth-embed`` parser."""
    from ..region.plan import DEFAULT_CHUNK, DEFAULT_SHARD

    p = sub.add_parser(
        "embed-region",
        help="embed many scenes (several UTM zones) into one resumable Zarr store",
        description="Embed every scene into a Zarr v3 store with one group per CRS (int8 codes + per-pixel "
        "scales, sharded, zstd, CF grid mapping). Overlapping scenes of one CRS: each pixel comes from the "
        "latest scene valid there. Killed runs resume: rerun the same command and only unfinished "
        "units are computed.",
    )
    p.add_argument(
        "scenes",
        nargs="+",
        metavar="SCENE",
        help="scene folders of per-band files, multi-band files, or a STAC ItemCollection (.json) of per-band assets",
    )
    p.add_argument("out", metavar="OUT.zarr", help="output store (created, or resumed when it holds this plan)")
    p.add_argument("--model", "-m", help="encoder folder or Hub id (default: the released encoder)")
    p.add_argument("--revision", help="Hub branch, tag or commit of the model")
    p.add_argument(
        "--engine",
        default="local",
        choices=["local", "ray"],
        help='where units run: in-process (default) or on Ray (pip install "earth-embed[ray]")',
    )
    p.add_argument("--workers", type=int, help="ray: model actors (default 1; one per GPU is typical)")
    p.add_argument("--address", help="ray: join this cluster (ray://HOST:10001 or auto) instead of a local Ray")
    p.add_argument("--cog-dir", help="also export every finished shard as Cloud-Optimized GeoTIFFs into this folder")
    p.add_argument("--stac-dir", help="also write a validated STAC Collection of the outputs into this folder")
    p.add_argument(
        "--on-bad-scene",
        default="stop",
        choices=["stop", "skip"],
        help="a scene that cannot be used: stop the run (default) or report it and embed the others",
    )
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help=f"store chunk in px (default {DEFAULT_CHUNK})")
    p.add_argument(
        "--shard", type=int, default=DEFAULT_SHARD, help=f"store shard = work unit in px (default {DEFAULT_SHARD})"
    )
    p.add_argument("--block", type=int, help="model window core in px (default 1024; 2048 on a large GPU)")
    p.add_argument("--halo", type=int, help="context read around each block in px (default 48, model-aligned)")
    p.add_argument("--batch-size", type=int, default=1, help="windows per forward pass (default 1)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument(
        "--dn-offset",
        type=float,
        help="DN offset for every scene (default: what each product says of itself, e.g. -1000 for baseline >= 04.00, else the model's)",
    )
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="delete OUT.zarr first and start over (without it a store of another plan is refused)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_embed_region)
