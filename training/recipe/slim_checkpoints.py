"""Copy a pre-training run as a slim run: a few checkpoints, encoder weights only, in half precision.

A lent GPU machine returns at most 8 files of 16 MiB (two folders deep). This writes ``OUT/config.yaml``,
``OUT/log.csv``, ``OUT/summary.json`` and, for ``--keep`` checkpoints spread over the run (the last one
included), ``OUT/checkpoints/step_NNNNNNN/model.safetensors`` (the query encoder) and
``custom_checkpoint_1.pkl`` (the EMA key encoder), each holding the ``encoder.*`` tensors in float16.
``export_checkpoint.py`` and ``experiments/probe_checkpoints.py`` read ``OUT`` as they read the run.

    python -m training.recipe.slim_checkpoints runs/gpu-run $OUT --keep 3
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from earth_embed.errors import ConfigError
from training.data.checkpoints import KEY_WEIGHTS, QUERY_WEIGHTS

RUN_FILES = ("config.yaml", "log.csv", "summary.json")


def _encoder_half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items() if k.startswith("encoder.")
    }


def spread(items: list[Path], keep: int) -> list[Path]:
    """``keep`` items evenly spread over ``items``, the last always among them."""
    if keep >= len(items):
        return list(items)
    idx = np.unique(np.round(np.linspace(len(items) - 1, 0, keep)).astype(int))
    return [items[i] for i in sorted(idx)]


def slim_run(run: str | Path, out: str | Path, keep: int = 3, run_files: Sequence[str] = RUN_FILES) -> list[Path]:
    """Write the slim copy of ``run`` into ``out`` (new or empty), with ``run_files`` from the run folder.

    Returns the checkpoint folders written.
    """
    run, out = Path(run), Path(out)
    ckpts = sorted((run / "checkpoints").glob("step_*"))
    if not (run / "config.yaml").is_file() or not ckpts:
        raise ConfigError(f"{run} is not a pre-training run with checkpoints (config.yaml, checkpoints/step_*)")
    if keep < 1:
        raise ConfigError(f"--keep must be >= 1, got {keep}")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty; give a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    for name in run_files:
        if (run / name).is_file():
            shutil.copy2(run / name, out / name)
    written = []
    for ckpt in spread(ckpts, keep):
        dst = out / "checkpoints" / ckpt.name
        dst.mkdir(parents=True)
        save_file(_encoder_half(load_file(ckpt / QUERY_WEIGHTS)), dst / QUERY_WEIGHTS)
        if (ckpt / KEY_WEIGHTS).is_file():
            key = torch.load(ckpt / KEY_WEIGHTS, map_location="cpu", weights_only=True)
            torch.save(_encoder_half(key), dst / KEY_WEIGHTS)
        written.append(dst)
    return written


def main(argv: list[str] | None = None) -> list[Path]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="the pre-training run folder")
    p.add_argument("out", help="new or empty folder for the slim copy")
    p.add_argument("--keep", type=int, default=3, help="checkpoints to keep, spread over the run (default 3)")
    args = p.parse_args(argv)
    written = slim_run(args.run, args.out, args.keep)
    for d in written:
        mib = sum(f.stat().st_size for f in d.iterdir()) / 2**20
        print(f"{d}: {mib:.1f} MiB")
    return written


if __name__ == "__main__":
    main()
