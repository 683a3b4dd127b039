"""Land-cover evaluation: confusion matrix, per-class IoU and mIoU over labelled pixels only.

    python -m training.evaluation.evaluate --model runs/finetune/segmenter --data ../shared/data/labelled/brandenburg-osm \
        --split test --out metrics.json

mIoU is the mean IoU over the classes that occur in the ground truth or the predictions of the
evaluated pixels (a class absent from both is reported as null and left out of the mean).
Unlabelled (0 in ``labels.tif``) and nodata pixels are ignored. The split (chip size, block
fractions, gap) defaults to the one stored in the segmenter's metadata by ``finetune.py``.
"""

from __future__ import annotations

import argparse
import functools
import operator
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from training.data.labelled import IGNORE_INDEX, LabelledChips, LabelledScene, region_split
from training.evaluation.results_file import write_json


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts, rows = ground truth, columns = prediction; IGNORE_INDEX pixels skipped."""
    keep = target != IGNORE_INDEX
    t, p = target[keep].long().flatten(), pred[keep].long().flatten()
    cm = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return cm.reshape(num_classes, num_classes).cpu().numpy().astype(np.int64)


def metrics_from_confusion(cm: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """mIoU, per-class IoU (null where the class is absent from truth and prediction), accuracy."""
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    iou = {c: (float(tp[i] / union[i]) if union[i] > 0 else None) for i, c in enumerate(classes)}
    present = [v for v in iou.values() if v is not None]
    total = int(cm.sum())
    return {
        "miou": float(np.mean(present)) if present else float("nan"),
        "per_class_iou": iou,
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "n_pixels": total,
        "classes": list(classes),
        "confusion_matrix": cm.tolist(),
    }


@torch.no_grad()
def predict_chips(
    model: torch.nn.Module, x: torch.Tensor, batch_size: int = 16, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Class indices (N, H, W) for normalised chips (N, C, H, W), in batches."""
    model.eval()
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size].to(device).contiguous(memory_format=torch.channels_last)
        out.append(model(xb).argmax(1).cpu())
    return torch.cat(out) if out else torch.empty(0, *x.shape[2:], dtype=torch.long)


def normalised(x_refl: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Reflectance chips -> model input; nodata pixels (all-zero reflectance) -> 0, as in pre-training."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    valid = (x_refl != 0).any(1, keepdim=True).float()
    return (x_refl - m) / s * valid


def evaluate_model(
    model: torch.nn.Module,
    chips: LabelledChips,
    classes: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str = "cpu",
    batch_size: int = 16,
) -> dict[str, Any]:
    """Metrics of ``model`` (normalised input -> logits) on every chip of ``chips``."""
    x, y = chips.stacked()
    pred = predict_chips(model, normalised(x, mean, std), batch_size, device)
    return metrics_from_confusion(confusion_matrix(pred, y, len(classes)), classes)


def format_metrics(m: dict[str, Any]) -> str:
    lines = [
        f"mIoU {100 * m['miou']:.2f}  pixel accuracy {100 * m['pixel_accuracy']:.2f}  ({m['n_pixels']} labelled px)"
    ]
    for c, v in m["per_class_iou"].items():
        lines.append(f"  {c:>14s}: {'-' if v is None else f'{100 * v:.2f}'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from earth_embed import EarthSegmenter

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="EarthSegmenter folder (save_pretrained) or hub id")
    p.add_argument("--data", required=True, help="labelled folder: B*.tif + labels.tif + classes.json")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    p.add_argument("--chip", type=int, help="chip size (default: the one the segmenter was fine-tuned with)")
    p.add_argument("--test-fraction", type=float)
    p.add_argument("--val-fraction", type=float)
    p.add_argument("--gap", type=int)
    p.add_argument("--dn-offset", type=float, default=0.0, help="-1000 for processing baseline >= 04.00")
    p.add_argument("--out", help="write the metrics JSON here")
    args = p.parse_args(argv)
    seg = EarthSegmenter.from_pretrained(args.model)
    split_meta = dict(seg.config.metadata.get("split", {}))
    chip = args.chip or split_meta.get("chip", 64)
    scene = LabelledScene(args.data, dn_offset=args.dn_offset)
    if list(scene.classes) != seg.classes:
        print(f"warning: the data's classes {scene.classes} differ from the model's {seg.classes}", file=sys.stderr)
    blocks = region_split(
        scene,
        chip=chip,
        test=args.test_fraction if args.test_fraction is not None else split_meta.get("test", 0.3),
        val=args.val_fraction if args.val_fraction is not None else split_meta.get("val", 0.15),
        gap=args.gap if args.gap is not None else split_meta.get("gap"),
    )
    chips = functools.reduce(operator.iadd, blocks.values(), []) if args.split == "all" else blocks[args.split]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    norm = seg.config.normalization
    m = evaluate_model(seg.to(device), LabelledChips(scene, chips, seg.bands), seg.classes, norm.mean, norm.std, device)
    m["split"] = args.split
    print(format_metrics(m))
    if args.out:
        write_json(args.out, m, indent=2)
    return m


if __name__ == "__main__":
    main()
