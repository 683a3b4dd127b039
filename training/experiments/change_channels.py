"""Which channels carry the embedding's change vector: the texture layer's or the rest?

    python training/experiments/change_channels.py --data-root ../shared/data

The released encoder's embedding is a 1x1 head (linear) on ``[decoded, std5(decoded), std15(decoded)]``: the
decoder's features and the texture layer's local standard deviations over 5 and 15 px. So the change vector of a
pixel splits exactly into one term per block, ``W_g (h1_g - h2_g)``. On each city of ``labelled/oscd-change``
the terms are standardised as CVA is (by the embedding's pooled standard deviation over both dates), and per
block are measured: its share of the squared CVA norm (mean over pixels; the cross terms make the shares not
sum to 1) on changed and unchanged ground of the real pair, and on date 1 against itself moved by 1 px (pure
misregistration); and the AP / AUROC of the block's term norm alone as a change score. Writes ``--json``.
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
from earth_embed.apps.change_scores import pooled_std
from training.evaluation.features import head_input
from training.evaluation.oscd_change import CITIES, city_arrays, metrics
from training.evaluation.probe import random_twin
from training.evaluation.results_file import RunClock, write_json


def blocks(enc: EarthEncoder) -> dict[str, slice]:
    """Head-input channel ranges: the decoder's features, then one block per texture window."""
    windows = list(enc.config.local_stats or [])
    width = enc.head.in_channels // (1 + len(windows))
    out = {"decoded": slice(0, width)}
    out |= {f"std{k}": slice((i + 1) * width, (i + 2) * width) for i, k in enumerate(windows)}
    return out


def reflectance(dn: np.ndarray, enc: EarthEncoder) -> torch.Tensor:
    norm = enc.config.normalization
    return (torch.from_numpy(dn) + norm.dn_offset) / norm.dn_scale


def city_rows(root: Path, city: str, enc: EarthEncoder, name: str) -> list[dict[str, Any]]:
    dn1, dn2, y, _ = city_arrays(root, city, enc.bands)
    dn1, dn2, y = dn1[:, :, :-1], dn2[:, :, :-1], y[:, :-1].ravel()
    moved = np.ascontiguousarray(np.concatenate([dn1[:, :, :1], dn1[:, :, :-1]], axis=2))  # date 1 moved by 1 px
    w = enc.head.weight.detach()[:, :, 0, 0].numpy().astype(np.float64)
    h = {k: head_input(enc, reflectance(dn, enc)).numpy() for k, dn in (("d1", dn1), ("d2", dn2), ("moved", moved))}
    valid = ~((dn1 == 0).any(0) | (dn2 == 0).any(0)).ravel()
    valid &= np.isfinite(h["d1"]).all(1) & np.isfinite(h["d2"]).all(1)
    valid.reshape(dn1.shape[1:])[:, 0] = False  # the moved image's first column repeats its neighbour
    e1, e2 = h["d1"] @ w.T, h["d2"] @ w.T
    sd = pooled_std(e1[valid], e2[valid]).astype(np.float64)
    groups = {"real": ("d1", "d2"), "1 px shift": ("d1", "moved")}
    rows = []
    for pair, (ka, kb) in groups.items():
        diff = h[ka][valid] - h[kb][valid]
        total = np.einsum("nd,nd->n", *(2 * [diff @ w.T / sd]))
        for block, sl in blocks(enc).items():
            term = diff[:, sl] @ w[:, sl].T / sd
            sq = np.einsum("nd,nd->n", term, term)
            row: dict[str, Any] = {"city": city, "encoder": name, "pair": pair, "block": block}
            if pair == "real":
                for label, m in (("changed", y[valid] == 1), ("unchanged", y[valid] == 0)):
                    row[f"share {label}"] = float(sq[m].mean() / total[m].mean())
                score = np.full(y.shape, np.nan, np.float32)
                score[valid] = np.sqrt(sq)
                row |= {k: v for k, v in metrics(score, y).items() if k in ("ap", "auroc")}
            else:
                row["share unchanged"] = float(sq[y[valid] == 0].mean() / total[y[valid] == 0].mean())
            rows.append(row)
    print(f"{city} {name}: done", flush=True)
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    clock = RunClock()
    enc = EarthEncoder.from_pretrained(args.encoder).eval()
    encoders = {"encoder": enc} | {f"random init {s}": random_twin(enc, s).eval() for s in args.random_seeds}
    rows = []
    for city in args.cities:
        for name, e in encoders.items():
            with torch.no_grad():
                rows += city_rows(Path(args.data_root), city, e, name)
    summary = []
    for combo in dict.fromkeys((r["encoder"], r["pair"], r["block"]) for r in rows):
        sel = [r for r in rows if (r["encoder"], r["pair"], r["block"]) == combo]
        keys = [k for k in sel[0] if k not in ("city", "encoder", "pair", "block")]
        summary.append(
            dict(zip(("encoder", "pair", "block"), combo)) | {k: float(np.mean([r[k] for r in sel])) for k in keys}
        )
        print("  ".join(f"{v}" if isinstance(v, str) else f"{k} {v:.3f}" for k, v in summary[-1].items()))
    return {
        "encoder": args.encoder, "cities": list(args.cities), "random_seeds": list(args.random_seeds), "rows": rows,
        "means": summary, **clock.meta(args.threads, "training/experiments/change_channels.py", args.argv),
    }  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default="models/earth-embed-s2-unet-r18s16", help="encoder folder or hub id")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--cities", nargs="+", default=list(CITIES))
    p.add_argument("--random-seeds", type=int, nargs="*", default=[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default="docs/results/change_channels.json")
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
