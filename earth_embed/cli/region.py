"""Region commands of ``earth-embed``: embed-region (many scenes, several CRSs, one resumable Zarr store) and
verify (a full check of a store or an embedding GeoTIFF; ``--repair`` recomputes what fails)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..errors import EarthEmbedError
from .common import add_mask_options, add_precision_option, model_arg, set_threads


def _ray_env(text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        env = json.loads(text)
    except ValueError as err:
        raise EarthEmbedError(
            f'--ray-env is not JSON ({err}); e.g. --ray-env \'{{"pip": ["earth-embed[ray]"]}}\'.'
        ) from err
    if not isinstance(env, dict):
        raise EarthEmbedError(
            '--ray-env must be a JSON object (a Ray runtime_env), e.g. \'{"pip": ["earth-embed[ray]"]}\'.'
        )
    return env


def interrupted_region(args: argparse.Namespace) -> str:
    """What Ctrl-C on embed-region leaves: the finished units, resumed by a rerun."""
    return (
        f"the units finished so far are kept in {args.out}; rerun the same command to resume (only the "
        "unfinished units are computed; --overwrite would start over and discard them)"
    )


def cmd_embed_region(args: argparse.Namespace) -> int:
    from ..api import embed_region

    set_threads(args)
    t0 = time.perf_counter()
    run = embed_region(
        args.scenes,
        args.out,
        model_arg(args),
        revision=args.revision,
        engine=args.engine,
        workers=args.workers,
        address=args.address,
        ray_timeout=args.ray_timeout,
        ray_env=_ray_env(args.ray_env),
        scene_root=args.scene_root,
        absolute_paths=args.absolute_paths,
        cog_dir=args.cog_dir,
        stac_dir=args.stac_dir,
        on_bad_scene=args.on_bad_scene,
        chunk=args.chunk,
        shard=args.shard,
        block=args.block,
        halo=args.halo,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        runtime=args.runtime,
        dn_offset=args.dn_offset,
        overwrite=args.overwrite,
        progress=not args.quiet,
        keep=args.keep,
        mask=args.mask,
        mask_buffer=args.mask_buffer,
    )
    print(f"{args.out}: {run} (wall {time.perf_counter() - t0:.1f} s)")
    if args.cog_dir:
        print(f"{args.cog_dir}: {len(run.cogs)} embedding COG(s) + their scale COG(s), one pair per finished shard")
    if run.catalog:
        print(f"{run.catalog}: STAC Collection (validated), one Item per store group and per COG")
    if run.failed:
        print("rerun the same command to retry the failed units; finished units are kept")
        return 1
    return 0


def cmd_composite(args: argparse.Namespace) -> int:
    from ..api import composite
    from ..pipeline.composite import observations_path

    t0 = time.perf_counter()
    out = composite(
        args.store, args.out, start=args.start, end=args.end, rule=args.rule, group=args.group, overwrite=args.overwrite
    )
    print(
        f"wrote {out} ({args.rule} of the clear observations, int8 + scales) and {observations_path(out).name} "
        f"(clear-observation count, spread) in {time.perf_counter() - t0:.1f} s"
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ..api import verify_store
    from ..pipeline.repair import verify_embeddings

    path = Path(args.path)
    if path.is_file():
        if args.repair:
            raise EarthEmbedError(f"--repair applies to region stores; {path} is a file: embed the scene again.")
        print(verify_embeddings(path))
        return 0
    report = verify_store(path, repair=args.repair, model=args.model, device=args.device, progress=not args.quiet)
    print(report)
    if report.ok:
        return 0
    if not args.repair:
        print(f"run `earth-embed verify {path} --repair` to repair it (intact units are kept, damaged ones recomputed)")
    return 1


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``embed-region`` to the ``earth-embed`` parser."""
    from ..tiling.plan import DEFAULT_CHUNK, DEFAULT_SHARD  # light: rasterio's affine only

    p = sub.add_parser(
        "embed-region",
        help="embed many scenes (several UTM zones) into one resumable Zarr store",
        description="Embed every scene into a Zarr v3 store with one group per CRS (int8 codes + per-pixel "
        "scales, sharded, Blosc-zstd with a CRC-32C per chunk, CF grid mapping). Overlapping scenes of one CRS: each pixel comes from the "
        "latest scene valid and clear (not masked as cloud or shadow) there. Killed runs resume: rerun the same command and only unfinished "
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
    p.add_argument(
        "--address",
        help="ray: join this cluster from one of its nodes (auto, or HEAD:6379) instead of a local Ray; for a "
        "remote cluster submit the command as a Ray Job (Ray Client ray://... cannot run Ray Data)",
    )
    p.add_argument(
        "--ray-timeout",
        type=float,
        help="ray: seconds to reach and check the cluster before anything is written (default 10, "
        "or $EARTH_EMBED_RAY_TIMEOUT)",
    )
    p.add_argument(
        "--ray-env", metavar="JSON", help='ray: runtime_env of the tasks, e.g. \'{"pip": ["earth-embed[ray]"]}\''
    )
    p.add_argument(
        "--scene-root",
        help="record the scenes' paths relative to this folder in the store and the STAC Items (default: scene ids only)",
    )
    p.add_argument(
        "--absolute-paths",
        action="store_true",
        help="record absolute local paths of the scenes and the model (default: ids and relative paths)",
    )
    p.add_argument(
        "--keep",
        default="latest",
        choices=["latest", "all-dates"],
        help="latest: the latest-valid-pixel mosaic only (default); all-dates: also every acquisition date as a layer "
        "of a time axis (embeddings_by_date; read one with open_embeddings(..., time=DATE) or OUT.zarr/GROUP@DATE)",
    )
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
    add_precision_option(p)
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
    add_mask_options(p)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_embed_region, on_interrupt=interrupted_region)

    from ..pipeline.composite import DEFAULT_RULE, RULES

    p = sub.add_parser(
        "composite",
        help="one embedding per pixel from its clear observations in a period (a store made with --keep all-dates)",
        description="Combine the acquisition layers of a region store dated within --start..--end (each nodata "
        "where its scene was cloud or shadow) into one int8 embedding GeoTIFF + scales, with OUT.observations.tif "
        "beside it (band 1: clear observations per pixel, band 2: their spread). fit, similar, cluster and change "
        "read it like any embedding raster.",
    )
    p.add_argument("store", metavar="STORE", help="OUT.zarr of embed-region --keep all-dates")
    p.add_argument("out", metavar="OUT.tif", help="the composite GeoTIFF")
    p.add_argument("--start", metavar="YYYY-MM-DD", help="first date of the period (default: the first layer)")
    p.add_argument("--end", metavar="YYYY-MM-DD", help="last date of the period, inclusive (default: the last layer)")
    p.add_argument("--rule", choices=RULES, default=DEFAULT_RULE, help=f"how to combine (default {DEFAULT_RULE})")
    p.add_argument("--group", help="the store's CRS group (default: its only one)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=cmd_composite)

    p = sub.add_parser(
        "verify",
        help="check a region store (or an embedding GeoTIFF) in full; --repair recomputes what fails",
        description="Check every metadata file of OUT.zarr, every finished unit's shard files against the "
        "checksums recorded when they were written, and decode every unit; or check that an embedding "
        "GeoTIFF/COG is whole and bound to its scales file. Exit 0 when intact, 1 when damage was found. "
        "--repair forgets the damaged units and runs the store's recorded recipe again (same scenes, model "
        "and sizes), which rewrites damaged metadata and computes exactly those units.",
    )
    p.add_argument("path", metavar="STORE", help="OUT.zarr of embed-region, or a GeoTIFF/COG of embeddings")
    p.add_argument("--repair", action="store_true", help="recompute the damaged units and rewrite damaged metadata")
    p.add_argument("--model", "-m", help="--repair: the model folder, when it moved since the run")
    p.add_argument("--device", help="--repair: cpu, cuda ... (default: cuda when available)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_verify)
