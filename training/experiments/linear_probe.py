"""Linear probes on frozen per-pixel features: the released encoder vs the same architecture at random
init vs the raw bands, on real labelled scenes (issue 6's cross-region rows and embedding quality).

    python training/experiments/linear_probe.py --encoder models/earth-embed-s2-unet-r18s16 \
        --data-root ../shared/data --out docs/results/linear_probe.json

Each labelled folder (per-band ``B*.tif`` + ``labels.tif`` + ``classes.json``) is split into two
halves by columns: the probe (multinomial logistic regression on labelled pixels) trains on the west
half and is scored on the east half (mIoU over the classes present, pixel accuracy). For
``brandenburg-osm`` the halves are the label-efficiency split's train and test blocks instead.
Random-init rows average ``--random-seeds`` initialisations. Features come from one forward pass over
the whole scene (the scenes are small); unlabelled and nodata pixels are ignored.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

import numpy as np
import torch

from earth_embed import EarthEncoder
from training.data import LabelledScene
from training.probe import block_masks, features, probe_scores, scene_arrays

DATASETS = ("brandenburg-osm", "slovenia-eolearn", "austria-ben-v2")


def halves(scene: LabelledScene, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean (H, W) masks of the probe's train and test pixels."""
    if name == "brandenburg-osm":  # the label-efficiency split: train block (west) vs test block (east)
        train, test = block_masks(scene, ("train", "test"))
        return train, test
    train = torch.zeros(scene.height, scene.width, dtype=torch.bool)
    test = torch.zeros_like(train)
    mid = scene.width // 2
    train[:, :mid] = True
    test[:, mid:] = True
    return train, test


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads) if args.threads else None
    enc = EarthEncoder.from_pretrained(args.encoder)
    norm = enc.config.normalization
    rows: list[dict[str, Any]] = []
    for name in args.datasets:
        folder = Path(args.data_root) / "labelled" / name
        refl, y, scene = scene_arrays(folder, enc.bands)
        train, test = halves(scene, name)
        starts: list[tuple[str, int | None, EarthEncoder | None]] = [
            ("raw bands", None, None),
            ("pretrained", None, enc),
        ]
        for seed in args.random_seeds:
            torch.manual_seed(seed)
            starts.append(("random init", seed, EarthEncoder(enc.config).eval()))
        for label, seed, model in starts:
            t0 = time.time()
            m = probe_scores(features(model, refl, norm.mean, norm.std), y, train, test, scene.classes)
            rows.append(
                {
                    "dataset": name,
                    "features": label,
                    "seed": seed,
                    "miou": m["miou"],
                    "pixel_accuracy": m["pixel_accuracy"],
                    "per_class_iou": m["per_class_iou"],
                    "classes_scored": m["classes_scored"],
                    "n_train_pixels": m["n_train_pixels"],
                    "n_test_pixels": m["n_test_pixels"],
                    "seconds": round(time.time() - t0, 1),
                }
            )
            print(
                f"{name:18s} {label:12s} seed={seed!s:4s} mIoU {100 * m['miou']:.1f}  acc {100 * m['pixel_accuracy']:.1f}",
                flush=True,
            )
    return {
        "encoder": str(args.encoder),
        "rows": rows,
        "date": _dt.date.today().isoformat(),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
    }


def summary_markdown(result: dict[str, Any]) -> str:
    """One table: mean (+- std over random inits) mIoU and accuracy per dataset and feature set."""
    lines = ["| dataset | features | probe mIoU (%) | pixel accuracy (%) | train / test px |", "|---|---|---|---|---|"]
    datasets = list(dict.fromkeys(r["dataset"] for r in result["rows"]))
    for ds in datasets:
        for feats in ("raw bands", "random init", "pretrained"):
            rs = [r for r in result["rows"] if r["dataset"] == ds and r["features"] == feats]
            if not rs:
                continue
            mi = np.array([r["miou"] for r in rs]) * 100
            acc = np.array([r["pixel_accuracy"] for r in rs]) * 100
            pm = f" +- {mi.std():.1f}" if len(rs) > 1 else ""
            pa = f" +- {acc.std():.1f}" if len(rs) > 1 else ""
            n = f" (n={len(rs)})" if len(rs) > 1 else ""
            lines.append(
                f"| {ds} | {feats}{n} | {mi.mean():.1f}{pm} | {acc.mean():.1f}{pa} | "
                f"{rs[0]['n_train_pixels']} / {rs[0]['n_test_pixels']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", required=True, help="encoder folder or hub id")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS))
    p.add_argument("--random-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default="docs/results/linear_probe.json")
    args = p.parse_args(argv)
    result = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result["markdown"] = summary_markdown(result)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(out)
    print(result["markdown"])
    return result


if __name__ == "__main__":
    main()
