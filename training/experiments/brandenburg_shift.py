"""Where do frozen features lose on brandenburg-osm's test block? Two diagnostics, one table.

The probe is the one of ``linear_probe.py`` (training block -> test block, standardised L-BFGS logistic
regression). The test block (east) lies under a band of cumulus and haze that the training block (west)
mostly misses, so two explanations for the learnt embeddings' deficit there can be measured:

* **haze**: the test pixels are scored in two parts, "clear" and "hazy", split by a haze proxy: B01
  (443 nm, the aerosol band) averaged over 31 x 31 px, above the training block's 90th percentile = hazy;
* **context**: the encoder is run on T x T tiles with no halo, so no pixel's embedding sees more than its
  tile. If the encoder's large receptive field carried scene-specific context that does not transfer,
  small tiles would probe better.

    python training/experiments/brandenburg_shift.py --encoder models/earth-embed-s2-unet-r18s16 \\
        --json docs/results/brandenburg_shift.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

import numpy as np
import torch
import torch.nn.functional as F

from earth_embed import EarthEncoder
from training.evaluation.features import normalise_scene, scene_features
from training.evaluation.probe import FAST_MAX_TRAIN, halves, probe_scores, random_twin, scene_arrays
from training.evaluation.results_file import command_line, write_report

SET = "brandenburg-osm"
HAZE_BAND, HAZE_BOX, HAZE_QUANTILE = "B01", 31, 0.90


def haze_mask(folder: Path, train: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(H, W) True where the B01 box mean exceeds the training block's ``HAZE_QUANTILE``; and that threshold."""
    b01 = scene_arrays(folder, [HAZE_BAND])[0].float()
    proxy = F.avg_pool2d(b01[None], HAZE_BOX, 1, HAZE_BOX // 2, count_include_pad=False)[0, 0]
    thr = float(np.quantile(proxy[train].numpy(), HAZE_QUANTILE))
    return proxy > thr, thr


@torch.no_grad()
def tiled_features(enc: EarthEncoder, x: torch.Tensor, tile: int) -> torch.Tensor:
    """(H*W, D) embeddings of normalised bands x (C, H, W), each ``tile`` x ``tile`` block embedded on its own."""
    _, H, W = x.shape
    ph, pw = (-H) % tile, (-W) % tile
    xp = F.pad(x[None], (0, pw, 0, ph), mode="reflect")[0]
    out = torch.zeros(enc.embed_dim, H + ph, W + pw)
    for r in range(0, H + ph, tile):
        cols = range(0, W + pw, tile)
        emb = enc.eval()(torch.stack([xp[:, r : r + tile, c : c + tile] for c in cols]))
        for i, c in enumerate(cols):
            out[:, r : r + tile, c : c + tile] = emb[i]
    return out[:, :H, :W].flatten(1).T.contiguous()


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    enc = EarthEncoder.from_pretrained(args.encoder).eval()
    folder = Path(args.data_root) / "labelled" / SET
    refl, y, scene = scene_arrays(folder, enc.bands)
    train, test = halves(scene, SET)
    hazy, thr = haze_mask(folder, train)
    labelled = y >= 0
    norm = enc.config.normalization
    parts = {"all": test, "clear": test & ~hazy, "hazy": test & hazy}
    rows: list[dict[str, Any]] = []

    def score(features: str, feats: torch.Tensor, **extra: Any) -> None:
        row: dict[str, Any] = {"features": features, **extra}
        for part, mask in parts.items():
            m = probe_scores(feats, y, train, mask, scene.classes, max_train=args.max_train)
            row[part] = {"miou": m["miou"], "per_class_iou": m["per_class_iou"]}
        rows.append(row)
        print(
            f"{features:12s} {extra}: "
            + " ".join(f"{p} {100 * row[p]['miou']:.1f}" for p in parts)
            + f" (residential {100 * row['all']['per_class_iou']['residential']:.1f})",
            flush=True,
        )

    for src in ("raw", "stack"):
        score(src, scene_features(src, refl, norm.mean, norm.std))
    starts = [("encoder", enc)] + [(f"random init {s}", random_twin(enc, s).eval()) for s in args.random_seeds]
    x = normalise_scene(refl, norm.mean, norm.std)
    for label, model in starts:
        for bn in args.bn:
            score(label, scene_features(model, refl, norm.mean, norm.std, bn=bn), bn=bn, tile=None)
        for tile in args.tiles:
            score(label, tiled_features(model, x, tile), bn="stored", tile=tile)
    return {
        "encoder": args.encoder,
        "haze": {"band": HAZE_BAND, "box_px": HAZE_BOX, "train_quantile": HAZE_QUANTILE, "threshold": thr},
        "labelled_test_px": {p: int((m & labelled).sum()) for p, m in parts.items()},
        "hazy_share": {
            "train": float(hazy[train & labelled].float().mean()),
            "test": float(hazy[test & labelled].float().mean()),
        },
        "max_train": args.max_train,
        "rows": rows,
        "date": _dt.date.today().isoformat(),
        "command": command_line("training/experiments/brandenburg_shift.py", args.argv),
    }


def markdown(result: dict[str, Any]) -> str:
    """The result as one markdown table (mIoU %, all / clear / hazy test pixels, residential IoU)."""
    lines = [
        "| features | BN | tile | test mIoU | clear | hazy | residential (all) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        cells = [f"{100 * r[p]['miou']:.1f}" for p in ("all", "clear", "hazy")]
        res = f"{100 * r['all']['per_class_iou']['residential']:.1f}"
        lines.append(
            f"| {r['features']} | {r.get('bn') or '-'} | {r.get('tile') or 'whole'} | "
            + " | ".join(cells)
            + f" | {res} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", required=True, help="encoder folder or hub id")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--tiles", type=int, nargs="*", default=[32, 64, 256], help="context-limited embedding tiles (px)")
    p.add_argument("--random-seeds", type=int, nargs="*", default=[0])
    p.add_argument("--bn", nargs="+", default=["stored", "adabn"], choices=["stored", "adabn"])
    p.add_argument("--max-train", type=int, default=FAST_MAX_TRAIN, help="probe training pixels")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default="docs/results/brandenburg_shift.json")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    return write_report(args.json, run(args), markdown)


if __name__ == "__main__":
    main()
