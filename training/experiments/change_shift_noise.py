"""The self-shift test: how much of a change score is pure misregistration, per feature source.

    python training/experiments/change_shift_noise.py --data-root ../shared/data

For each city of ``labelled/oscd-change``, date 1 is compared with itself moved along x: by 1 px (whole pixels,
no resampling: columns 0..W-2 against 1..W-1) and by 0.5 px (linear resampling at x + 0.25 against x + 0.75, so
both sides are smoothed alike). No ground changed; only the registration did. The real pair (date 1 against
date 2) is cropped to the same columns. Every source (the encoder, its random-init twin, the raw bands, the
hand-made stack: ``change_detection.features``) is scored by ``change_scores.score_map`` with the statistics
fitted on the real pair (so the shift is judged on the real pair's scale), except the whitened scores' mean
difference, which is the shifted pair's own (``ScoreStats.recentred``: the real pair's mean is the two dates'
radiometric offset, which a pair of one date does not have). Per city, source, score and shift:

* ``shift_over_unchanged``: median pure-shift score over the real pair's median, on unchanged ground (labels 0),
  for all pixels, built-up or bare ground (date-1 NDVI < 0.25 and NDWI < 0) and vegetation (NDVI > 0.5);
* ``changed_over_shift``: on changed ground, the real pair's median over the pure-shift median.

Writes ``--json`` (rows and means over cities) and prints the means.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

import numpy as np
import torch

from earth_embed import EarthEncoder
from earth_embed.apps.change_scores import DEFAULT_SCORE, ScoreStats, prepare, score_map
from training.evaluation.oscd_change import CITIES, as_maps, city_arrays, features, shifted
from training.evaluation.probe import random_twin
from training.evaluation.results_file import RunClock, write_json

CLASSES = ("all", "built-up or bare", "vegetation")


def pixel_classes(dn: np.ndarray, bands: list[str], y: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean (H, W) masks of the classes (by date 1's NDVI and NDWI)."""
    b = {name: dn[bands.index(name)].astype(np.float64) for name in ("B03", "B04", "B08")}
    ndvi = (b["B08"] - b["B04"]) / np.maximum(b["B08"] + b["B04"], 1e-6)
    ndwi = (b["B03"] - b["B08"]) / np.maximum(b["B03"] + b["B08"], 1e-6)
    return {"all": np.ones_like(y, bool), "built-up or bare": (ndvi < 0.25) & (ndwi < 0), "vegetation": ndvi > 0.5}


def source_maps(src: Any, enc: EarthEncoder, images: dict[str, np.ndarray], hw: tuple[int, int]) -> dict:
    """(F, H, W) features of each named DN image."""
    with torch.no_grad():
        return {k: as_maps(features(src, dn, enc), hw) for k, dn in images.items()}


def city_rows(root: Path, city: str, sources: dict[str, Any], enc: EarthEncoder, scores: list[str]) -> list[dict]:
    dn1, dn2, y, _ = city_arrays(root, city, enc.bands)
    pairs = shifted(dn1)
    images = {
        "d1": dn1[:, :, :-1],
        "d2": dn2[:, :, :-1],
        **{f"{k} {i}": p[i] for k, p in pairs.items() for i in (0, 1)},
    }
    y = y[:, :-1]
    hw = y.shape
    classes = pixel_classes(images["d1"], enc.bands, y)
    rows = []
    for name, src in sources.items():
        f = source_maps(src, enc, images, hw)
        for score in scores:
            stats = ScoreStats(score, f["d1"].shape[0])
            stats.add(*prepare(f["d1"], f["d2"], score))
            real = score_map(f["d1"], f["d2"], score, stats=stats)
            for shift in pairs:
                a, b = f[f"{shift} 0"], f[f"{shift} 1"]
                s = score_map(a, b, score, stats=stats.recentred(*prepare(a, b, score)))
                ok = np.isfinite(s) & np.isfinite(real)
                row: dict[str, Any] = {"city": city, "source": name, "score": score, "shift": shift}
                for cls, m in classes.items():
                    keep = ok & m & (y == 0)
                    row[f"shift_over_unchanged {cls}"] = float(np.median(s[keep]) / np.median(real[keep]))
                    row[f"pixels {cls}"] = int(keep.sum())
                changed = ok & (y == 1)
                row["changed_over_shift"] = float(np.median(real[changed]) / np.median(s[changed]))
                rows.append(row)
        print(f"{city} {name}: done", flush=True)
    return rows


def means(rows: list[dict], keys: list[str]) -> list[dict]:
    """Mean, min and max over cities of each (source, score, shift)."""
    out = []
    for combo in dict.fromkeys((r["source"], r["score"], r["shift"]) for r in rows):
        sel = [r for r in rows if (r["source"], r["score"], r["shift"]) == combo]
        entry: dict[str, Any] = dict(zip(("source", "score", "shift"), combo))
        for k in keys:
            v = [r[k] for r in sel if np.isfinite(r[k])]
            entry[k] = {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}
        out.append(entry)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    clock = RunClock()
    enc = EarthEncoder.from_pretrained(args.encoder).eval()
    sources: dict[str, Any] = {"encoder": enc}
    for seed in args.random_seeds:
        sources[f"random init {seed}"] = random_twin(enc, seed)
    sources |= {"raw bands": "raw", "hand-made stack": "stack"}
    scores = list(dict.fromkeys(["cva", DEFAULT_SCORE]))
    rows = []
    for city in args.cities:
        rows += city_rows(Path(args.data_root), city, sources, enc, scores)
    keys = [f"shift_over_unchanged {c}" for c in CLASSES] + ["changed_over_shift"]
    summary = means(rows, keys)
    for e in summary:
        print(f"{e['source']:18s} {e['score']:14s} {e['shift']:7s} "
              + "  ".join(f"{k.replace('shift_over_unchanged ', 'shift/real ')} {e[k]['mean']:.2f} "
                          f"[{e[k]['min']:.2f}-{e[k]['max']:.2f}]" for k in keys))  # fmt: skip
    return {
        "encoder": args.encoder, "cities": list(args.cities), "random_seeds": list(args.random_seeds),
        "scores": scores, "rows": rows, "means": summary,
        **clock.meta(args.threads, "training/experiments/change_shift_noise.py", args.argv),
    }  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default="models/earth-embed-s2-unet-r18s16", help="encoder folder or hub id")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--cities", nargs="+", default=list(CITIES))
    p.add_argument("--random-seeds", type=int, nargs="*", default=[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default="docs/results/change_shift_noise.json")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    result = run(args)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
