"""A change mask that marks about the true change share: threshold rules with a noise floor, chosen on the 10
labelled OSCD cities leave-one-city-out under a limit on what they mark where nothing changed.

    python training/experiments/change_floor.py --data-root ../shared/data

Rules (written before the run): ``docs/results/change_floor.md``. Per city, the default scorer
(``change_scores.DEFAULT_SCORE``) of the encoder's features on the real pair and on date 1 against itself moved by
0.5 px (``oscd_change.shifted``); every mask candidate (smoothing, threshold rule with or without a noise
floor, minimum area counted on the patch or on its unsmoothed support) gives an F1 and a marked share. Four real
short-term pairs without urban change (SSL4EO 0000200, Slovenia) are measured, never selected on. Writes
``--json`` and ``--md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

import numpy as np
import torch

from earth_embed import EarthEncoder
from earth_embed.apps.change_inputs import read_scene_on_grid, scene_grid
from earth_embed.apps.change_mask import auto_threshold, component_sizes
from earth_embed.apps.change_scores import DEFAULT_SCORE, score_map, smooth_map
from training.evaluation.change_floor_report import markdown
from training.evaluation.oscd_change import CITIES, as_maps, city_arrays, features, mask_f1, shifted
from training.evaluation.results_file import command_line, write_json

SMOOTH = (0, 3, 5)
SHARES = (1, 2, 3, 5, 8)
ZS = (3, 4, 6, 8, 12, 16)
RATIOS = (1.5, 2, 2.5, 3, 4)
MIN_PX = (4, 8, 16, 32)
#: The most a candidate may mark, on average, of the training cities' self-shift pairs (%).
NO_CHANGE_LIMIT = 0.5
#: The previous default (docs/results/change_defaults.md).
PREVIOUS = "smooth 3, share 5, min 16 px (patch)"
#: Real short-term pairs without urban change (paths under the data root).
EXTERNAL = {
    "SSL4EO 0000200 (Punjab), 2020-06-04 / 2020-08-23": (
        "unlabelled/ssl4eo-s12/0000200/20200604_L1C",
        "unlabelled/ssl4eo-s12/0000200/20200823_L1C",
    ),
    **{
        f"Slovenia, {a} / {b}": (
            f"labelled/slovenia-eolearn/dates/S2L1C_{a.replace('-', '')}.tif",
            f"labelled/slovenia-eolearn/dates/S2L1C_{b.replace('-', '')}.tif",
        )
        for a, b in (("2015-07-11", "2015-08-30"), ("2015-08-30", "2015-09-09"), ("2015-07-11", "2015-09-09"))
    },
}


def threshold_rules() -> dict[str, tuple[str, float, tuple[str, float] | None]]:
    """Candidate threshold rules by name: (rule, parameter, floor) of ``change_mask.auto_threshold``."""
    out: dict[str, tuple[str, float, tuple[str, float] | None]] = {f"share {q:g}": ("share", q, None) for q in SHARES}
    out |= {f"robust-z {k:g}": ("robust-z", k, None) for k in ZS}
    out |= {f"share {q:g} floor z {k:g}": ("share", q, ("robust-z", k)) for q in SHARES for k in ZS}
    out |= {f"share {q:g} floor {r:g} x median": ("share", q, ("median-ratio", r)) for q in SHARES for r in RATIOS}
    return out


def mask_table(score: np.ndarray, y: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Marked share, patch count (and F1 of the change class if ``y`` is given) of every mask candidate."""
    out = {}
    rules = threshold_rules()
    for k in SMOOTH:
        s = smooth_map(score, k)
        valid = np.isfinite(s)
        v = s[valid]
        for name, (rule, param, floor) in rules.items():
            thr = auto_threshold(v, rule, param, floor)
            changed = valid & (np.where(valid, s, -np.inf) > thr)
            supports = {"patch": None}
            if k > 1:
                supports["unsmoothed"] = np.isfinite(score) & (np.where(np.isfinite(score), score, -np.inf) > thr)
            for support, sup in supports.items():
                labels, sizes = component_sizes(changed, sup)
                for min_px in MIN_PX:
                    keep = sizes >= min_px
                    keep[0] = False
                    m = keep[labels]
                    entry = {"share": float(m[valid].mean()), "patches": int(keep.sum())}
                    if y is not None:
                        entry["f1"] = mask_f1(m, y, valid)
                    out[f"smooth {k}, {name}, min {min_px} px ({support})"] = entry
    return out


def point_changes(score: np.ndarray, k: int = 3, share: float = 5.0, min_px: int = 16, small: int = 4) -> int:
    """Patches the previous default keeps whose unsmoothed support (pixels above its threshold) is under
    ``small`` px."""
    s = smooth_map(score, k)
    valid = np.isfinite(s)
    thr = auto_threshold(s[valid], "share", share)
    changed = valid & (np.where(valid, s, -np.inf) > thr)
    _, sizes = component_sizes(changed)
    _, support = component_sizes(changed, np.isfinite(score) & (np.where(np.isfinite(score), score, -np.inf) > thr))
    return int(((sizes >= min_px) & (support < small))[1:].sum())


