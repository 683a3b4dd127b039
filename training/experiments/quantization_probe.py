"""What a stored int8 code costs: decode error and linear-probe mIoU vs float32 (issue 11, deliverable 2).

    python training/experiments/quantization_probe.py --encoder models/earth-embed-s2-unet-r18s16 \
        --threads 1 --out docs/results/quantization_probe.json

The released encoder embeds the whole ``brandenburg-osm`` scene once (float32, the reference). Each
candidate storage rule encodes those embeddings and decodes them again; the frozen-feature linear probe
of ``training/experiments/linear_probe.py`` (same split: label-efficiency train block -> test block,
same L-BFGS logistic regression on standardised features) is then fit and scored on the decoded values.

Rules compared (one row each):

- ``float32``: the reference.
- ``float16``: half precision.
- ``unit-float32``: the float vector scaled to unit length, no rounding (what a unit-length rule keeps).
- ``unit-sqrt-int8`` (AlphaEarth): unit-length vectors, code ``q = sign(v) round(127.5 sqrt|v|)`` in
  [-127, 127], value ``sign(q) (|q| / 127.5)^2``.
- ``pixel-scale-int8`` (TESSERA; the library's rule, ``earth_embed.quantize``): per-pixel scale ``s = max|v| / 127`` stored as float32, code
  ``q = round(v / s)`` in [-127, 127], value ``q * s``; keeps each vector's length.

Decode error is measured against what the rule stores: the unit vector for unit-length rules, the
float32 vector otherwise (``relative error = |decoded - target| / |target|`` per pixel); the cosine
error ``1 - cos(decoded, float32)`` is comparable across all rules.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

import torch

from earth_embed import EarthEncoder, quantize
from training.evaluation.probe import features, halves, probe_scores, scene_arrays
from training.evaluation.results_file import write_json


def _unit(f: torch.Tensor) -> torch.Tensor:
    return f / f.norm(dim=1, keepdim=True).clamp(min=1e-12)


def unit_sqrt_int8(f: torch.Tensor) -> torch.Tensor:
    """AlphaEarth's rule (the alternative this measurement rejected) on (N, D) float32 features: encode to int8 codes and decode again."""
    u = _unit(f)
    q = (torch.sign(u) * torch.round(127.5 * u.abs().sqrt())).clamp(-127, 127).to(torch.int8)
    a = q.float()
    return torch.sign(a) * (a.abs() / 127.5) ** 2


def pixel_scale_int8(f: torch.Tensor) -> torch.Tensor:
    """The library's rule (``earth_embed.quantize``, TESSERA's per-pixel scale) on (N, D) features."""
    codes, scales = quantize.quantize(f.numpy(), axis=1)
    return torch.from_numpy(quantize.dequantize(codes, scales, axis=1))


#: name -> (encode-and-decode, keeps the vector's length)
RULES: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], bool]] = {
    "float32": (lambda f: f, True),
    "float16": (lambda f: f.half().float(), True),
    "unit-float32": (_unit, False),
    "unit-sqrt-int8": (unit_sqrt_int8, False),
    "pixel-scale-int8": (pixel_scale_int8, True),
}


def decode_error(f: torch.Tensor, decoded: torch.Tensor, keeps_length: bool) -> dict[str, float]:
    """Cosine error vs float32 and relative L2 / RMSE error vs the vector the rule stores."""
    target = f if keeps_length else _unit(f)
    cos = (decoded * f).sum(1) / (decoded.norm(dim=1) * f.norm(dim=1)).clamp(min=1e-12)
    cos_err = (1 - cos).clamp(min=0)
    rel = (decoded - target).norm(dim=1) / target.norm(dim=1).clamp(min=1e-12)
    rmse_unit = ((decoded - target) / target.norm(dim=1, keepdim=True).clamp(min=1e-12)).pow(2).mean().sqrt()
    return {
        "cosine_error_mean": float(cos_err.mean()),
        "cosine_error_max": float(cos_err.max()),
        "relative_error_mean": float(rel.mean()),
        "relative_error_max": float(rel.max()),
        "rmse_on_unit_vectors": float(rmse_unit),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    enc = EarthEncoder.from_pretrained(args.encoder)
    norm = enc.config.normalization
    folder = Path(args.data_root) / "labelled" / args.dataset
    refl, y, scene = scene_arrays(folder, enc.bands)
    train, test = halves(scene, args.dataset)
    f = features(enc, refl, norm.mean, norm.std)
    rows: list[dict[str, Any]] = []
    for name in args.rules:
        rule, keeps_length = RULES[name]
        t0 = time.time()
        decoded = rule(f)
        m = probe_scores(decoded, y, train, test, scene.classes, seed=args.seed)
        row = {"rule": name, "keeps_length": keeps_length, "miou": m["miou"], "pixel_accuracy": m["pixel_accuracy"]}
        row.update(decode_error(f, decoded, keeps_length))
        row["seconds"] = round(time.time() - t0, 1)
        rows.append(row)
        print(f"{name:18s} mIoU {100 * m['miou']:.2f}  acc {100 * m['pixel_accuracy']:.2f}", flush=True)
    ref = next((r["miou"] for r in rows if r["rule"] == "float32"), None)
    for r in rows:
        r["miou_change_points"] = None if ref is None else 100 * (r["miou"] - ref)
    return {
        "encoder": str(args.encoder),
        "dataset": args.dataset,
        "pixels": int(f.shape[0]),
        "embed_dim": int(f.shape[1]),
        "float32_norm": {
            "min": float(f.norm(dim=1).min()),
            "mean": float(f.norm(dim=1).mean()),
            "max": float(f.norm(dim=1).max()),
        },
        "n_train_pixels": m["n_train_pixels"],
        "n_test_pixels": m["n_test_pixels"],
        "rows": rows,
        "date": _dt.date.today().isoformat(),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
    }


def summary_markdown(result: dict[str, Any]) -> str:
    """One table: probe mIoU and its change vs float32, and the decode error, per rule."""
    lines = [
        "| stored as | keeps length | probe mIoU (%) | change vs float32 (points) | pixel acc. (%) | "
        "cosine error mean / max | relative error mean / max | RMSE on unit vectors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        change = "" if r["miou_change_points"] is None else f"{r['miou_change_points']:+.2f}"
        lines.append(
            f"| {r['rule']} | {'yes' if r['keeps_length'] else 'no'} | {100 * r['miou']:.2f} | {change} | "
            f"{100 * r['pixel_accuracy']:.2f} | {r['cosine_error_mean']:.1e} / {r['cosine_error_max']:.1e} | "
            f"{r['relative_error_mean']:.2e} / {r['relative_error_max']:.2e} | {r['rmse_on_unit_vectors']:.2e} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", required=True, help="encoder folder or hub id")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--dataset", default="brandenburg-osm")
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    p.add_argument("--seed", type=int, default=0, help="probe initialisation seed")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default="docs/results/quantization_probe.json")
    args = p.parse_args(argv)
    result = run(args)
    result["markdown"] = summary_markdown(result)
    write_json(args.out, result)
    print(result["markdown"])
    return result


if __name__ == "__main__":
    main()
