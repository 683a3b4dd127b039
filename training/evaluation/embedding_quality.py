"""Collapse check of a dense encoder on real pixels, beside random-init encoders of the same architecture.

    python -m training.evaluation.embedding_quality --encoder runs/cpu/encoder --out runs/cpu/embedding_quality.json

For ``--windows`` real windows drawn from the data config (indices far from any training index) it
embeds every pixel and reports:

* ``mean_cos``: mean cosine similarity between ``--pairs`` random pixel pairs (1.0 = collapsed to one
  direction; unrelated directions give ~0);
* ``effective_rank``: exp(entropy of the normalised eigenvalues of the embedding covariance)
  (Roy & Vetterli 2007): 1 = all variance on one axis, D = spread evenly over D axes;
* ``top1_var``: share of the variance on the first principal axis.

The random-init rows use ``--random-seeds`` fresh initialisations (same config and normalisation).

Within-scene collapse (issue 10, cause 8) is measured on whole labelled scenes instead:

    python -m training.evaluation.embedding_quality --encoder runs/cpu/encoder --scenes brandenburg-osm slovenia-eolearn

embeds every pixel of each scene (one forward pass) and reports :func:`scene_rank`: the effective
rank of the centred (pixels x D) embedding matrix, exp(entropy of its normalised singular values)
(Roy & Vetterli 2007), how much of each normalised input band a linear map recovers (R^2), and the
same R^2 for each group of the hand-made stack (the bands, box means over 3/7/15 px, local standard
deviations over 5/15 px), averaged over the bands: how much of the bar's texture the embedding carries.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from earth_embed import EarthEncoder
from training.data.checkpoints import encoder_from_checkpoint, is_checkpoint, run_config
from training.data.unlabelled import UnlabelledWindows, load_data_config
from training.evaluation.features import BOX_MEAN_SIZES, LOCAL_STD_SIZES, STACK_FEATURES, handmade_stack
from training.evaluation.results_file import write_json

REPO = Path(__file__).resolve().parents[2]


def embedding_stats(emb: torch.Tensor, pairs: int = 20000, seed: int = 0) -> dict[str, float]:
    """Statistics of pixel embeddings ``emb`` (N, D)."""
    emb = emb.double()
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(0, emb.shape[0], (pairs,), generator=g)
    j = torch.randint(0, emb.shape[0], (pairs,), generator=g)
    e = torch.nn.functional.normalize(emb, dim=1)
    cos = (e[i] * e[j]).sum(1)
    cov = torch.cov(emb.T)
    ev = torch.linalg.eigvalsh(cov).clamp(min=0).flip(0)
    p = ev / ev.sum()
    nz = p[p > 0]
    return {
        "mean_cos": float(cos.mean()),
        "effective_rank": float(torch.exp(-(nz * nz.log()).sum())),
        "top1_var": float(p[0]),
        "dim": int(emb.shape[1]),
    }


def _r2(A: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """R^2 of the least-squares map from the columns of ``A`` to each column of ``y`` (in-sample)."""
    coef = torch.linalg.lstsq(A, y).solution
    res = (y - A @ coef).pow(2).sum(0)
    tot = (y - y.mean(0)).pow(2).sum(0).clamp(min=1e-12)
    return 1 - res / tot


def stack_groups(n_bands: int) -> dict[str, slice]:
    """Column ranges of :func:`training.evaluation.features.handmade_stack` by feature group (``mean3``, ``std5``...)."""
    names = ["bands"] + [f"mean{k}" for k in BOX_MEAN_SIZES] + [f"std{k}" for k in LOCAL_STD_SIZES]
    return {name: slice(i * n_bands, (i + 1) * n_bands) for i, name in enumerate(names)}


def scene_rank(
    emb: torch.Tensor, bands: torch.Tensor | None = None, stack: torch.Tensor | None = None
) -> dict[str, object]:
    """Effective rank of pixel embeddings ``emb`` (N, D) of one scene, and the R^2 of a least-squares
    map from the embedding (plus a constant) to each normalised band of ``bands`` (N, C) and to each
    column of the hand-made ``stack`` (N, 6C), the latter averaged per feature group."""
    e = emb.double() - emb.double().mean(0)
    sv = torch.linalg.svdvals(e)
    p = sv / sv.sum()
    p = p[p > 0]
    out: dict[str, object] = {"effective_rank_sv": float(torch.exp(-(p * p.log()).sum())), "dim": int(emb.shape[1])}
    ev = sv.pow(2) / sv.pow(2).sum()
    ev = ev[ev > 0]
    out["effective_rank_var"] = float(torch.exp(-(ev * ev.log()).sum()))
    A = torch.cat([e, torch.ones(e.shape[0], 1, dtype=e.dtype)], 1)
    if bands is not None:
        out["band_r2"] = [float(v) for v in _r2(A, bands.double())]
    if stack is not None:
        r2 = _r2(A, stack.double())
        out["stack_r2"] = {k: float(r2[s].mean()) for k, s in stack_groups(stack.shape[1] // STACK_FEATURES).items()}
    return out


def scene_ranks(enc: EarthEncoder, data_root: str | Path, scenes: list[str]) -> dict[str, dict]:
    """:func:`scene_rank` of ``enc`` over every valid pixel of each labelled scene (by folder name)."""
    from training.evaluation.probe import scene_arrays

    enc.eval()
    norm = enc.config.normalization
    result = {}
    for name in scenes:
        refl, _, _ = scene_arrays(Path(data_root) / "labelled" / name, enc.bands)
        valid = (refl != 0).any(0).flatten()
        x = (refl - torch.tensor(norm.mean).view(-1, 1, 1)) / torch.tensor(norm.std).view(-1, 1, 1)
        with torch.no_grad():
            emb = enc(x[None])[0].flatten(1).T[valid]
        stack = handmade_stack(x).flatten(1).T[valid]
        result[name] = {**scene_rank(emb, x.flatten(1).T[valid], stack), "pixels": int(valid.sum())}
    return result


@torch.no_grad()
def pixel_embeddings(enc: EarthEncoder, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(N_valid_pixels, D) embeddings of normalised windows x (B, C, H, W)."""
    enc.eval()
    out = []
    for k in range(0, x.shape[0], 8):
        out.append(enc(x[k : k + 8]).permute(0, 2, 3, 1)[valid[k : k + 8, 0] > 0])
    return torch.cat(out)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--encoder",
        required=True,
        help="pre-trained encoder folder, or a pre-training checkpoint folder (RUN/checkpoints/step_N: its query encoder)",
    )
    p.add_argument("--sources", default="training/configs/data/pretrain-real.yaml", help="data config YAML")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--windows", type=int, default=32)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--pairs", type=int, default=20000)
    p.add_argument("--random-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", help="write the JSON here")
    p.add_argument("--scenes", nargs="+", help="labelled scenes (under DATA_ROOT/labelled): whole-scene rank instead")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    ckpt = Path(args.encoder)
    if is_checkpoint(ckpt):
        enc = encoder_from_checkpoint(run_config(ckpt), ckpt)
    else:
        enc = EarthEncoder.from_pretrained(args.encoder)
    if args.scenes:
        ranks = scene_ranks(enc, args.data_root, args.scenes)
        for name, r in ranks.items():
            r2 = " ".join(f"{v:.2f}" for v in r["band_r2"])
            sr2 = " ".join(f"{k} {v:.2f}" for k, v in r["stack_r2"].items())
            print(
                f"{name}: effective rank {r['effective_rank_sv']:.2f} (singular values), "
                f"{r['effective_rank_var']:.2f} (variance) of {r['dim']}; band R^2 {r2}; stack R^2 {sr2}"
            )
        if args.out:
            write_json(args.out, {"encoder": args.encoder, "scenes": ranks}, indent=2)
        return ranks
    sources = Path(args.sources) if Path(args.sources).is_file() else REPO / args.sources
    data = load_data_config(sources, args.data_root)
    ds = UnlabelledWindows(data.scenes, enc.bands, args.size, length=args.windows, seed=12345, start=2 * 10**9)
    items = [ds[i] for i in range(args.windows)]
    norm = enc.config.normalization
    m = torch.tensor(norm.mean).view(1, -1, 1, 1)
    s = torch.tensor(norm.std).view(1, -1, 1, 1)
    x = torch.stack([it["x"] for it in items])
    valid = torch.stack([it["valid"] for it in items])
    x = (x - m) / s * valid
    result: dict[str, Any] = {
        "encoder": args.encoder,
        "windows": args.windows,
        "window_px": args.size,
        "pairs": args.pairs,
        "pixels": int(valid.sum()),
        "data": str(args.sources),
        "pretrained": embedding_stats(pixel_embeddings(enc, x, valid), args.pairs),
        "random_init": [],
    }
    cfg = enc.config
    for seed in args.random_seeds:
        torch.manual_seed(seed)
        rnd = EarthEncoder.new(cfg.architecture, bands=cfg.bands, embed_dim=cfg.embed_dim, mean=norm.mean, std=norm.std)
        result["random_init"].append({"seed": seed, **embedding_stats(pixel_embeddings(rnd, x, valid), args.pairs)})
    for key in ("mean_cos", "effective_rank", "top1_var"):
        vals = [r[key] for r in result["random_init"]]
        result.setdefault("random_init_mean", {})[key] = float(np.mean(vals))
        result.setdefault("random_init_std", {})[key] = float(np.std(vals))
    pre, rnd = result["pretrained"], result["random_init_mean"]
    print(f"| encoder | mean cos (random pixel pairs) | effective rank (of {pre['dim']}) | top-1 variance share |")
    print("|---|---|---|---|")
    print(f"| pre-trained | {pre['mean_cos']:.3f} | {pre['effective_rank']:.2f} | {pre['top1_var']:.3f} |")
    sd = result["random_init_std"]
    print(
        f"| random init (mean +- std of {len(args.random_seeds)}) | {rnd['mean_cos']:.3f} +- {sd['mean_cos']:.3f} | "
        f"{rnd['effective_rank']:.2f} +- {sd['effective_rank']:.2f} | {rnd['top1_var']:.3f} +- {sd['top1_var']:.3f} |"
    )
    if args.out:
        write_json(args.out, result, indent=2)
    return result


if __name__ == "__main__":
    main()
