"""Region command of ``earth-embed``: embed-region (many scenes, several CRSs, one resumable Zarr store)."""

from __future__ import annotations

import argparse
import time

from .common import model_arg, set_threads


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
        cog_dir=args.cog_dir,
        stac_dir=args.stac_dir,
        on_bad_scene=args.on_bad_scene,
        chunk=args.chunk,
        shard=args.shard,
        block=args.block,
        halo=args.halo,
        batch_size=args.batch_size,
        device=args.device,
        dn_offset=args.dn_offset,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(f"{args.out}: {run.summary} (wall {time.perf_counter() - t0:.1f} s)")
    if args.cog_dir:
        print(f"{args.cog_dir}: {len(run.cogs)} embedding COG(s) + their scale COG(s), one pair per finished shard")
    if run.catalog:
        print(f"{run.catalog}: STAC Collection (validated), one Item per store group and per COG")
    if run.failed:
        print("rerun the same command to retry the failed units; finished units are kept")
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``embed-region`` to the ``earth-embed`` parser."""
    from ..tiling.plan import DEFAULT_CHUNK, DEFAULT_SHARD  # light: rasterio's affine only

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
