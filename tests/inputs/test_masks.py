"""Cloud and shadow masks on real Sentinel-2 pixels: the library, SCL codes, a user's file, auto's fallback."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import rasterio

from earth_embed import EarthEncoder
from earth_embed.api import embed_raster
from earth_embed.errors import RasterInputError
from earth_embed.inputs.masks import MaskSpec, library
from earth_embed.inputs.masks.scl import SCL_MASKED
from earth_embed.released import find_released

REF_BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]


@pytest.fixture(scope="module")
def encoder():
    name = find_released("encoder")
    assert name is not None
    return EarthEncoder.from_pretrained(name)


def _nodata_share(path) -> float:
    with rasterio.open(path) as ds:
        return float((ds.read(1) == -128).mean())


def test_library_agrees_with_the_reference_scene(shared_data):
    pytest.importorskip("ukis_csmask")
    d = shared_data / "clouds" / "ukis-csmask-s2"
    img = np.stack([rasterio.open(d / f"{b}.tif").read(1) for b in REF_BANDS], axis=-1)
    ref = rasterio.open(d / "mask.tif").read(1)
    found = library.classify(img, "L1C")
    assert found.shape == ref.shape
    assert (found[ref == 1] > 0).mean() >= 0.9  # cloud recall (the target)
    assert (found[ref == 2] > 0).mean() >= 0.7  # shadow recall
    assert (found[ref == 0] > 0).mean() < 0.2  # most clear pixels stay clear


def test_auto_masks_the_clouded_slovenian_date_and_keeps_the_clear_one(shared_data, encoder, tmp_path, caplog):
    pytest.importorskip("ukis_csmask")
    dates = shared_data / "labelled" / "slovenia-eolearn" / "dates"
    with caplog.at_level(logging.WARNING, logger="earth_embed"):
        cloudy = embed_raster(encoder, dates / "S2L1C_20150820.tif", tmp_path / "cloudy.tif", progress=False)
    assert "mostly nodata" in caplog.text
    assert _nodata_share(cloudy) >= 0.8
    with rasterio.open(cloudy) as ds:
        assert ds.tags()["MASK"] == "ukis-csmask" and float(ds.tags()["MASKED_SHARE"]) >= 0.8
    with rasterio.open(str(cloudy).replace(".tif", ".scales.tif")) as ds:
        assert np.isnan(ds.read(1)).mean() >= 0.8  # masked: NaN scales beside the -128 codes
    clear = embed_raster(encoder, dates / "S2L1C_20150711.tif", tmp_path / "clear.tif", progress=False)
    assert _nodata_share(clear) <= 0.05


def _l2a_folder(shared_data, tmp_path):
    """A real L2A patch (BigEarthNet, 120 x 120 px) copied to a folder of its own."""
    src = shared_data / "bigearthnet-s2-tiny" / "S2A_MSIL2A_20170617T113321_36_85"
    out = tmp_path / "l2a"
    out.mkdir()
    for f in src.glob("*_B*.tif"):
        shutil.copy(f, out / f.name)
    return out, src.name


def test_scl_codes_mask_exactly_their_classes(shared_data, encoder, tmp_path):
    folder, name = _l2a_folder(shared_data, tmp_path)
    with rasterio.open(folder / f"{name}_B05.tif") as b05:  # the 20 m grid, where SCL lives
        profile = dict(b05.profile, dtype="uint8", nodata=None, count=1)
        h, w = b05.shape
    scl = np.full((h, w), 4, np.uint8)  # vegetation
    codes = [3, 8, 9, 10, 11, 6]  # shadow, cloud medium/high, cirrus: masked; snow, water: kept
    for k, code in enumerate(codes):
        scl[:, k * 10 : k * 10 + 10] = code
    with rasterio.open(folder / f"{name}_SCL_20m.tif", "w", **profile) as ds:
        ds.write(scl, 1)
    out = embed_raster(encoder, folder, tmp_path / "scl.tif", progress=False)  # auto finds the SCL layer
    with rasterio.open(out) as ds:
        assert ds.tags()["MASK"] == "scl"
        nodata = ds.read(1) == -128
    expect = np.isin(np.repeat(np.repeat(scl, 2, 0), 2, 1), SCL_MASKED)
    assert (nodata == expect).mean() > 0.99  # nearest resampling to 10 m: the same classes, pixel for pixel
    assert nodata[:, :80].all() == expect[:, :80].all()


def test_user_mask_file_and_buffer(shared_data, encoder, tmp_path):
    dates = shared_data / "labelled" / "slovenia-eolearn" / "dates"
    scene = dates / "S2L1C_20150711.tif"
    with rasterio.open(scene) as ds:
        profile = dict(ds.profile, count=1, dtype="uint8", nodata=None)
    mask = np.zeros((101, 100), np.uint8)
    mask[40:60, 30:50] = 1
    path = tmp_path / "mask.tif"
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(mask, 1)
    out = embed_raster(encoder, scene, tmp_path / "user.tif", mask=path, progress=False)
    with rasterio.open(out) as ds:
        nodata = ds.read(1) == -128
        assert ds.tags()["MASK"] == "file mask.tif"
    assert np.array_equal(nodata, mask > 0)
    out = embed_raster(encoder, scene, tmp_path / "buf.tif", mask=path, mask_buffer=2, progress=False)
    with rasterio.open(out) as ds:
        nodata = ds.read(1) == -128
    assert nodata.sum() == 24 * 24 and nodata[38:62, 28:52].all()


def test_auto_without_the_library_says_how_to_install(shared_data, encoder, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(library, "available", lambda: False)
    scene = shared_data / "labelled" / "slovenia-eolearn" / "dates" / "S2L1C_20150820.tif"
    with caplog.at_level(logging.WARNING, logger="earth_embed"):
        out = embed_raster(encoder, scene, tmp_path / "nomask.tif", progress=False)
    assert 'pip install "earth-embed[clouds]"' in caplog.text
    assert _nodata_share(out) == 0.0
    with rasterio.open(out) as ds:
        assert ds.tags()["MASK"] == "none"


def test_bad_mask_arguments(tmp_path):
    with pytest.raises(RasterInputError, match="neither a mask source"):
        MaskSpec.of(tmp_path / "missing.tif")
    with pytest.raises(RasterInputError, match="whole number"):
        MaskSpec.of("auto", -1)
