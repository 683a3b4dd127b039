"""Probe every saved checkpoint of a pre-training run: the curve behind probe-based model selection.

    python training/experiments/probe_checkpoints.py --run runs/release --out runs/release/probe_curve.json

For each ``<run>/checkpoints/step_*`` the encoder is rebuilt from the run's ``config.yaml`` and the
checkpoint weights (the query encoder, and with ``--key`` also the EMA key encoder), then scored by
:class:`training.probe.ProbeSelector`-style linear probes: brandenburg-osm training block ->
validation block (what selection may use; the test block is never read), plus, for information,
the west -> east half probes of the other labelled sets. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

import torch
import yaml
from safetensors.torch import load_file

from earth_embed import EarthEncoder
from training.experiments.linear_probe import halves
from training.probe import block_masks, features, probe_scores, scene_arrays


def encoder_from_checkpoint(cfg: dict, ckpt: Path | None, which: str = "query") -> EarthEncoder:
    """The run's encoder with the weights of ``ckpt`` (``query``: trained by gradient; ``key``: the EMA copy;
    ``ckpt=None``: fresh random weights)."""
    norm = cfg["model"]["normalization"]
    enc = EarthEncoder.new(
        cfg["model"]["architecture"],
        bands=cfg["data"]["bands"],
        embed_dim=int(cfg["model"]["embed_dim"]),
        mean=norm["mean"],
        std=norm["std"],
    )
    if ckpt is None:
        return enc.eval()
    if which == "query":
        state = load_file(ckpt / "model.safetensors")
    else:  # accelerate's register_for_checkpointing order in pretrain.py: 0 = TrainState, 1 = key net
        state = torch.load(ckpt / "custom_checkpoint_1.pkl", map_location="cpu", weights_only=True)
    enc.load_state_dict({k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")})
    return enc.eval()


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="pre-training run folder (config.yaml + checkpoints/)")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--datasets", nargs="+", default=["brandenburg-osm", "slovenia-eolearn", "austria-ben-v2"])
    p.add_argument("--key", action="store_true", help="also probe the EMA key encoder of each checkpoint")
    p.add_argument(
        "--references",
        action="store_true",
        help="also probe the raw bands and the architecture at random init (seed 0) on the same splits",
    )
    p.add_argument("--max-train", type=int, default=20000, help="probe training pixels per dataset (subsampled)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="JSON output (default <run>/probe_curve.json)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    ckpts = sorted((run / "checkpoints").glob("step_*"))
    if not ckpts:
        raise SystemExit(f"{run}/checkpoints has no step_* folders; pre-train with train.save_every > 0")
    sets = []
    for name in args.datasets:
        refl, y, scene = scene_arrays(Path(args.data_root) / "labelled" / name, cfg["data"]["bands"])
        if name == "brandenburg-osm":  # selection split: training block -> validation block
            fit, score = block_masks(scene, ("train", "val"))
        else:
            fit, score = halves(scene, name)
        sets.append((name, refl, y, scene, fit, score))
    candidates: list[tuple[int, str, Path | str | None]] = []  # (step, label, checkpoint | "random" | None = raw)
    if args.references:
        torch.manual_seed(0)
        candidates += [(0, "raw bands", None), (0, "random init", "random")]
    for ckpt_dir in ckpts:
        step = int(ckpt_dir.name.split("_")[1])
        candidates += [(step, which, ckpt_dir) for which in (("query", "key") if args.key else ("query",))]
    out = Path(args.out) if args.out else run / "probe_curve.json"
    old = json.loads(out.read_text())["rows"] if out.is_file() else []  # rows of an earlier call are reused
    done = {(r["step"], r["encoder"]): r for r in old if all(d in r for d in args.datasets)}
    rows = []
    for step, which, ckpt in candidates:
        if (step, which) in done:
            rows.append(done[(step, which)])
            continue
        enc = None if ckpt is None else encoder_from_checkpoint(cfg, None if ckpt == "random" else Path(ckpt), which)
        norm = cfg["model"]["normalization"]
        row: dict[str, Any] = {"step": step, "encoder": which}
        for name, refl, y, scene, fit, score in sets:
            m = probe_scores(
                features(enc, refl, norm["mean"], norm["std"]), y, fit, score, scene.classes, max_train=args.max_train
            )
            row[name] = round(100 * m["miou"], 2)
        rows.append(row)
        print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    out.write_text(
        json.dumps(
            {"run": str(run), "split": "brandenburg-osm: train->val block; others: west->east half", "rows": rows},
            indent=1,
        )
        + "\n"
    )
    return rows


if __name__ == "__main__":
    main()
