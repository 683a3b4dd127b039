"""The defaults of ``earth-embed change`` chosen on the 10 labelled OSCD cities, leave-one-city-out.

    python training/experiments/change_defaults.py --data-root ../shared/data

Rules (written before the run): ``docs/results/change_defaults.md``. Per city, both dates' features of the
encoder (stored BatchNorm), the raw bands and the hand-made stack (``change_detection.features``) are scored
by every zero-shot scorer of :func:`earth_embed.apps.change_scores.score_map` (AP, AUROC, best F1, as is and
after a 5 x 5 box mean of the map). Then, leave-one-city-out: the scorer (by the embedding's mean AP), and on
its embedding score map the mask rule (score smoothing, threshold rule of ``apps.change_mask``, minimum
area), by mean change-class F1. Baseline: Otsu's threshold on raw-band CVA. Writes ``--json`` and ``--md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

import numpy as np
import torch

from earth_embed import EarthEncoder
from earth_embed.apps.change_mask import auto_threshold, drop_small
from earth_embed.apps.change_scores import MAP_SCORES, score_map, smooth_map
from training.evaluation.change_defaults_report import markdown
from training.evaluation.change_tables import most_picked
from training.evaluation.oscd_change import CITIES, as_maps, city_arrays, features, mask_f1, metrics
from training.evaluation.results_file import RunClock, write_results

SOURCES = ("encoder", "raw bands", "hand-made stack")
SMOOTH = (0, 3, 5)
RULES = [("otsu", 0.0)] + [("share", q) for q in (0.5, 1, 2, 3, 5)] + [("robust-z", k) for k in (2, 3, 4, 6, 8, 12)]
MIN_PX = (1, 2, 4, 8, 16)


def city_maps(root: Path, city: str, enc: EarthEncoder, scores: tuple[str, ...]) -> tuple[dict, np.ndarray]:
    """{(source, score): (H, W) score map} and the labels (H, W) of one city."""
    dn1, dn2, y, grid = city_arrays(root, city, enc.bands)
    hw = (grid.height, grid.width)
    out = {}
    for name, src in zip(SOURCES, (enc, "raw", "stack")):
        with torch.no_grad():
            a, b = as_maps(features(src, dn1, enc), hw), as_maps(features(src, dn2, enc), hw)
        for score in scores:
            out[(name, score)] = score_map(a, b, score)
        del a, b
    return out, y


def mask_grid(score: np.ndarray, y: np.ndarray) -> dict[str, dict[str, float]]:
    """F1 and marked share of every (smooth, rule, parameter, minimum area) combination on one city."""
    out = {}
    for k in SMOOTH:
        s = smooth_map(score, k) if k > 1 else score
        valid = np.isfinite(s)
        for rule, param in RULES:
            changed = np.where(valid, s, -np.inf) > auto_threshold(s[valid], rule, param)
            for min_px in MIN_PX:
                m = drop_small(changed, min_px)
                key = f"smooth {k}, {rule} {param:g}, min {min_px} px"
                out[key] = {"f1": mask_f1(m, y, valid), "share": float(m[valid].mean())}
    return out


def loco(table: dict[str, dict[str, float]], cities: list[str]) -> dict[str, Any]:
    """Leave-one-city-out picks of the candidate with the highest mean over the other cities; the default is
    the most frequent pick (tie: the higher mean held-out value)."""
    folds = []
    for held in cities:
        train = [c for c in cities if c != held]
        pick = max(table, key=lambda cand: np.mean([table[cand][c] for c in train]))
        folds.append({"held_out": held, "pick": pick, "held_out_value": table[pick][held]})
    counts, default = most_picked(folds, lambda f: f["held_out_value"])
    return {
        "folds": folds, "counts": dict(counts), "default": default,
        "held_out_mean": float(np.mean([f["held_out_value"] for f in folds])),
    }  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    clock = RunClock()
    root = Path(args.data_root)
    enc = EarthEncoder.from_pretrained(args.encoder).eval()
    rows, maps, labels = [], {}, {}
    for city in args.cities:
        cm, y = city_maps(root, city, enc, tuple(args.scores))
        labels[city] = y
        for (source, score), s in cm.items():
            for k in (0, 5):
                m = metrics((smooth_map(s, k) if k else s).ravel(), y.ravel())
                rows.append({"city": city, "source": source, "score": score, "smooth": k, **m})
            if source == "encoder" or (source, score) == ("raw bands", "cva"):
                maps[(city, source, score)] = s
        print(f"{city}: done ({time.time() - clock.wall:.0f} s)", flush=True)
    cities = list(args.cities)
    ap = {sc: {r["city"]: r["ap"] for r in rows if r["source"] == "encoder" and r["score"] == sc and r["smooth"] == 0}
          for sc in args.scores}  # fmt: skip
    scorer = loco(ap, cities)
    grids = {c: mask_grid(maps[(c, "encoder", scorer["default"])], labels[c]) for c in cities}
    f1 = {cand: {c: grids[c][cand]["f1"] for c in cities} for cand in grids[cities[0]]}
    mask = loco(f1, cities)
    for fold in mask["folds"]:
        fold["held_out_share"] = grids[fold["held_out"]][fold["pick"]]["share"]
    baseline = {}
    for c in cities:
        s, y = maps[(c, "raw bands", "cva")], labels[c]
        valid = np.isfinite(s)
        changed = np.where(valid, s, -np.inf) > auto_threshold(s[valid], "otsu")
        baseline[c] = {"f1": mask_f1(changed, y, valid), "share": float(changed[valid].mean())}
    result = {
        "encoder": args.encoder, "cities": cities, "scores": list(args.scores), "rows": rows,
        "scorer_selection": scorer, "mask_selection": mask,
        "mask_default_per_city": {c: grids[c][mask["default"]] for c in cities},
        "true_share": {c: float(labels[c][np.isfinite(maps[(c, "encoder", scorer["default"])])].mean()) for c in cities},
        "baseline_otsu_raw_cva": baseline,
        **clock.meta(args.threads, "training/experiments/change_defaults.py", args.argv),
    }  # fmt: skip
    result["markdown"] = markdown(result)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default="models/earth-embed-s2-unet-r18s16", help="encoder folder or hub id")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--cities", nargs="+", default=list(CITIES))
    p.add_argument("--scores", nargs="+", default=list(MAP_SCORES), choices=MAP_SCORES)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default="docs/results/change_defaults.json")
    p.add_argument("--md", default="", help="also write the tables to this Markdown file")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    return write_results(args.json, run(args), args.md)


if __name__ == "__main__":
    main()
