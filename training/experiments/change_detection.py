"""Urban change on the 10 labelled OSCD city pairs: zero-shot and few-shot change scores, embeddings vs raw bands.

    python training/experiments/change_detection.py --encoder models/earth-embed-s2-unet-r18s16

For each city of ``labelled/oscd-change`` (labels on the earlier date's 10 m grid): the earlier date
(``unlabelled/oscd-date1/<city>``) and the later one (``unlabelled/oscd/<city>``, resampled onto the earlier
grid by ``earth_embed.apps.change_inputs.read_scene_on_grid`` where the grids differ, as ``earth-embed change``
does) give per-pixel features for each source, kept in memory as float32:

* the encoder's embeddings (stored BatchNorm, what ``earth-embed embed`` writes) and its random-init twins
  (same architecture and normalisation, ``--random-seeds``);
* the normalised raw bands, and the hand-made stack (bands + box means 3/7/15 px + local std 5/15 px,
  ``training.features``).

Scores are the library's (``earth_embed.apps.change_scores``): zero-shot ``score_map`` 1 - cosine (encoders) and
CVA (all sources; every scorer of ``score_map`` is compared on all three sources by ``change_defaults.py``); few-shot, the head of ``earth-embed change --labels`` (logistic regression on [|a - b|, a, b]) fitted on
``--shots`` random labelled pixels per class per city (``--draws`` draws, the same pixels for every source) and
scored on the city's other pixels. Every score map is evaluated as is and after a ``--smooth`` box mean
(``change_scores.smooth_map``). Metrics of the change class over the valid pixels: average precision (AP),
AUROC and the best F1 over thresholds. Prints the tables; writes ``--json`` and ``--md``.
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
from earth_embed.apps.change_scores import change_probability, fit_change_head, score_map, smooth_map
from training.evaluation.change_report import markdown, targets
from training.evaluation.oscd_change import CITIES, as_maps, city_arrays, features, metrics
from training.evaluation.probe import random_twin
from training.evaluation.results_file import RunClock, write_results


def zero_shot(
    f1: np.ndarray, f2: np.ndarray, valid: np.ndarray, kinds: tuple[str, ...], hw: tuple[int, int]
) -> dict[str, np.ndarray]:
    """Flat score maps (H*W,) by kind (a score of ``change_scores.score_map``, applied to the (F, H, W) maps of
    the rows ``f1``, ``f2``), NaN where either date is nodata."""
    maps = [as_maps(np.where(valid[:, None], f, np.nan).astype(np.float32), hw) for f in (f1, f2)]
    return {kind: score_map(maps[0], maps[1], kind).ravel() for kind in kinds}


def draws(y: np.ndarray, valid: np.ndarray, shots: int, n_draws: int, seed: int) -> list[np.ndarray]:
    """``n_draws`` sets of pixel indices: ``shots`` change and ``shots`` no-change valid pixels each."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(valid & (y == 1)), np.flatnonzero(valid & (y == 0))
    return [np.concatenate([rng.choice(pos, shots, replace=False), rng.choice(neg, shots, replace=False)])
            for _ in range(n_draws)]  # fmt: skip


def few_shot(
    f1: np.ndarray, f2: np.ndarray, y: np.ndarray, valid: np.ndarray, idx: np.ndarray, seed: int
) -> np.ndarray:
    """P(change) of the valid pixels outside the draw ``idx`` from the head fitted on ``idx`` (NaN elsewhere)."""
    head = fit_change_head(f1[idx], f2[idx], y[idx], seed=seed)
    test = valid.copy()
    test[idx] = False
    s = np.full(valid.shape, np.nan, np.float32)
    for lo in range(0, len(s), 200_000):
        part = np.flatnonzero(test[lo : lo + 200_000]) + lo
        if part.size:
            s[part] = change_probability(head, f1[part], f2[part])
    return s


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    clock = RunClock()
    root = Path(args.data_root)
    enc = EarthEncoder.from_pretrained(args.encoder).eval()
    twins = {seed: random_twin(enc, seed) for seed in args.random_seeds}
    rows: list[dict[str, Any]] = []

    def log(city: str, name: str, shots: int | None, draw: int | None, score: np.ndarray, y: np.ndarray, hw: tuple):
        for k in (0, *args.smooth):
            s = smooth_map(score.reshape(hw), k).ravel() if k > 1 else score
            m = metrics(s, y)
            rows.append({"city": city, "score": name, "smooth": k, "shots": shots, "draw": draw, **m})
        if draw in (None, 0):
            r = rows[-1 - len(args.smooth)]
            print(f"{city:9s} {name:34s} AP {100 * r['ap']:5.1f} AUROC {100 * r['auroc']:5.1f} F1 {100 * r['f1']:5.1f}"
                  f"  ({time.time() - clock.wall:.0f} s)", flush=True)  # fmt: skip

    for ci, city in enumerate(args.cities):
        dn1, dn2, ylab, grid = city_arrays(root, city, enc.bands)
        hw = (grid.height, grid.width)
        y = ylab.ravel()
        feats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name, src in (("encoder", enc), ("raw bands", "raw"), ("hand-made stack", "stack")):
            with torch.no_grad():
                rt = args.runtime if src is enc else "torch"
                feats[name] = (features(src, dn1, enc, rt), features(src, dn2, enc, rt))
        valid = np.isfinite(feats["encoder"][0]).all(1) & np.isfinite(feats["encoder"][1]).all(1)
        for name, (f1, f2) in feats.items():
            kinds = ("cos", "cva") if name == "encoder" else ("cva",)
            for kind, s in zero_shot(f1, f2, valid, kinds, hw).items():
                log(city, f"{name} {kind}", None, None, s, y, hw)
        for seed, twin in twins.items():
            with torch.no_grad():
                t1, t2 = features(twin, dn1, enc), features(twin, dn2, enc)
            for kind, s in zero_shot(t1, t2, valid, ("cos", "cva"), hw).items():
                log(city, f"random init {kind}", None, seed, s, y, hw)
        for shots in args.shots:
            for d, idx in enumerate(draws(y, valid, shots, args.draws, seed=1000 * ci + shots)):
                for name, (f1, f2) in feats.items():
                    log(city, f"{name} fitted", shots, d, few_shot(f1, f2, y, valid, idx, seed=d), y, hw)
    result = {
        "encoder": args.encoder,
        "cities": list(args.cities),
        "random_seeds": list(args.random_seeds),
        "shots": list(args.shots),
        "draws": args.draws,
        "smooth": [0, *args.smooth],
        "rows": rows,
        "runtime": args.runtime,
        **clock.meta(args.threads, "training/experiments/change_detection.py", args.argv),
    }
    result["targets"] = targets(result)
    result["markdown"] = markdown(result)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default="models/earth-embed-s2-unet-r18s16", help="encoder folder or hub id")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--cities", nargs="+", default=list(CITIES))
    p.add_argument("--random-seeds", type=int, nargs="*", default=[0, 1])
    p.add_argument("--shots", type=int, nargs="*", default=[20, 100], help="labelled pixels per class per city")
    p.add_argument("--draws", type=int, default=5, help="random draws of the labelled pixels per city")
    p.add_argument("--smooth", type=int, nargs="*", default=[5], help="box-mean windows besides none (odd px)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runtime", default="torch", choices=["torch", "onnx", "onnx-int8"], help="the encoder's runtime")
    p.add_argument("--json", default="docs/results/change_detection.json")
    p.add_argument("--md", default="docs/results/change_detection.md")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    return write_results(args.json, run(args), args.md)


if __name__ == "__main__":
    main()