def pair_score(enc: EarthEncoder, dn_a: np.ndarray, dn_b: np.ndarray, source: Any = None, score: str = DEFAULT_SCORE):
    """The (H, W) score of two DN images (C, H, W) of one grid, features of ``source`` (default: the encoder)."""
    hw = dn_a.shape[1:]
    with torch.no_grad():
        a = as_maps(features(source or enc, dn_a, enc), hw)
        b = as_maps(features(source or enc, dn_b, enc), hw)
    return score_map(a, b, score)


def select(f1: dict, noise: dict, cities: list[str]) -> dict[str, Any]:
    """Leave-one-city-out: per held-out city, the candidate with the highest mean F1 over the other cities among
    those marking at most NO_CHANGE_LIMIT % of the other cities' self-shift pairs on average."""
    folds = []
    for held in cities:
        train = [c for c in cities if c != held]
        mean_noise = {cand: 100 * float(np.mean([noise[c][cand]["share"] for c in train])) for cand in f1[held]}
        ok = [cand for cand, v in mean_noise.items() if v <= NO_CHANGE_LIMIT]
        if ok:
            pick = max(ok, key=lambda cand: np.mean([f1[c][cand]["f1"] for c in train]))
        else:
            pick = min(mean_noise, key=lambda cand: mean_noise[cand])
        folds.append({
            "held_out": held, "pick": pick, "eligible": len(ok), "train_self_shift_share_pct": mean_noise[pick],
            "held_out_f1": f1[held][pick]["f1"], "held_out_share": f1[held][pick]["share"],
            "held_out_self_shift_share": noise[held][pick]["share"],
        })  # fmt: skip
    counts = Counter(f["pick"] for f in folds)

    def held_mean(cand: str) -> float:
        return float(np.mean([f["held_out_f1"] for f in folds if f["pick"] == cand]))

    default = max(counts, key=lambda cand: (counts[cand], held_mean(str(cand))))
    return {"folds": folds, "counts": dict(counts), "default": default,
            "held_out_mean_f1": float(np.mean([f["held_out_f1"] for f in folds]))}  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    t0, cpu0, load0 = time.time(), time.process_time(), os.getloadavg()[1]
    root = Path(args.data_root)
    enc = EarthEncoder.from_pretrained(args.encoder).eval()
    cities = list(args.cities)
    real, noise, baseline, true_share, points = {}, {}, {}, {}, {}
    for city in cities:
        dn1, dn2, y, _ = city_arrays(root, city, enc.bands)
        s = pair_score(enc, dn1, dn2)
        real[city] = mask_table(s, y)
        valid = np.isfinite(s)
        true_share[city] = float(y[valid].mean())
        points[city] = point_changes(s)
        left, right = shifted(dn1)["0.5 px"]
        noise[city] = mask_table(pair_score(enc, left, right))
        cva = pair_score(enc, dn1, dn2, source="raw", score="cva")
        ok = np.isfinite(cva)
        otsu = ok & (np.where(ok, cva, -np.inf) > auto_threshold(cva[ok], "otsu"))
        baseline[city] = {"f1": mask_f1(otsu, y, ok), "share": float(otsu[ok].mean())}
        print(f"{city}: done ({time.time() - t0:.0f} s)", flush=True)
    external = {}
    for name, (pa, pb) in EXTERNAL.items():
        grid = scene_grid(root / pa)
        dn_a, dn_b = read_scene_on_grid(root / pa, enc.bands, grid), read_scene_on_grid(root / pb, enc.bands, grid)
        external[name] = mask_table(pair_score(enc, dn_a, dn_b))
        print(f"{name}: done ({time.time() - t0:.0f} s)", flush=True)
    sel = select(real, noise, cities)
    keep = sorted({sel["default"], PREVIOUS, *sel["counts"]})
    best_free = max(real[cities[0]], key=lambda cand: np.mean([real[c][cand]["f1"] for c in cities]))
    keep = sorted({*keep, best_free})
    result = {
        "encoder": args.encoder, "score": DEFAULT_SCORE, "cities": cities, "selection": sel,
        "no_change_limit_pct": NO_CHANGE_LIMIT, "previous_default": PREVIOUS, "best_f1_without_limit": best_free,
        "candidates": len(real[cities[0]]),
        "tables": {cand: {"cities": {c: real[c][cand] for c in cities}, "self_shift": {c: noise[c][cand] for c in cities},
                          "external": {e: external[e][cand] for e in external}} for cand in keep},
        "true_share": true_share, "point_changes_previous_default": points, "baseline_otsu_raw_cva": baseline,
        "seconds": round(time.time() - t0, 1), "cpu_seconds": round(time.process_time() - cpu0, 1),
        "load_average_5min": [round(load0, 1), round(os.getloadavg()[1], 1)], "threads": args.threads,
        "date": _dt.date.today().isoformat(), "command": command_line("training/experiments/change_floor.py", args.argv),
    }  # fmt: skip
    result["markdown"] = markdown(result)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default="models/earth-embed-s2-unet-r18s16", help="encoder folder or hub id")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--cities", nargs="+", default=list(CITIES))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default="docs/results/change_floor.json")
    p.add_argument("--md", default="", help="also write the tables to this Markdown file")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    result = run(args)
    write_json(args.json, result)
    if args.md:
        Path(args.md).write_text(result["markdown"] + "\n")
    print(result["markdown"])
    return result


if __name__ == "__main__":
    main()
