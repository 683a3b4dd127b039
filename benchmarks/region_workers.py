"""The workers of ``benchmarks/region_throughput.py``: each row runs one of these in its own subprocess and prints
its figures as one JSON line (``region_throughput.py --worker KIND``)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:  # run from a source checkout without installing
    import earth_embed  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(HERE.parent))

from raster_throughput import peak_rss_mb  # noqa: E402

RELEASE = HERE.parent / "models" / "earth-embed-s2-unet-r18s16"
#: What makes this CPU run torch as an AVX2-only CPU would (ATen's kernels and oneDNN's); ONNX Runtime picks its
#: kernels from CPUID at run time and has no such switch, so its figures always use every instruction the CPU has.
#: torch's kernels, oneDNN's and earth_embed's Numba kernels (compiled for a Haswell: AVX2 + FMA) held to AVX2.
ISA_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "NUMBA_CPU_NAME": "haswell"}


def load_model():
    from earth_embed import EarthEncoder

    return EarthEncoder.from_pretrained(RELEASE).eval()


def worker_forward(args) -> dict:
    """Bare forward on in-memory block x block windows of real pixels, each precision interleaved, in the
    engines' memory format; with channels_last also fp32 contiguous (``fp32 contiguous``: the forward as it ran
    before precision and layout were options, the reference of the first target). ``onnx`` / ``onnx-int8`` in
    ``--precisions`` are those runtimes at fp32 (``earth_embed.onnx_forward``; their graphs exported before the
    clock, inputs contiguous). Each pass runs as the engines run their blocks: inside
    ``earth_embed.allocator.keep_freed_memory`` (one untimed forward first maps the pages), where this code has it
    and ``EARTH_EMBED_KEEP_FREED_MEMORY`` does not turn it off (the caller's ``system malloc`` runs)."""
    import contextlib
    import copy

    import torch

    try:
        from earth_embed.allocator import available, keep_freed_memory
    except ImportError:  # the code as issue 36 found it (benchmarks' reference) has no such module
        keep_freed_memory, available = contextlib.nullcontext, lambda: False

    from earth_embed.inputs import open_scene
    from earth_embed.onnx_forward import onnx_forward
    from earth_embed.precision import autocast_for
    from earth_embed.runtime import ONNX_RUNTIMES
    from earth_embed.tiling.unit import check_memory_format

    model = load_model()
    b = args.block
    with open_scene(args.src, bands=model.bands) as scene:
        x = torch.from_numpy(np.stack([scene.read(((0, b), (0, b))), scene.read(((b, 2 * b), (b, 2 * b)))]))
    layout = check_memory_format(args.memory_format)
    names = args.precisions.split(",")
    variants = {p: (p, layout) for p in names if p not in ONNX_RUNTIMES}
    variants.update({p: ("fp32", torch.contiguous_format) for p in names if p in ONNX_RUNTIMES})
    if layout != torch.contiguous_format:
        variants["fp32 contiguous"] = ("fp32", torch.contiguous_format)
    models: dict[Any, Any] = {torch.contiguous_format: model, layout: copy.deepcopy(model).to(memory_format=layout)}
    runs = {name: onnx_forward(model, name) for name in names if name in ONNX_RUNTIMES}

    def once(name: str, k: int) -> float:
        precision, fmt = variants[name]
        run = runs.get(name, models[fmt])
        kept = available()
        with autocast_for(precision), keep_freed_memory() if kept else contextlib.nullcontext():
            xin = model.normalize(x[k % 2 : k % 2 + 1]).contiguous(memory_format=fmt)
            if kept:
                run(xin).float().numpy()  # an engine's later blocks find their pages mapped
            t0 = time.perf_counter()
            run(xin).float().numpy()
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
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "isa_env": {k: os.environ[k] for k in ISA_ENV if k in os.environ},
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
        progress=False,
        workers=args.workers,
        precision=args.precision,
        memory_format=args.memory_format,
        runtime=args.runtime,
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
    """The local engine's units run serially, read / compute / write each timed, and compute split into the
    forward itself, the halo's share of it (pixels computed beyond the unit's own) and the work around it
    (normalising, int8 encoding, placing): where the time goes."""
    import torch

    from earth_embed import kernels
    from earth_embed.allocator import keep_freed_memory
    from earth_embed.outputs.zarr_store import RegionStore
    from earth_embed.tiling.engine import model_on
    from earth_embed.tiling.plan import RegionPlan
    from earth_embed.tiling.unit import SceneCache, compute_unit, read_unit

    model = load_model()
    plan = RegionPlan.from_scenes([args.src], model, shard=args.shard, block=args.block)
    out = Path(args.workdir) / f"stages_{os.getpid()}.zarr"
    store = RegionStore.create(out, plan, model_id=str(RELEASE), overwrite=True)
    times = {"read": 0.0, "compute": 0.0, "write": 0.0}
    forward = {"seconds": 0.0, "computed_px": 0}

    def timed(x: torch.Tensor) -> torch.Tensor:
        t = time.perf_counter()
        y = model(x)
        forward["seconds"] += time.perf_counter() - t
        forward["computed_px"] += x.shape[0] * x.shape[-2] * x.shape[-1]
        return y

    t0 = time.perf_counter()
    kernels.warm_up(wait=True)  # once per process: the local engine starts it beside the model's load
    startup = time.perf_counter() - t0
    with SceneCache(plan) as scenes, model_on(model, torch.device("cpu"), args.memory_format), keep_freed_memory():
        for unit in plan.units:
            t0 = time.perf_counter()
            item = read_unit(plan, unit, scenes)
            t1 = time.perf_counter()
            data = compute_unit(
                model, item, "int8", precision=args.precision, memory_format=args.memory_format, forward=timed
            )
            t2 = time.perf_counter()
            store.write_unit(unit, data)
            t3 = time.perf_counter()
            times["read"] += t1 - t0
            times["compute"] += t2 - t1
            times["write"] += t3 - t2
    subprocess.run(["rm", "-rf", str(out)], check=True)
    total = sum(times.values())
    halo_share = 1 - plan.pixels / forward["computed_px"]  # of the forward's pixels, those beyond the units' own
    stages = {
        "Numba's start-up (once per process)": startup,
        "read": times["read"],
        "forward, units' own pixels": forward["seconds"] * (1 - halo_share),
        "forward, halo": forward["seconds"] * halo_share,
        "around the forward (normalise, int8 encode, place)": times["compute"] - forward["seconds"],
        "write": times["write"],
    }
    return {
        "px_per_s": plan.pixels / total,
        "seconds": total,
        "stages": stages,
        "computed_px": forward["computed_px"],
        "peak_rss_mb": peak_rss_mb(),
    }


def worker_texture(args) -> dict:
    """The texture layer alone against the fp32 forward that contains it, interleaved, on the engines' memory
    format, on a real block x block window (the layer's input: the encoder's own last-decoder features), with
    freed memory kept as the engines keep it."""
    import copy
    import statistics

    import torch

    from earth_embed.allocator import keep_freed_memory
    from earth_embed.inputs import open_scene
    from earth_embed.tiling.unit import check_memory_format

    model = copy.deepcopy(load_model()).to(memory_format=check_memory_format(args.memory_format))
    layer, b = model.local_stats, args.block
    with open_scene(args.src, bands=model.bands) as scene:
        x = model.normalize(torch.from_numpy(scene.read(((0, b), (0, b))))[None])
    x = x.contiguous(memory_format=check_memory_format(args.memory_format))
    captured: dict[str, torch.Tensor] = {}
    hook = layer.register_forward_hook(lambda m, i, o: captured.update(features=i[0]))
    times: dict[str, list[float]] = {"layer": [], "forward": []}
    with torch.inference_mode(), keep_freed_memory():  # as the engines run the forward
        model(x)
        hook.remove()
        features = captured["features"]
        layer(features, reuse_output=True)
        for _ in range(max(2, args.repeats)):  # the layer as the encoder's forward runs it (its reused output)
            for name, fn in (("layer", lambda: layer(features, reuse_output=True)), ("forward", lambda: model(x))):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "px_per_s": b * b / med["forward"],
        "seconds": med["forward"],
        "layer_seconds": med["layer"],
        "share": med["layer"] / med["forward"],
        "layer_input": list(features.shape),
        "peak_rss_mb": peak_rss_mb(),
    }


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


WORKERS = {
    "forward": worker_forward,
    "engine": worker_engine,
    "torchgeo": worker_torchgeo,
    "stages": worker_stages,
    "texture": worker_texture,
}


def cpu_info() -> dict:
    """This CPU as the JSON records it: model name, the SIMD flags that decide the paths, torch's ATen capability."""
    import torch

    flags: set[str] = set()
    name = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8")
    return {
        "model": name,
        "flags": [f for f in wanted if f in flags],
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
    }
