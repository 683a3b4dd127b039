"""Few-shot land cover on frozen features: what N labelled pixels per class buy with the released embeddings,
the raw bands and the hand-made stack — with the same heads as ``earth-embed fit``.

    python training/experiments/few_shot.py --encoder models/earth-embed-s2-unet-r18s16 \
        --data-root ../shared/data --out docs/results/few_shot.json

For each labelled set the split is the linear probe's (``training/experiments/linear_probe.py``:
brandenburg-osm's label-efficiency train/test blocks, the west/east halves of the two small sets).
Each draw takes N labelled pixels per class at random from the training side (all of them when a
class has fewer), fits the head of ``earth_embed.apps`` (``logistic``: multinomial logistic regression
on standardised features; ``knn``: 5 nearest neighbours by cosine distance) and scores every labelled
pixel of the test side: mIoU over the classes present there, and pixel accuracy. Features
(``training.evaluation.features.scene_features``): the encoder's embeddings (stored BatchNorm statistics, what
``earth-embed embed`` writes), the normalised raw bands, and the hand-made stack (bands + box means
over 3/7/15 px + local standard deviation over 5/15 px).
"""

from __future__ import annotations

import argparse
import datetime as _dt
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
from earth_embed.apps.heads import fit_head, make_head, predict_proba
from training.data.labelled import IGNORE_INDEX
from training.evaluation.evaluate import confusion_matrix, metrics_from_confusion
from training.evaluation.features import scene_features
from training.evaluation.probe import DATASETS, halves, scene_arrays
from training.evaluation.results_file import write_json

SHOTS = (5, 20, 100)
FEATURES = {"embeddings": "released embeddings", "raw": "raw bands", "stack": "hand-made stack"}
HEADS = ("logistic", "knn")


def draw(y: np.ndarray, train_idx: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of at most ``n`` labelled training pixels per class, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    picks = []
    for c in np.unique(y[train_idx]):
        idx = train_idx[y[train_idx] == c]
        picks.append(rng.choice(idx, size=min(n, len(idx)), replace=False))
    return np.concatenate(picks)


def score(pred: np.ndarray, truth: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """mIoU over the classes present in ``truth``, pixel accuracy, per-class IoU."""
    m = metrics_from_confusion(confusion_matrix(torch.from_numpy(pred), torch.from_numpy(truth), len(classes)), classes)
    present = [c for i, c in enumerate(classes) if (truth == i).any()]
    return {
        "miou": float(np.mean([m["per_class_iou"][c] for c in present])),
        "pixel_accuracy": float(m["pixel_accuracy"]),
        "per_class_iou": {c: float(m["per_class_iou"][c]) for c in present},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    enc = EarthEncoder.from_pretrained(args.encoder)
    norm = enc.config.normalization
    rows: list[dict[str, Any]] = []
    for name in args.sets:
        refl, y_t, scene = scene_arrays(Path(args.data_root) / "labelled" / name, enc.bands)
        train, test = halves(scene, name)
        y = y_t.flatten().numpy()
        labelled = y != IGNORE_INDEX
        train_idx = np.flatnonzero(train.flatten().numpy() & labelled)
        test_idx = np.flatnonzero(test.flatten().numpy() & labelled)
        for key, label in FEATURES.items():
            t0 = time.time()
            source: EarthEncoder | str = enc if key == "embeddings" else key
            feats = scene_features(source, refl, norm.mean, norm.std).numpy()
            x_test = feats[test_idx]
            for n in args.shots:
                for seed in range(args.draws):
                    pick = draw(y, train_idx, n, seed)
                    for head in args.heads:
                        model = fit_head(make_head(head, seed=seed), feats[pick], y[pick])
                        pred = predict_proba(model, x_test, len(scene.classes)).argmax(1)
                        m = score(pred, y[test_idx], scene.classes)
                        rows.append(
                            {"dataset": name, "features": label, "head": head, "shots": n, "draw": seed,
                             "n_train_pixels": len(pick), "n_test_pixels": len(test_idx), **m}
                        )  # fmt: skip
            done = [r for r in rows if r["dataset"] == name and r["features"] == label and r["head"] == "logistic"]
            summary = {n: np.mean([r["miou"] for r in done if r["shots"] == n]) for n in args.shots}
            print(
                f"{name:18s} {label:20s} logistic mIoU "
                + "  ".join(f"N={n}: {100 * v:.1f}" for n, v in summary.items())
                + f"  ({time.time() - t0:.0f} s)",
                flush=True,
            )
    return {
        "encoder": str(args.encoder),
        "shots": list(args.shots),
        "draws": args.draws,
        "rows": rows,
        "date": _dt.date.today().isoformat(),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
    }


def summary_markdown(result: dict[str, Any], head: str = "logistic") -> str:
    """mIoU (mean +- std over the draws) per set, feature source and N, for one head."""
    shots = result["shots"]
    lines = [
        "| set | features | " + " | ".join(f"N = {n}" for n in shots) + " |",
        "|---|---|" + "---|" * len(shots),
    ]
    for ds in dict.fromkeys(r["dataset"] for r in result["rows"]):
        for feats in FEATURES.values():
            cells = []
            for n in shots:
                v = np.array(
                    [
                        r["miou"]
                        for r in result["rows"]
                        if (r["dataset"], r["features"], r["head"], r["shots"]) == (ds, feats, head, n)
                    ]
                )
                cells.append(f"{100 * v.mean():.1f} +- {100 * v.std():.1f}" if v.size else "-")
            lines.append(f"| {ds} | {feats} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", required=True, help="encoder folder or hub id")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--sets", nargs="+", default=list(DATASETS))
    p.add_argument("--shots", type=int, nargs="+", default=list(SHOTS), help="labelled pixels per class")
    p.add_argument("--draws", type=int, default=5, help="random draws per N")
    p.add_argument("--heads", nargs="+", default=list(HEADS), choices=HEADS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="docs/results/few_shot.json")
    args = p.parse_args(argv)
    result = run(args)
    result["markdown"] = {h: summary_markdown(result, h) for h in args.heads}
    write_json(args.out, result)
    for h in args.heads:
        print(f"\n{h}:\n{result['markdown'][h]}")
    return result


if __name__ == "__main__":
    main()
