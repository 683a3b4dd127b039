"""embed-region --keep all-dates on the two OSCD dates of Mumbai (real pixels, one grid): a time axis of two
layers with their dates and scenes, each layer bit-identical to that date embedded alone, the mosaic unchanged,
resume of one layer unit, reading a layer (time= and GROUP@DATE), STAC Items per layer, and `earth-embed change`
on two layers of one store."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr

from earth_embed import RELEASE_BANDS, EarthEncoder
from earth_embed.api import embed_region
from earth_embed.cli import main
from earth_embed.errors import RasterInputError
from earth_embed.outputs.embeddings import open_embeddings
from earth_embed.outputs.zarr_store import RegionStore
from earth_embed.outputs.zarr_units import REGISTRY
from tests.helpers.change_data import MUMBAI, write_crop

SIZE = 128
GROUP = "EPSG_4326"
#: The acquisition dates of OSCD Mumbai (unlabelled/oscd-date1/mumbai/source.json: date and date_2).
DATES = ("2015-11-30", "2018-03-19")
SIZES = {"chunk": 64, "shard": 64, "halo": 32, "progress": False}


@pytest.fixture(scope="module")
def mumbai(shared_data, tmp_path_factory):
    """Both dates of a 128 px Mumbai crop on one grid (dates in the file names), a random-init 8-d encoder, and
    the all-dates store."""
    root = tmp_path_factory.mktemp("dates")
    torch.manual_seed(0)
    EarthEncoder.new("unet-resnet18", bands=RELEASE_BANDS, embed_dim=8).save_pretrained(root / "enc")
    city, r0, c0 = MUMBAI
    scenes = [
        write_crop(shared_data, folder, city, r0, c0, SIZE, root / f"mumbai_{date.replace('-', '')}.tif")
        for folder, date in (("oscd-date1", DATES[0]), ("oscd", DATES[1]))
    ]
    store = root / "all.zarr"
    sizes = ["--chunk", "64", "--shard", "64", "--halo", "32", "--threads", "1", "--quiet"]
    main(["embed-region", *map(str, scenes), str(store), "--model", str(root / "enc"), "--keep", "all-dates", *sizes])
    return {"root": root, "scenes": scenes, "enc": str(root / "enc"), "store": store}


def _codes(store, name="embeddings"):
    g = zarr.open_group(store / GROUP, mode="r")
    return np.asarray(g[name][...]), np.asarray(g["scales" if name == "embeddings" else "scales_by_date"][...])


def test_time_axis_layers_equal_each_date_alone_and_mosaic_unchanged(mumbai):
    store, root = mumbai["store"], mumbai["root"]
    g = zarr.open_group(store / GROUP, mode="r")
    assert g.attrs["geoemb:dates"] == list(DATES)
    assert g.attrs["geoemb:layer_sources"] == [["mumbai_20151130"], ["mumbai_20180319"]]
    assert g["embeddings_by_date"].shape == (2, 8, SIZE, SIZE)
    assert len(RegionStore(store).done_units()) == 3 * 4  # 4 mosaic units + 4 per layer
    by_date, scales_by_date = _codes(store, "embeddings_by_date")
    for t, scene in enumerate(mumbai["scenes"]):
        alone = root / f"alone{t}.zarr"
        embed_region([scene], alone, mumbai["enc"], **SIZES)
        codes, scales = _codes(alone)
        assert np.array_equal(by_date[t], codes)  # bit-identical int8 codes
        assert np.array_equal(scales_by_date[t], scales, equal_nan=True)
        assert (codes != -128).all()  # the layer is full: both dates cover the crop
    latest = root / "latest.zarr"
    embed_region(mumbai["scenes"], latest, mumbai["enc"], **SIZES)
    assert "embeddings_by_date" not in zarr.open_group(latest / GROUP, mode="r")
    for mine, theirs in zip(_codes(store), _codes(latest)):
        assert np.array_equal(mine, theirs, equal_nan=True)
    # the mosaic is the later date wherever it is valid (here everywhere)
    assert np.array_equal(_codes(store)[0], by_date[1])


def test_open_a_layer_by_time_and_by_path(mumbai):
    store = mumbai["store"]
    with open_embeddings(store, group=GROUP, time=DATES[0]) as e0, open_embeddings(f"{store}/{GROUP}@{DATES[1]}") as e1:
        x0, x1 = e0.read(), e1.read()
        assert e0.model == e1.model and (e0.height, e0.width, e0.dim) == (SIZE, SIZE, 8)
    codes, scales = _codes(store, "embeddings_by_date")
    assert np.allclose(x0, codes[0] * scales[0][None]) and np.allclose(x1, codes[1] * scales[1][None])
    assert not np.allclose(x0, x1)
    with pytest.raises(RasterInputError, match="no layer dated 2016-01-01; its layers are 2015-11-30, 2018-03-19"):
        open_embeddings(store, group=GROUP, time="2016-01-01")
    latest = mumbai["root"] / "latest.zarr"
    if latest.exists():
        with pytest.raises(RasterInputError, match="keeps no acquisition layers"):
            open_embeddings(latest, group=GROUP, time=DATES[0])


def test_resume_recomputes_only_the_forgotten_layer_unit(mumbai):
    store = mumbai["store"]
    entry = store / REGISTRY / f"{GROUP}@{DATES[0]}" / "1.0.json"
    before = _codes(store, "embeddings_by_date")
    entry.unlink()
    run = embed_region(mumbai["scenes"], store, mumbai["enc"], keep="all-dates", **SIZES)
    assert (run.summary.done, run.summary.skipped) == (1, 11)
    assert json.loads(entry.read_text())["date"] == DATES[0]
    for a, b in zip(before, _codes(store, "embeddings_by_date")):
        assert np.array_equal(a, b, equal_nan=True)


def test_undated_scene_is_refused(mumbai, tmp_path):
    undated = tmp_path / "mumbai.tif"
    undated.write_bytes(mumbai["scenes"][0].read_bytes())
    with pytest.raises(RasterInputError, match="the date of .*mumbai.* is not known"):
        embed_region([undated], tmp_path / "x.zarr", mumbai["enc"], keep="all-dates", **SIZES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mumbai.tif"]  # no store, no lock file


def test_change_on_two_layers_of_one_store(mumbai, tmp_path, capsys):
    store, out = mumbai["store"], tmp_path / "change"
    main(["change", f"{store}/{GROUP}@{DATES[0]}", f"{store}/{GROUP}@{DATES[1]}", str(out)])
    written = {p.name for p in out.iterdir()}
    assert {"score.tif", "mask.tif", "change.png"} <= written, written


def test_verify_checks_layer_units_and_repair_recomputes_a_damaged_one(mumbai):
    from earth_embed.outputs.zarr_verify import check_store
    from earth_embed.pipeline.repair import verify_store

    store = mumbai["store"]
    report = check_store(store)
    assert report.ok and len(report.units) == 12, str(report)
    shard = store / GROUP / "embeddings_by_date" / "c" / "1" / "0" / "0" / "1"
    before = _codes(store, "embeddings_by_date")
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    report = check_store(store)
    assert [u.key for u in report.failed] == [f"{GROUP}@{DATES[1]}/0.1"], str(report)
    verify_store(store, repair=True, progress=False)
    assert check_store(store).ok
    for a, b in zip(before, _codes(store, "embeddings_by_date")):
        assert np.array_equal(a, b, equal_nan=True)


def test_stac_item_per_acquisition_layer(mumbai, tmp_path):
    import pystac

    from earth_embed.outputs.stac import publish

    _, collection = publish(mumbai["store"], stac_dir=tmp_path / "stac")
    items = {i.id: i for i in pystac.Collection.from_file(str(collection)).get_items()}
    group = items["all-EPSG_4326"]
    assert (group.properties["start_datetime"][:10], group.properties["end_datetime"][:10]) == DATES
    for t, date in enumerate(DATES):
        item = items[f"all-EPSG_4326-{date}"]
        assert item.datetime is not None and item.datetime.date().isoformat() == date
        assert item.properties["earth_embed:layer"] == {"time_index": t, "date": date, "group": GROUP}
        assert item.properties["earth_embed:source_scenes"] == [f"mumbai_{date.replace('-', '')}"]
        assert item.assets["embeddings"].href.endswith("embeddings_by_date")
    assert len(items) == 3
