"""Every bad input to ``earth-embed change`` as a table (issue 35): the exit status, a message that names the
problem and the fix, and nothing left on disk (no OUT, no hidden ``.OUT.partial-...`` folder). Plus the
leftover of a killed run, a codes/scales pair renamed together, and two scenes of one date. Real pixels: two
dates of a Mumbai crop (OSCD) and one of Hong Kong; docs/reliability.md lists the same cases."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from earth_embed import RELEASE_BANDS, EarthEncoder
from earth_embed.api import embed_raster
from earth_embed.cli import main
from earth_embed.outputs.embeddings import open_embeddings
from tests.helpers.change_data import HONGKONG, MUMBAI, write_crop

SIZE = 64


def _polygon(x0, y0, d, bowtie=False) -> dict:
    ring = [[x0, y0], [x0 + d, y0 + d], [x0 + d, y0], [x0, y0 + d], [x0, y0]] if bowtie else [
        [x0, y0], [x0 + d, y0], [x0 + d, y0 + d], [x0, y0 + d], [x0, y0]]  # fmt: skip
    return {"type": "Polygon", "coordinates": [ring]}


def _labels(path: Path, tif: Path, bowtie=False, null=False) -> Path:
    with rasterio.open(tif) as ds:
        t = ds.transform
    d = 8 * t.a
    features = [
        {"type": "Feature", "properties": {"class": "change"}, "geometry": _polygon(t.c + 4 * t.a, t.f - 20 * t.a, d, bowtie)},
        {"type": "Feature", "properties": {"class": "no change"}, "geometry": None if null else _polygon(t.c + 30 * t.a, t.f - 50 * t.a, d)},
    ]  # fmt: skip
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


@pytest.fixture(scope="module")
def env(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("change-bad")
    torch.manual_seed(0)
    EarthEncoder.new("unet-resnet18", bands=RELEASE_BANDS, embed_dim=4).save_pretrained(root / "enc")
    enc = EarthEncoder.from_pretrained(root / "enc")
    city, r0, c0 = MUMBAI
    p: dict = {"root": root, "enc": root / "enc"}
    for key, date in (("a", "oscd-date1"), ("b", "oscd")):
        p[f"scene_{key}"] = write_crop(shared_data, date, city, r0, c0, SIZE, root / f"{key}.tif")
        p[f"emb_{key}"] = embed_raster(enc, p[f"scene_{key}"], root / f"emb_{key}.tif", progress=False,
                                       dtype="float16", model_id=str(root / "enc"), mask="none")  # fmt: skip
    hk, hr, hc = HONGKONG
    p["far"] = write_crop(shared_data, "oscd", hk, hr, hc, SIZE, root / "hongkong.tif")
    with rasterio.open(p["scene_a"]) as ds:  # a label raster on A's grid (one band) and A without band names
        profile, data = ds.profile, ds.read()
    with rasterio.open(root / "labels.tif", "w", **{**profile, "count": 1, "dtype": "uint8"}) as out:
        out.write((data[0:1] > np.median(data[0])).astype(np.uint8) + 1)
    with rasterio.open(root / "unnamed.tif", "w", **profile) as out:
        out.write(data)
    p.update(label_raster=root / "labels.tif", unnamed=root / "unnamed.tif")
    p["bowtie"] = _labels(root / "bowtie.geojson", p["scene_a"], bowtie=True)
    p["null"] = _labels(root / "null.geojson", p["scene_a"], null=True)
    (root / "a_file").write_text("not a folder")
    p["a_file"] = root / "a_file"
    assert main(["change", str(p["emb_a"]), str(p["emb_b"]), str(root / "done"), "-q"]) == 0
    p["score"] = root / "done" / "score.tif"
    return p


# id, argv ({name} from env, {out} a fresh output folder), exit status, words the message must hold
CHANGE_CASES = [
    ("threshold-nan", "change {emb_a} {emb_b} {out} --threshold nan", 2, ["--threshold nan is not a number", "default rule"]),
    ("threshold-below-cos", "change {emb_a} {emb_b} {out} --score cos --threshold -1", 2,
     ["outside the range of the cos score (0 to 2)", "every pixel"]),
    ("threshold-above-cos", "change {emb_a} {emb_b} {out} --score cos --threshold 3", 2, ["(0 to 2)", "no pixel"]),
    ("threshold-negative-cva", "change {emb_a} {emb_b} {out} --score cva --threshold -0.5", 2, ["cva score (0 or more)"]),
    ("threshold-inf", "change {emb_a} {emb_b} {out} --threshold inf", 2, ["outside the range"]),
    ("min-area-negative", "change {emb_a} {emb_b} {out} --polygons gpkg --min-area -5", 2, ["--min-area -5", ">= 0"]),
    ("mask-buffer-negative", "change {scene_a} {scene_b} {out} -m {enc} --mask-buffer -1", 2, ["whole number", ">= 0"]),
    ("mask-buffer-negative-embeddings", "change {emb_a} {emb_b} {out} --mask-buffer -1", 2, ["whole number", ">= 0"]),
    ("min-level-negative", "change {emb_a} {emb_b} {out} --min-level -1", 2, ["--min-level -1", ">= 0", "no level floor"]),
    ("min-level-nan", "change {emb_a} {emb_b} {out} --min-level nan", 2, ["--min-level nan", "finite"]),
    ("min-level-with-cva", "change {emb_a} {emb_b} {out} --score cva --min-level 0.5", 2,
     ["--min-level needs a whitened score", "--score whitened-box5"]),
    ("same-file-both-dates", "change {emb_a} {emb_a} {out}", 2, ["A and B are the same input", "other date"]),
    ("label-raster-as-a", "change {label_raster} {scene_b} {out} -m {enc}", 2, ["has one band", "--labels"]),
    ("score-map-as-a", "change {score} {emb_b} {out}", 2, ["is an earth-embed 'change_score' raster", "two scenes"]),
    ("unnamed-bands-scene", "change {unnamed} {scene_b} {out} -m {enc}", 2, ["change has no --bands", "B02.tif"]),
    ("b-does-not-overlap-a", "change {scene_a} {far} {out} -m {enc}", 2, ["does not overlap A", "same ground"]),
    ("out-is-a-file", "change {emb_a} {emb_b} {a_file} --overwrite", 2, ["is a file", "folder"]),
    ("self-intersecting-label", "change {emb_a} {emb_b} {out} --labels {bowtie}", 2,
     ["invalid (feature 1: Self-intersection", "Fix geometries"]),
    ("null-label-geometry", "change {emb_a} {emb_b} {out} --labels {null}", 2, ["no geometry (feature 2)", "delete"]),
]  # fmt: skip


@pytest.mark.parametrize("case", CHANGE_CASES, ids=[c[0] for c in CHANGE_CASES])
def test_change_bad_input(case, env, tmp_path, capsys):
    name, argv, rc, words = case
    out = tmp_path / "out"
    args = [a.format(out=out, **{k: v for k, v in env.items() if not isinstance(v, dict)}) for a in argv.split()]
    assert main([*args, "-q"]) == rc
    err = capsys.readouterr().err
    assert all(w in err for w in words) and "Traceback" not in err, err
    assert not out.exists() and not [e for e in os.listdir(tmp_path) if e.startswith(".")]
    assert str(tmp_path) not in err.replace(str(out), "") or name == "b-does-not-overlap-a"  # no temporary path


def test_killed_change_leaves_nothing_the_rerun_or_clean_keeps(env, tmp_path):
    """kill -9 during `change` (a real subprocess): the hidden .OUT.partial-... folder is removed by the rerun
    (named) and by `earth-embed clean DIR`."""
    out = tmp_path / "out"
    code = (
        "import sys, time\n"
        "import earth_embed.apps.change\n"
        "c = sys.modules['earth_embed.apps.change']\n"
        "real = c._change_into\n"
        "def slow(*a):\n"
        "    r = real(*a); print('written', flush=True); time.sleep(60); return r\n"
        "c._change_into = slow\n"
        f"c.change({str(env['emb_a'])!r}, {str(env['emb_b'])!r}, {str(out)!r}, png=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "written"
    proc.kill()
    proc.wait()
    left = [e for e in os.listdir(tmp_path) if e.startswith(".out.partial-")]
    assert left and (tmp_path / left[0] / "score.tif").is_file()  # what a kill -9 leaves
    assert main(["clean", str(tmp_path)]) == 0
    assert not [e for e in os.listdir(tmp_path) if e.startswith(".")]
    shutil.copytree(env["root"] / "done", tmp_path / f".out.partial-host-{proc.pid}-0123abcd")  # again, then rerun
    assert main(["change", str(env["emb_a"]), str(env["emb_b"]), str(out), "-q"]) == 0
    assert out.is_dir() and not [e for e in os.listdir(tmp_path) if e.startswith(".")]


def test_codes_and_scales_renamed_together_still_pair(env, tmp_path):
    enc = EarthEncoder.from_pretrained(env["enc"])
    emb = embed_raster(
        enc, env["scene_a"], tmp_path / "emb.tif", progress=False, dtype="int8", model_id=str(env["enc"])
    )
    with open_embeddings(emb) as e:
        before = e.read()
    os.rename(tmp_path / "emb.tif", tmp_path / "ref.tif")
    os.rename(tmp_path / "emb.scales.tif", tmp_path / "ref.scales.tif")
    with open_embeddings(tmp_path / "ref.tif") as e:
        np.testing.assert_array_equal(e.read(), before)
    other = embed_raster(enc, env["scene_b"], tmp_path / "other.tif", progress=False, dtype="int8",
                         model_id=str(env["enc"]))  # fmt: skip
    os.replace(tmp_path / "other.scales.tif", tmp_path / "ref.scales.tif")  # scales of another run: refused
    with pytest.raises(Exception, match="does not belong to"):
        open_embeddings(tmp_path / "ref.tif")
    assert other.is_file()


def test_two_scenes_of_one_date_are_said_aloud(env, tmp_path, caplog):
    from earth_embed.api import embed_region

    d = tmp_path / "S2_2015-11-30"
    d.mkdir()
    one, two = shutil.copy(env["scene_a"], d / "x1.tif"), shutil.copy(env["scene_b"], d / "x2.tif")
    with caplog.at_level(logging.WARNING, logger="earth_embed"):
        embed_region([one, two], tmp_path / "s.zarr", str(env["enc"]), keep="all-dates", chunk=64, shard=64,
                     halo=32, progress=False)  # fmt: skip
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "are both dated 2015-11-30 and overlap" in said and "keeps" in said and "x1" in said
