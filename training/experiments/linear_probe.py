"""Linear probes on frozen per-pixel features: encoders vs their random-init twins vs raw bands vs a
hand-made stack, each encoder with stored and with re-estimated (AdaBN) BatchNorm, on real labelled scenes.

    python training/experiments/linear_probe.py --encoder models/earth-embed-s2-unet-r18s16
    python training/experiments/linear_probe.py --encoder runs/a/encoder --encoder runs/b/encoder \\
        --sets brandenburg-osm --fast --json runs/arms_probe.json          # score pre-training arms quickly

Options (stable; other scripts and the recipe arms rely on them):
  --encoder PATH       encoder folder or hub id; repeat to compare several in one table
  --sets NAME ...      labelled folders under <data-root>/labelled (default: all three)
  --json OUT           rows (per-class IoU included) + markdown tables (default docs/results/linear_probe.json)
  --md OUT             also write the markdown tables to OUT
  --fast               20 000 probe pixels, no sub-stack ablation rows (a few times quicker on brandenburg)
  --max-train N        probe training pixels (subsampled; default all)
  --random-seeds S ... random-init twins per encoder (default 0 1 2; none: pass --random-seeds with no value)
  --bn MODE ...        stored and/or adabn (default both)
  --with-stack         also each encoder + the hand-made stack in one probe: does the embedding add to the bar?

Each labelled folder (per-band ``B*.tif`` + ``labels.tif`` + ``classes.json``) is split in two: the
probe (standardised features, multinomial logistic regression by L-BFGS, ``training.evaluation.probe``) trains
on the west half's labelled pixels and is scored on the east half (mIoU over the classes present,
per-class IoU, pixel accuracy). For ``brandenburg-osm`` the halves are the label-efficiency split's
training and test blocks. Features (``training.evaluation.features``): each encoder's embeddings with its stored
BatchNorm statistics and with AdaBN (statistics re-estimated on unlabelled windows of the target
scene; no labels read), the same for ``--random-seeds`` random-init twins (same architecture and
normalisation), the normalised raw bands, and the hand-made stack (bands + box means 3/7/15 px +
local std 5/15 px); without ``--fast`` also the two halves of the stack (raw + means, raw + std).
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

import numpy as np
import torch

from earth_embed import EarthEncoder
from training.evaluation.features import BN_MODES, scene_features
from training.evaluation.probe import DATASETS, FAST_MAX_TRAIN, halves, probe_scores, random_twin, scene_arrays
from training.evaluation.results_file import command_line, write_results

HANDMADE_ROWS = {
    "raw": "raw bands",
    "stack": "hand-made stack",
    "raw+means": "raw + box means",
    "raw+std": "raw + local std",
}
#: ``--with-stack`` rows: the embedding concatenated with the hand-made stack, one probe on both.
WITH_STACK = "encoder + hand-made stack"


def _row(name: str, label: str, encoder: str | None, bn: str | None, seed: int | None, m: dict, t0: float) -> dict:
    return {
        "dataset": name,
        "features": label,
        "encoder": encoder,
        "bn": bn,
        "seed": seed,
        "miou": m["miou"],
        "pixel_accuracy": m["pixel_accuracy"],
        "per_class_iou": m["per_class_iou"],
        "classes_scored": m["classes_scored"],
        "n_train_pixels": m["n_train_pixels"],
        "n_test_pixels": m["n_test_pixels"],
        "seconds": round(time.time() - t0, 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads) if args.threads else None
    encoders = {str(p): EarthEncoder.from_pretrained(p).eval() for p in args.encoder}
    first = next(iter(encoders.values()))
    norm = first.config.normalization
    handmade = ["raw", "stack"] + ([] if args.fast else ["raw+means", "raw+std"])
    rows: list[dict[str, Any]] = []

    def log(r: dict) -> None:
        rows.append(r)
        who = r["features"] + (f" {Path(r['encoder']).name}" if r["encoder"] else "")
        extra = f" bn={r['bn']}" if r["bn"] else ""
        extra += f" seed={r['seed']}" if r["seed"] is not None else ""
        print(
            f"{r['dataset']:17s} {who:45s}{extra:22s} mIoU {100 * r['miou']:5.1f}  acc {100 * r['pixel_accuracy']:5.1f}",
            flush=True,
        )

    for name in args.sets:
        refl, y, scene = scene_arrays(Path(args.data_root) / "labelled" / name, first.bands)
        fit, score = halves(scene, name)
        scored = {"y": y, "train": fit, "test": score, "classes": scene.classes, "max_train": args.max_train}
        for src in handmade:
            t0 = time.time()
            m = probe_scores(scene_features(src, refl, norm.mean, norm.std), **scored)
            log(_row(name, HANDMADE_ROWS[src], None, None, None, m, t0))
        for path, enc in encoders.items():
            n = enc.config.normalization
            x = (
                refl
                if enc.bands == first.bands
                else scene_arrays(Path(args.data_root) / "labelled" / name, enc.bands)[0]
            )
            starts = [("encoder", None, enc)] + [("random init", s, random_twin(enc, s)) for s in args.random_seeds]
            stack = scene_features("stack", x, n.mean, n.std) if args.with_stack else None
            for label, seed, model in starts:
                for bn in args.bn:
                    t0 = time.time()
                    feats = scene_features(model, x, n.mean, n.std, bn=bn)
                    log(_row(name, label, path, bn, seed, probe_scores(feats, **scored), t0))
                    if stack is not None and seed is None:  # does the embedding add anything to the bar?
                        t0 = time.time()
                        m = probe_scores(torch.cat([feats, stack], 1), **scored)
                        log(_row(name, WITH_STACK, path, bn, None, m, t0))
    result = {
        "encoders": list(encoders),
        "sets": list(args.sets),
        "probe": {"max_train": args.max_train, "random_seeds": list(args.random_seeds), "bn": list(args.bn)},
        "rows": rows,
        "date": _dt.date.today().isoformat(),
        "command": command_line("training/experiments/linear_probe.py", args.argv),
    }
    result["targets"] = targets(rows)
    result["markdown"] = summary_markdown(result)
    return result


def _mean(rows: list[dict], key: str = "miou") -> tuple[float, float, int]:
    v = 100 * np.array([r[key] for r in rows], dtype=float)
    return float(v.mean()), float(v.std()), len(v)


def _select(rows: list[dict], ds: str, features: str, encoder: str | None = None, bn: str | None = None) -> list[dict]:
    return [
        r
        for r in rows
        if r["dataset"] == ds and r["features"] == features and r["encoder"] == encoder and r["bn"] == bn
    ]


def targets(rows: list[dict]) -> list[dict[str, Any]]:
    """Per set and encoder: is the encoder (stored BN, what ``earth-embed embed`` gives users) >= the
    hand-made stack and >= random init + 2 (the better random-init BN mode)?"""
    out = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        stack = _select(rows, ds, "hand-made stack")
        for enc in dict.fromkeys(r["encoder"] for r in rows if r["features"] == "encoder" and r["dataset"] == ds):
            mine = _select(rows, ds, "encoder", enc, "stored")
            rand = [
                _mean(_select(rows, ds, "random init", enc, bn))[0]
                for bn in BN_MODES
                if _select(rows, ds, "random init", enc, bn)
            ]
            if not mine:
                continue
            e = _mean(mine)[0]
            # one decimal, as the tables print them (rounding twice printed 20.4 beside a table's 20.5)
            t: dict[str, Any] = {"dataset": ds, "encoder": enc, "encoder_miou": round(e, 1)}
            if stack:
                stack_m = _mean(stack)[0]
                t["stack_miou"], t["beats_stack"] = round(stack_m, 1), bool(e >= stack_m)
            hand = [_mean(_select(rows, ds, lab))[0] for lab in HANDMADE_ROWS.values() if _select(rows, ds, lab)]
            if hand:
                t["best_handmade_miou"] = round(max(hand), 1)
                t["beats_best_handmade"] = bool(e >= max(hand))
            if rand:
                t["random_miou"] = round(max(rand), 1)
                t["beats_random_by_2"] = bool(e >= max(rand) + 2)
            out.append(t)
    return out


def summary_markdown(result: dict[str, Any]) -> str:
    """Per set: one table (mIoU, accuracy, per-class IoU; random init as mean +- std over seeds), then the targets."""
    rows, out = result["rows"], []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        classes = next(r["classes_scored"] for r in rows if r["dataset"] == ds)
        first = next(r for r in rows if r["dataset"] == ds)
        out += [
            f"**{ds}** (probe fit on {first['n_train_pixels']} px, scored on {first['n_test_pixels']} px)",
            "",
            "| features | BN | mIoU (%) | accuracy (%) | " + " | ".join(classes) + " |",
            "|---|---|---|---|" + "---|" * len(classes),
        ]
        groups: list[tuple[str, str | None, str | None]] = [(lab, None, None) for lab in HANDMADE_ROWS.values()]
        for enc in result.get("encoders", []):
            groups += [(feat, enc, bn) for feat in ("encoder", WITH_STACK, "random init") for bn in BN_MODES]
        for feat, enc, bn in groups:
            rs = _select(rows, ds, feat, enc, bn)
            if not rs:
                continue
            mi, ms, n = _mean(rs)
            acc = _mean(rs, "pixel_accuracy")[0]
            label = feat if enc is None else f"{feat} `{enc}`" + (f" (mean of {n})" if n > 1 else "")
            per = []
            for c in classes:
                v = [r["per_class_iou"][c] for r in rs if r["per_class_iou"][c] is not None]
                per.append(f"{100 * np.mean(v):.1f}" if v else "-")
            pm = f" +- {ms:.1f}" if n > 1 else ""
            out.append(f"| {label} | {bn or '-'} | {mi:.1f}{pm} | {acc:.1f} | " + " | ".join(per) + " |")
        out.append("")
    for t in result.get("targets", []):
        checks = []  # only the comparisons this run measured (no random-init rows: no random-init target)
        if "stack_miou" in t:
            checks.append(f">= hand-made stack ({t['stack_miou']:.1f}) **{'yes' if t['beats_stack'] else 'no'}**")
        if "random_miou" in t:
            checks.append(
                f">= random init + 2 ({t['random_miou']:.1f} + 2) **{'yes' if t['beats_random_by_2'] else 'no'}**"
            )
        if "best_handmade_miou" in t:
            checks.append(
                f">= every hand-made row ({t['best_handmade_miou']:.1f}) {'yes' if t['beats_best_handmade'] else 'no'}"
            )
        out.append(f"- {t['dataset']}, `{t['encoder']}` (stored BN) {t['encoder_miou']:.1f}: " + "; ".join(checks))
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", action="append", required=True, help="encoder folder or hub id (repeatable)")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--sets", "--datasets", dest="sets", nargs="+", default=list(DATASETS))
    p.add_argument("--random-seeds", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--bn", nargs="+", default=list(BN_MODES), choices=BN_MODES)
    p.add_argument("--max-train", type=int, default=None, help="probe training pixels (default all)")
    p.add_argument("--fast", action="store_true", help=f"--max-train {FAST_MAX_TRAIN}, no sub-stack rows")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--with-stack",
        action="store_true",
        help="also probe each encoder's embedding concatenated with the hand-made stack (what it adds to the bar)",
    )
    p.add_argument("--json", "--out", dest="json", default="docs/results/linear_probe.json")
    p.add_argument("--md", default=None, help="also write the markdown tables here")
    args = p.parse_args(argv)
    if args.fast and args.max_train is None:
        args.max_train = FAST_MAX_TRAIN
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    return write_results(args.json, run(args), args.md)


if __name__ == "__main__":
    main()
