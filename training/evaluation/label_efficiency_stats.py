"""The numbers of a label-efficiency experiment: per-start summaries, paired differences, and the grid's choice."""

from __future__ import annotations

import numpy as np


def _mean_std(values: list[float]) -> tuple[float, float]:
    v = 100 * np.array(values, dtype=float)
    return float(v.mean()), float(v.std())


def summarise(runs: list[dict], fractions: list[float], inits: list[str]) -> dict[str, dict[str, dict]]:
    """init -> fraction -> {mean, std, n, per_class: {class: (mean, std)}} (mIoU in %)."""
    out: dict[str, dict[str, dict]] = {}
    for init in inits:
        for f in fractions:
            rs = [r for r in runs if r["init"] == init and abs(r["fraction"] - f) < 1e-12]
            if not rs:
                continue
            mean, std = _mean_std([r["miou"] for r in rs])
            per_class = {}
            for c in rs[0]["per_class_iou"]:
                v = [r["per_class_iou"][c] for r in rs if r["per_class_iou"][c] is not None]
                per_class[c] = _mean_std(v) if v else None
            out.setdefault(init, {})[f"{f:g}"] = {"mean": mean, "std": std, "n": len(rs), "per_class": per_class}
    return out


def paired(runs: list[dict], fractions: list[float], a: str = "pretrained", b: str = "random") -> dict[str, dict]:
    """fraction -> the paired difference ``a - b`` over the seeds both have: mean, standard error, wins, n (mIoU %)."""
    out = {}
    for f in fractions:
        by_seed = {
            init: {r["seed"]: r["miou"] for r in runs if r["init"] == init and abs(r["fraction"] - f) < 1e-12}
            for init in (a, b)
        }
        seeds = sorted(set(by_seed[a]) & set(by_seed[b]))
        if not seeds:
            continue
        d = 100 * np.array([by_seed[a][s] - by_seed[b][s] for s in seeds])
        se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else None
        out[f"{f:g}"] = {"mean": float(d.mean()), "se": se, "wins": int((d > 0).sum()), "n": len(d), "seeds": seeds}
    return out


def choose_settings(grid_runs: list[dict], inits: list[str]) -> dict[str, tuple[float, str]]:
    """Per fine-tuned start: the (encoder lr, BatchNorm mode) with the best validation mIoU at the final step,
    averaged over the grid's seeds (ties go to the lower lr, then to BatchNorm ``train``)."""
    out = {}
    for init in inits:
        val: dict[tuple[float, str], list[float]] = {}
        for r in grid_runs:
            if r["init"] == init:
                val.setdefault((r["encoder_lr"], r.get("batchnorm", "train")), []).append(r["final_val_miou"])
        if val:
            out[init] = max(val, key=lambda k: (float(np.mean(val[k])), -k[0], k[1] == "train"))
    return out


def choose_lrs(grid_runs: list[dict], inits: list[str]) -> dict[str, float]:
    """Per fine-tuned start: the encoder lr of :func:`choose_settings`."""
    return {init: lr for init, (lr, _) in choose_settings(grid_runs, inits).items()}
