"""One prepared call on a lent GPU machine: time a few steps, pre-train for a wall-clock budget, return a slim run.

The machine has no ``../shared`` and no rasterio, and a call lasts at most 10 minutes. This driver reads
an array cache (:mod:`training.data.array_cache`). It times a short run, sizes ``train.steps`` so that the real
run fits ``--minutes`` (a whole cosine schedule, not a cut one), and trains with checkpoints spread over
the run. It then writes to ``--out`` the slim fp16 copy (:mod:`training.recipe.slim_checkpoints`: ``config.yaml``
and the query and EMA encoders of ``--keep`` checkpoints) and ``device_run.json`` (the timing, the
sizing and the run's log): 2 + 2 x keep files, within the 8 a call returns. There are no in-loop probes
(they read labelled rasters): probe the returned checkpoints on the CPU.

    python -m training.data.array_cache --data training/configs/data/pretrain-real.yaml --crop 256 --out .cache/arrays
    # device tool, carry [".cache"], timeout_s 600:
    PYTHONUNBUFFERED=1 python3 -m training.recipe.device_run --config training/configs/local-stats.yaml \\
        --scale gpu --cache .cache/arrays --minutes 7 --out "$OUT"
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from earth_embed.errors import ConfigError
from training.recipe.pretrain import PretrainConfig, pretrain, resolve_recipe
from training.recipe.slim_checkpoints import slim_run
from training.recipe.tracking import read_log


def seconds_per_step(log_csv: Path, skip: int) -> float:
    """Mean wall seconds per step after the first ``skip`` steps (start-up and compilation), from ``log.csv``."""
    later = [r for r in read_log(log_csv) if r["step"] > skip]
    if len(later) < 2:
        raise ConfigError(f"{log_csv}: too few logged steps after step {skip} to time; raise --timing-steps")
    return (later[-1]["elapsed_s"] - later[0]["elapsed_s"]) / (later[-1]["step"] - later[0]["step"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Timing run, real run, slim copy; returns (and writes to ``OUT/device_run.json``) what was measured."""
    cache = Path(args.cache)
    if not 1 <= args.keep <= 3:
        raise ConfigError(
            f"--keep must be 1-3 (a call returns 8 files: config, report and 2 per checkpoint), got {args.keep}"
        )
    if not (cache / "sources.yaml").is_file():
        raise ConfigError(
            f"{cache} is not an array cache (no sources.yaml); build it with python -m training.data.array_cache"
        )
    out = Path(args.out)
    base = PretrainConfig(
        configs=list(args.config),
        scale=args.scale,
        data_root=str(cache),
        overrides=[f"data.sources={cache / 'sources.yaml'}", "train.probe_every=0", "train.select=last"]
        + list(args.overrides),
        progress=False,
    )
    work = Path(tempfile.mkdtemp(prefix="earth-embed-device-"))
    try:
        t0 = time.perf_counter()
        timing = ["train.log_every=1", "train.save_every=0", "train.warmup_steps=1"]
        pretrain(
            replace(base, output_dir=work / "timing", steps=args.timing_steps, overrides=[*base.overrides, *timing])
        )
        startup_s = time.perf_counter() - t0
        sps = seconds_per_step(work / "timing" / "log.csv", skip=args.timing_steps // 3)
        budget_s = args.minutes * 60 - startup_s  # the real run pays the same start-up once more
        steps = int(budget_s / sps) // args.keep * args.keep
        if steps < args.keep:
            raise ConfigError(
                f"{args.minutes} min leave room for {int(budget_s / sps)} steps at {sps:.3f} s/step; give more --minutes"
            )
        cfg = resolve_recipe(base)
        warmup = min(int(cfg["train"]["warmup_steps"]), max(1, steps // 10))
        t1 = time.perf_counter()
        spread = [f"train.save_every={steps // args.keep}", f"train.keep_checkpoints={args.keep}"]
        stats = pretrain(
            replace(
                base,
                output_dir=work / "run",
                steps=steps,
                overrides=[*base.overrides, *spread, f"train.warmup_steps={warmup}"],
            )
        )
        run_s = time.perf_counter() - t1
        slim_run(work / "run", out, keep=args.keep, run_files=("config.yaml",))  # 8 files come back at most
        log = read_log(work / "run" / "log.csv")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "timing_steps": args.timing_steps,
        "seconds_per_step": sps,
        "startup_s": startup_s,
        "steps": steps,
        "warmup_steps": warmup,
        "run_wall_s": run_s,
        "samples_per_s": stats["samples_per_s"],
        "final_loss": stats["final_loss"],
        "log": log,  # the run's log.csv rows (step, loss, lr, samples_per_s, elapsed_s)
    }
    (out / "device_run.json").write_text(json.dumps(report, indent=1) + "\n")
    for k, v in report.items():
        if k == "log":
            continue
        print(f"{k:18s} {v:.4g}" if isinstance(v, float) else f"{k:18s} {v}")
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", required=True, help="pre-training config (repeatable)")
    p.add_argument("--scale", help="as training/pretrain.py --scale (gpu)")
    p.add_argument("--cache", required=True, help="array cache folder (python -m training.data.array_cache)")
    p.add_argument("--minutes", type=float, default=7.0, help="wall-clock budget of the real run, start-up included")
    p.add_argument("--timing-steps", type=int, default=30)
    p.add_argument("--keep", type=int, default=3, help="checkpoints spread over the run, returned in fp16")
    p.add_argument("--out", required=True, help="new or empty folder for the slim run ($OUT on the device)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], help="section.key=value, as training/pretrain.py --set"
    )
    return run(p.parse_args(argv))


if __name__ == "__main__":
    main()
