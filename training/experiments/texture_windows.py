"""Which local-texture window helps or hurts each labelled set: the hand-made stack with one local-std window at a
time, and an encoder's texture layer with one window's block held at its scene mean (issue 10, arms k and l).

    python training/experiments/texture_windows.py --encoder models/earth-embed-s2-unet-r18s16 \\
        --json docs/results/texture_windows.json

Rows, all with the probe and west -> east halves of ``linear_probe.py`` (stored BatchNorm):

* ``stack``: the normalised bands + box means over 3/7/15 px (``raw+means``), then that plus the local standard
  deviation over each ``--windows`` size alone, then the hand-made stack itself (std over 5 and 15 px).
* ``encoder``: each ``--encoder`` whose architecture has a texture layer (``EarthConfig.local_stats``), as is, with
  each window's block of the layer's output replaced by its per-channel mean over the scene (the 1x1 head then sees
  a constant there: the embedding keeps everything but that window's texture), with every block held, and the
  layer's output itself (``head input``: what the 1x1 head mixes down to the embedding).

This is a post-hoc ablation of a trained head, not a retrained arm: it says which window's texture the probe leans on
per set, not what a network trained without it would learn.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

import torch

from earth_embed import EarthEncoder
from training.evaluation.features import (
    BOX_MEAN_SIZES,
    LOCAL_STD_SIZES,
    handmade_stack,
    head_input,
    normalise_scene,
    scene_features,
)
from training.evaluation.probe import DATASETS, halves, probe_scores, scene_arrays
from training.evaluation.results_file import command_line, write_report


class HeldBlocks:
    """Forward hook on a texture layer: the listed channel ranges of its output become their per-image means."""

    def __init__(self) -> None:
        self.blocks: list[tuple[int, int]] = []

    def __call__(self, module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if not self.blocks:
            return output
        output = output.clone()
        for start, stop in self.blocks:
            output[:, start:stop] = output[:, start:stop].mean(dim=(-2, -1), keepdim=True)
        return output


def texture_blocks(enc: EarthEncoder) -> dict[str, list[tuple[int, int]]]:
    """Variant name -> channel ranges of the texture layer's output to hold: none, each window, all windows."""
    windows = list(enc.config.local_stats or [])
    width = enc.head.in_channels // (1 + len(windows))  # the layer's input channels come first
    per_window = {f"no std{k}": [((i + 1) * width, (i + 2) * width)] for i, k in enumerate(windows)}
    every = {"no texture": [(width, enc.head.in_channels)]} if len(windows) > 1 else {}
    return {"as trained": [], **per_window, **every}


def probe_row(
    name: str, scored: dict[str, Any], kind: str, encoder: str | None, variant: str, feats: torch.Tensor, t0: float
) -> dict[str, Any]:
    """Probe ``feats`` on the set's halves, print one line, return the result row."""
    m = probe_scores(feats, **scored)
    print(f"{name:17s} {kind:8s} {variant:12s} mIoU {100 * m['miou']:5.1f}", flush=True)
    return {"dataset": name, "kind": kind, "encoder": encoder, "variant": variant, "miou": m["miou"]} | {
        "per_class_iou": m["per_class_iou"],
        "seconds": round(time.time() - t0, 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    encoders = {str(p): EarthEncoder.from_pretrained(p).eval() for p in args.encoder}
    for path, enc in encoders.items():
        if enc.local_stats is None:
            raise SystemExit(f"{path} has no texture layer (config local_stats); pass an encoder of a -ls architecture")
    first = next(iter(encoders.values()))
    rows: list[dict[str, Any]] = []
    stack_variants = {"raw+means": ()} | {f"+std{k}": (k,) for k in args.windows} | {"stack": LOCAL_STD_SIZES}
    for name in args.sets:
        refl, y, scene = scene_arrays(Path(args.data_root) / "labelled" / name, first.bands)
        fit, score = halves(scene, name)
        scored = {"y": y, "train": fit, "test": score, "classes": scene.classes}

        norm = first.config.normalization
        x = normalise_scene(refl, norm.mean, norm.std)
        for variant, stds in stack_variants.items():
            t0 = time.time()
            feats = handmade_stack(x, BOX_MEAN_SIZES, stds).flatten(1).T.contiguous()
            rows.append(probe_row(name, scored, "stack", None, variant, feats, t0))
        for path, enc in encoders.items():
            n, held = enc.config.normalization, HeldBlocks()
            handle = enc.local_stats.register_forward_hook(held)
            try:
                for variant, blocks in texture_blocks(enc).items():
                    held.blocks, t0 = blocks, time.time()
                    feats = scene_features(enc, refl, n.mean, n.std)
                    rows.append(probe_row(name, scored, "encoder", path, variant, feats, t0))
            finally:
                handle.remove()
            t0 = time.time()
            feats = head_input(enc, refl)
            rows.append(probe_row(name, scored, "encoder", path, f"head input ({feats.shape[1]}-d)", feats, t0))
    return {
        "rows": rows,
        "date": _dt.date.today().isoformat(),
        "command": command_line("training/experiments/texture_windows.py", args.argv),
    }


def _short(path: str) -> str:
    """A run's encoder folder by its run's name (``runs/arm-seed0/encoder`` -> ``arm-seed0``), else its own."""
    p = Path(path)
    return p.parent.name if p.name in ("encoder", "encoder_best_probe") else p.name


def table(result: dict[str, Any]) -> str:
    """Markdown: one row per (kind, encoder, variant), one column per set."""
    sets = list(dict.fromkeys(r["dataset"] for r in result["rows"]))
    keys = list(dict.fromkeys((r["kind"], r["encoder"], r["variant"]) for r in result["rows"]))
    miou = {(r["kind"], r["encoder"], r["variant"], r["dataset"]): r["miou"] for r in result["rows"]}
    out = ["| features | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for kind, enc, variant in keys:
        label = f"stack: {variant}" if kind == "stack" else f"`{_short(enc)}`: {variant}"
        cells = [f"{100 * miou[(kind, enc, variant, s)]:.1f}" if (kind, enc, variant, s) in miou else "-" for s in sets]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", action="append", required=True, help="encoder folder with a texture layer (repeatable)")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--sets", nargs="+", default=list(DATASETS))
    p.add_argument("--windows", type=int, nargs="+", default=[3, 5, 7, 15], help="local-std windows of the stack rows")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default="docs/results/texture_windows.json")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    return write_report(args.json, run(args), table)


if __name__ == "__main__":
    main()
