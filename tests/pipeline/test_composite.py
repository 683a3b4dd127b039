"""Clear-pixel mosaics and composites on the five real Slovenian dates (two of them fully clouded)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import zarr

from earth_embed import open_embeddings
from earth_embed.cli import main
from earth_embed.errors import RasterInputError
from earth_embed.pipeline.composite import combine, composite, observations_path

CLEAR, CLOUDED = ("2015-07-11", "2015-08-30", "2015-09-09"), ("2015-07-31", "2015-08-20")


@pytest.fixture(scope="module")
def store(shared_data, tmp_path_factory):
    pytest.importorskip("ukis_csmask")
    dates = sorted((shared_data / "labelled" / "slovenia-eolearn" / "dates").glob("S2L1C_*.tif"))
    out = tmp_path_factory.mktemp("slo") / "slo.zarr"
    assert main(["embed-region", *map(str, dates), str(out), "--keep", "all-dates", "-q", "--threads", "2"]) == 0
    return out


def _layer(store, date):
    with open_embeddings(store, time=date) as e:
        return e.read()


def test_each_layer_keeps_its_mask_and_the_count_is_stored(store):
    for d in CLOUDED:
        assert np.isnan(_layer(store, d)[0]).mean() >= 0.8
    for d in CLEAR:
        assert np.isfinite(_layer(store, d)[0]).mean() >= 0.95
    counts = zarr.open_group(store / "EPSG_32633", mode="r")["clear_observations"][:]
    layers = np.stack([np.isfinite(_layer(store, d)[0]) for d in sorted(CLEAR + CLOUDED)])
    np.testing.assert_array_equal(counts, layers.sum(axis=0))


def test_a_masked_pixel_never_overwrites_a_clear_one(store):
    with open_embeddings(store) as e:
        mosaic = e.read()
    latest_clear = _layer(store, "2015-09-09")  # the latest date is clear: it provides every clear pixel
    hidden = np.isnan(_layer(store, "2015-08-20")[0])
    assert hidden.mean() >= 0.8
    both = np.isfinite(latest_clear[0])
    np.testing.assert_array_equal(mosaic[:, both], latest_clear[:, both])


def test_a_clouded_latest_date_leaves_the_earlier_clear_pixels(shared_data, tmp_path):
    pytest.importorskip("ukis_csmask")
    d = shared_data / "labelled" / "slovenia-eolearn" / "dates"
    two = [str(d / "S2L1C_20150711.tif"), str(d / "S2L1C_20150731.tif")]  # clear, then clouded (the latest)
    out = tmp_path / "two.zarr"
    assert main(["embed-region", *two, str(out), "--keep", "all-dates", "-q"]) == 0
    with open_embeddings(out) as e:
        mosaic = e.read()
    clear, cloudy = _layer(out, "2015-07-11"), _layer(out, "2015-07-31")
    masked = np.isnan(cloudy[0])
    assert masked.mean() >= 0.8
    np.testing.assert_array_equal(mosaic[:, masked], clear[:, masked])  # the clear pixel stays
    # without masks the clouded latest date wins everywhere (the old rule)
    plain = tmp_path / "plain.zarr"
    assert main(["embed-region", *two, str(plain), "--mask", "none", "-q"]) == 0
    with open_embeddings(plain) as e:
        assert not np.allclose(np.nan_to_num(e.read()[:, masked]), np.nan_to_num(clear[:, masked]))


def test_composite_rules_on_real_layers(store):
    stack = np.stack([_layer(store, d) for d in sorted(CLEAR + CLOUDED)])
    clear = np.isfinite(stack[:, 0])
    mean, count, spread = combine(stack, "mean")
    assert (spread[count > 1] > 0).all() and np.isnan(spread[count == 0]).all()
    np.testing.assert_array_equal(count, clear.sum(axis=0))
    np.testing.assert_allclose(mean, np.nanmean(stack, axis=0), rtol=1e-5, atol=1e-6)
    median, _, _ = combine(stack, "median")
    np.testing.assert_allclose(median, np.nanmedian(stack, axis=0), rtol=1e-5, atol=1e-6)
    medoid, _, _ = combine(stack, "medoid")
    # the medoid is one of the pixel's own clear observations, and the closest to the others
    dist = np.array([np.abs(medoid - stack[t]).max(axis=0) for t in range(len(stack))])
    assert (np.where(clear, dist, np.inf).min(axis=0) < 1e-6).all()
    # one observation only: the composite is that observation, with no spread
    single, n, s = combine(stack[:1], "median")
    np.testing.assert_array_equal(single, stack[0])
    assert (n == 1).all() and (s == 0).all()


def test_composite_command_and_the_apps_read_it(store, shared_data, tmp_path):
    out = tmp_path / "comp.tif"
    assert main(["composite", str(store), str(out), "--start", "2015-07-01", "--end", "2015-09-30"]) == 0
    with rasterio.open(observations_path(out)) as ds:
        count, spread = ds.read(1), ds.read(2)
        assert ds.descriptions == ("clear_observations", "spread")
    assert (count == 3).mean() >= 0.9 and (spread >= 0).all()  # the three clear dates
    with rasterio.open(out) as ds:
        assert ds.tags()["COMPOSITE_RULE"] == "mean" and ds.dtypes[0] == "int8"
    labels = shared_data / "labelled" / "slovenia-eolearn" / "labels.tif"
    assert (
        main(["fit", str(out), str(labels), "--out", str(tmp_path / "fit"), "--folds", "2", "--block-size", "32"]) == 0
    )
    later = f"{store}/EPSG_32633@2015-09-09"
    assert main(["change", str(out), later, str(tmp_path / "change")]) == 0


def test_composite_refuses_bad_periods(store, tmp_path):
    with pytest.raises(RasterInputError, match="no acquisition layer"):
        composite(store, tmp_path / "x.tif", start="2016-01-01")
    with pytest.raises(RasterInputError, match="is after"):
        composite(store, tmp_path / "x.tif", start="2015-09-01", end="2015-08-01")
    with pytest.raises(RasterInputError, match="not a date"):
        composite(store, tmp_path / "x.tif", start="July")
