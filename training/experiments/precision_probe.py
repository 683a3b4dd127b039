"""Does reduced precision change what the released encoder's embeddings are worth?

For each labelled set, the released encoder embeds the whole scene at fp32 and at each other precision (autocast,
in one process, stored BatchNorm); the linear probe of ``linear_probe.py`` is fit and scored on each (same split,
same seed), and the int8 codes of both (the store's per-pixel rule) are compared: the share of codes within +-1 of
fp32's, and the mean and lowest per-pixel cosine to fp32. The rule for a default: a precision is the default only
if it changes no set's probe by more than 0.3 mIoU and keeps >= 99 % of int8 codes within +-1.

``--runtimes`` adds fp32 runs on other runtimes (:mod:`earth_embed.runtime`: ``onnx``, ``onnx-int8``), judged by
the runtime rule written before they were measured: a runtime is kept only if it changes no set's probe by more
than 0.2 mIoU (and the change evaluation by no more than 0.5 AP, ``change_detection.py --runtime``).

    python training/experiments/precision_probe.py --threads 2
    python training/experiments/precision_probe.py --precisions --runtimes onnx onnx-int8 --json docs/results/runtime_probe.json
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

import torch

from earth_embed import EarthEncoder, quantize
from earth_embed.precision import resolve_precision
from training.evaluation.features import scene_features
from training.evaluation.probe import DATASETS, halves, probe_scores, scene_arrays
from training.evaluation.results_file import command_line, write_json

RELEASE = Path(__file__).resolve().parents[2] / "models" / "earth-embed-s2-unet-r18s16"


def compare(ref: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    """int8-code agreement and cosine of ``other``'s per-pixel features (N, D) against ``ref``'s."""
    qa, _ = quantize.quantize_tensor(ref, dim=1)
    qb, _ = quantize.quantize_tensor(other, dim=1)
    diff = (qa.int() - qb.int()).abs()
    cos = torch.nn.functional.cosine_similarity(ref, other, dim=1)
    return {
        "codes_within_1": float((diff <= 1).float().mean()),
        "codes_equal": float((diff == 0).float().mean()),
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    enc = EarthEncoder.from_pretrained(args.encoder).eval()
    norm = enc.config.normalization
    used = {p: resolve_precision(p, "cpu") for p in args.precisions}
    variants = [(p, "torch") for p in args.precisions] + [("fp32", r) for r in args.runtimes]
    rows = []
    for name in args.sets:
        refl, y, scene = scene_arrays(Path(args.data_root) / "labelled" / name, enc.bands)
        train, test = halves(scene, name)
        scored: dict[str, Any] = {"y": y, "train": train, "test": test, "classes": scene.classes}
        t0 = time.time()
        ref = scene_features(enc, refl, norm.mean, norm.std, precision="fp32")
        base = probe_scores(ref, **scored)
        rows.append(
            {
                "dataset": name,
                "precision": "fp32",
                "runtime": "torch",
                "miou": base["miou"],
                "seconds": time.time() - t0,
            }
        )
        for p, rt in variants:
            t0 = time.time()
            feats = scene_features(enc, refl, norm.mean, norm.std, precision=p, runtime=rt)
            m = probe_scores(feats, **scored)
            rows.append(
                {
                    "dataset": name,
                    "precision": used.get(p, p),
                    "runtime": rt,
                    "miou": m["miou"],
                    "miou_change": m["miou"] - base["miou"],
                    **compare(ref, feats),
                    "seconds": time.time() - t0,
                }
            )
            r = rows[-1]
            print(
                f"{name:17s} {used.get(p, p)} {rt}: mIoU {100 * r['miou']:.2f} vs fp32 {100 * base['miou']:.2f} "
                f"({100 * r['miou_change']:+.2f}); int8 codes within +-1 {100 * r['codes_within_1']:.2f} %, "
                f"cosine mean {r['cosine_mean']:.5f} min {r['cosine_min']:.4f}",
                flush=True,
            )
    holds = {
        used[p]: all(
            abs(r["miou_change"]) <= 0.003 and r["codes_within_1"] >= 0.99
            for r in rows
            if r["precision"] == used[p] and r["runtime"] == "torch" and "miou_change" in r
        )
        for p in args.precisions
    }
    print("rule (|probe change| <= 0.3 mIoU on every set, >= 99 % of codes within +-1):", holds)
    kept = {
        rt: all(abs(r["miou_change"]) <= 0.002 for r in rows if r["runtime"] == rt and "miou_change" in r)
        for rt in args.runtimes
    }
    if kept:
        print("runtime rule (|probe change| <= 0.2 mIoU on every set):", kept)
    return {
        "encoder": str(args.encoder),
        "rows": rows,
        "rule_holds": holds,
        "runtime_probe_holds": kept,
        "date": _dt.date.today().isoformat(),
        "command": command_line("training/experiments/precision_probe.py", args.argv),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default=str(RELEASE))
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--sets", nargs="+", default=list(DATASETS))
    p.add_argument("--precisions", nargs="*", default=["bf16"], choices=["bf16", "auto"])
    p.add_argument("--runtimes", nargs="*", default=[], choices=["onnx", "onnx-int8"], help="fp32 on these runtimes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default="docs/results/precision_probe.json")
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    result = run(args)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
