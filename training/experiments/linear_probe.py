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
import torch.nn.functional as F
from rasterio.windows import Window

from earth_embed import EarthEncoder
from training.data import IGNORE_INDEX, LabelledScene, region_split
from training.evaluate import confusion_matrix, metrics_from_confusion

DATASETS = ("brandenburg-osm", "slovenia-eolearn", "austria-ben-v2")


def scene_arrays(folder: Path, bands: list[str]) -> tuple[torch.Tensor, torch.Tensor, LabelledScene]:
    """Whole-scene reflectance (C, H, W) and labels (H, W) (0..K-1 or IGNORE_INDEX)."""
    scene = LabelledScene(folder)
    refl, y = scene.read(Window(0, 0, scene.width, scene.height), bands)
    return torch.from_numpy(refl), torch.from_numpy(y), scene


def halves(scene: LabelledScene, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean (H, W) masks of the probe's train and test pixels."""
    train = torch.zeros(scene.height, scene.width, dtype=torch.bool)
    test = torch.zeros_like(train)
    if name == "brandenburg-osm":  # the label-efficiency split: train block (west) vs test block (east)
        split = region_split(scene, chip=64)
        for mask, chips in ((train, split["train"]), (test, split["test"])):
            for c in chips:
                mask[c.row:c.row + c.size, c.col:c.col + c.size] = True
    else:
        mid = scene.width // 2
        train[:, :mid] = True
        test[:, mid:] = True
    return train, test


@torch.no_grad()
def features(enc: EarthEncoder | None, refl: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """(H*W, F) per-pixel features: the encoder's embeddings, or the normalised bands when ``enc`` is None."""
    x = (refl - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)
    out = x if enc is None else enc(x[None])[0]
    return out.flatten(1).T.contiguous()


def fit_probe(x: torch.Tensor, y: torch.Tensor, n_classes: int, steps: int = 300, seed: int = 0) -> torch.nn.Linear:
    """Multinomial logistic regression (full batch, L-BFGS) on standardised features."""
    torch.manual_seed(seed)
    probe = torch.nn.Linear(x.shape[1], n_classes)
    opt = torch.optim.LBFGS(probe.parameters(), lr=0.5, max_iter=steps, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(probe(x), y) + 1e-4 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return probe


def probe_scores(feats: torch.Tensor, y: torch.Tensor, train: torch.Tensor, test: torch.Tensor,
                 classes: list[str]) -> dict[str, Any]:
    """Fit on labelled train pixels, score on labelled test pixels."""
    yf = y.flatten()
    tr = train.flatten() & (yf != IGNORE_INDEX)
    te = test.flatten() & (yf != IGNORE_INDEX)
    mu, sd = feats[tr].mean(0), feats[tr].std(0).clamp(min=1e-6)
    z = (feats - mu) / sd
    probe = fit_probe(z[tr], yf[tr], len(classes))
    with torch.no_grad():
        pred = probe(z[te]).argmax(1)
    m = metrics_from_confusion(confusion_matrix(pred, yf[te], len(classes)), classes)
    # classes absent from the test half's truth are not scored (mIoU over the classes present)
    present = [c for i, c in enumerate(classes) if int((yf[te] == i).sum()) > 0]
    m["miou"] = float(np.mean([m["per_class_iou"][c] for c in present]))
    m["classes_scored"] = present
    m["n_train_pixels"], m["n_test_pixels"] = int(tr.sum()), int(te.sum())
    return m


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads) if args.threads else None
    enc = EarthEncoder.from_pretrained(args.encoder)
    norm = enc.config.normalization
    rows: list[dict[str, Any]] = []
    for name in args.datasets:
        folder = Path(args.data_root) / "labelled" / name
        refl, y, scene = scene_arrays(folder, enc.bands)
        train, test = halves(scene, name)
        starts: list[tuple[str, int | None, EarthEncoder | None]] = [("raw bands", None, None), ("pretrained", None, enc)]
        for seed in args.random_seeds:
            torch.manual_seed(seed)
            starts.append(("random init", seed, EarthEncoder(enc.config).eval()))
        for label, seed, model in starts:
            t0 = time.time()
            m = probe_scores(features(model, refl, norm.mean, norm.std), y, train, test, scene.classes)
            rows.append({"dataset": name, "features": label, "seed": seed, "miou": m["miou"],
                         "pixel_accuracy": m["pixel_accuracy"], "per_class_iou": m["per_class_iou"],
                         "classes_scored": m["classes_scored"], "n_train_pixels": m["n_train_pixels"],
                         "n_test_pixels": m["n_test_pixels"], "seconds": round(time.time() - t0, 1)})
            print(f"{name:18s} {label:12s} seed={seed!s:4s} mIoU {100 * m['miou']:.1f}  acc {100 * m['pixel_accuracy']:.1f}",
                  flush=True)
    return {"encoder": str(args.encoder), "rows": rows, "date": _dt.date.today().isoformat(),
            "command": "python " + " ".join(shlex.quote(a) for a in sys.argv)}


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
            lines.append(f"| {ds} | {feats}{n} | {mi.mean():.1f}{pm} | {acc.mean():.1f}{pa} | "
                         f"{rs[0]['n_train_pixels']} / {rs[0]['n_test_pixels']} |")
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
