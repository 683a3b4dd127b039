"""A scene's acquisition date: the product's metadata first, then the file's own name, then its own folder's
name, never an ancestor folder's; a disagreement is said aloud. On real OSCD Mumbai crops (both dates)."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
import zarr

from earth_embed import RELEASE_BANDS, EarthEncoder
from earth_embed.api import embed_region
from earth_embed.inputs.spec import SceneSpec, path_dates, settle_scene
from tests.helpers.change_data import MUMBAI, write_crop

SIZE = 64
DATES = ("2015-11-30", "2018-03-19")  # OSCD Mumbai's two dates
SIZES = {"chunk": 64, "shard": 64, "halo": 32, "progress": False}


@pytest.fixture(scope="module")
def crops(shared_data, tmp_path_factory):
    """Both dates of a 64 px Mumbai crop, named by their dates, inside a folder dated otherwise."""
    root = tmp_path_factory.mktemp("dated")
    torch.manual_seed(0)
    enc = EarthEncoder.new("unet-resnet18", bands=RELEASE_BANDS, embed_dim=4)
    city, r0, c0 = MUMBAI
    folder = root / "downloads-2019-01-01"
    folder.mkdir()
    scenes = [
        write_crop(shared_data, src, city, r0, c0, SIZE, folder / f"mumbai_{date.replace('-', '')}.tif")
        for src, date in (("oscd-date1", DATES[0]), ("oscd", DATES[1]))
    ]
    return {"root": root, "scenes": scenes, "enc": enc}


def test_own_name_beats_a_dated_parent_folder(crops):
    """The acceptance case: scenes named by date inside ``downloads-2019-01-01/`` keep their own dates as the
    store's layers (before: both were dated 2019-01-01 and one layer was lost)."""
    store = crops["root"] / "all.zarr"
    embed_region(crops["scenes"], store, crops["enc"], keep="all-dates", **SIZES)
    g = zarr.open_group(store / "EPSG_4326", mode="r")
    assert g.attrs["geoemb:dates"] == list(DATES)
    scenes = zarr.open_group(store, mode="r").attrs["geoemb:source_scenes"]
    assert sorted(s["date"] for s in scenes) == list(DATES)


def test_rule_order_and_never_an_ancestor(tmp_path):
    safe = tmp_path / "archive-2024-05-12" / "S2A_MSIL1C_20170105T105421_N0204_R051_T31UDQ_20170105T105415.SAFE"
    safe.mkdir(parents=True)
    assert path_dates(str(safe)) == [("2017-01-05", "file name")]  # a folder scene's own folder is itself
    nested = tmp_path / "2019-01-01" / "scene_folder"
    nested.mkdir(parents=True)
    assert path_dates(str(nested)) == []  # an ancestor's date is never taken
    own_folder = str(tmp_path / "S2_2018-03-19" / "crop.tif")
    assert path_dates(own_folder) == [("2018-03-19", "folder name")]
    both = str(tmp_path / "downloads-2019-01-01" / "T31_20200601_crop.tif")
    assert path_dates(both) == [("2020-06-01", "file name"), ("2019-01-01", "folder name")]
    spec = SceneSpec.of(both)
    assert (spec.date, spec.date_from) == ("2020-06-01", "file name")
    given = SceneSpec.of(SceneSpec(both, date="2021-02-03"))
    assert (given.date, given.date_from) == ("2021-02-03", "")


def test_metadata_wins_over_the_name_and_says_so(crops, tmp_path, caplog):
    folder = tmp_path / "scene"
    folder.mkdir()
    tif = shutil.copy(crops["scenes"][0], folder / "mumbai_20151130.tif")
    (folder / "source.json").write_text(json.dumps({"date": "2015-12-01"}))
    with caplog.at_level(logging.WARNING, logger="earth_embed"):
        spec = settle_scene(SceneSpec.of(tif), crops["enc"])
    assert (spec.date, spec.date_from) == ("2015-12-01", "metadata")
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "dated 2015-12-01 from its metadata" in said and "file name says 2015-11-30" in said
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="earth_embed"):  # a date given by the caller is kept silently
        spec = settle_scene(SceneSpec(str(tif), date="2015-11-30"), crops["enc"])
    assert spec.date == "2015-11-30" and "dated" not in " ".join(r.getMessage() for r in caplog.records)
