"""``change --mask-buffer`` on real cloudy pixels (issue 33): a Paris crop (OSCD) whose later date holds a cloud that
ukis-csmask masks. The buffer reaches the embedding of the scenes (the masked area grows and holds the unbuffered
one), the default is ``change_sources.DEFAULT_MASK_BUFFER`` as the README says, and on embeddings it is said unused."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import rasterio
import torch

from earth_embed import RELEASE_BANDS, EarthEncoder
from earth_embed.apps.change import change
from earth_embed.apps.change_sources import DEFAULT_MASK_BUFFER
from earth_embed.cli import main
from tests.helpers.change_data import write_crop

pytest.importorskip("ukis_csmask")

#: A 128 px crop of Paris whose later date holds most of a small cloud (18 % masked with no buffer).
PARIS_CLOUD, SIZE = ("paris", 280, 130), 128


@pytest.fixture(scope="module")
def runs(shared_data, tmp_path_factory):
    """``earth-embed change`` on the crop with --mask-buffer 0 and 4 and with no --mask-buffer (a tiny encoder:
    the mask does not depend on it): each run's nodata, report and later date's MASK tag."""
    root = tmp_path_factory.mktemp("paris-cloud")
    torch.manual_seed(0)
    EarthEncoder.new("unet-resnet18", bands=RELEASE_BANDS, embed_dim=4).save_pretrained(root / "enc")
    city, r0, c0 = PARIS_CLOUD
    a = write_crop(shared_data, "oscd-date1", city, r0, c0, SIZE, root / "a.tif")
    b = write_crop(shared_data, "oscd", city, r0, c0, SIZE, root / "b.tif")
    out = {}
    for name, extra in (("0", ["--mask-buffer", "0"]), ("4", ["--mask-buffer", "4"]), ("default", [])):
        folder = root / f"out-{name}"
        assert main(["change", str(a), str(b), str(folder), "-m", str(root / "enc"), "--no-png", "-q", *extra]) == 0
        with rasterio.open(folder / "score.tif") as ds:
            nodata = ~np.isfinite(ds.read(1))
        with rasterio.open(folder / "embeddings_b.tif") as ds:
            tag = ds.tags()["MASK"]
        report = json.loads((folder / "change_report.json").read_text())
        out[name] = {"nodata": nodata, "report": report, "mask_tag": tag, "folder": folder}
    return out


def test_mask_buffer_grows_the_masked_area(runs):
    zero, four = runs["0"], runs["4"]
    assert 0.05 < zero["nodata"].mean() < four["nodata"].mean() < 0.9  # a real cloud, grown by 4 px
    assert (four["nodata"] | ~zero["nodata"]).all()  # every pixel masked without a buffer stays masked
    assert zero["mask_tag"] == "ukis-csmask" and four["mask_tag"] == "ukis-csmask (buffer 4 px)"
    assert any("grown by 4 px" in n for n in four["report"]["notes"])


def test_default_mask_buffer_is_the_documented_one(runs, repo_root):
    default = runs["default"]
    assert any(f"grown by {DEFAULT_MASK_BUFFER} px" in n for n in default["report"]["notes"])
    assert (default["nodata"] == runs[str(DEFAULT_MASK_BUFFER)]["nodata"]).all()  # a buffer the fixture ran
    readme = " ".join((repo_root / "README.md").read_text().split())
    said = re.search(r"grown by `--mask-buffer PX` as in `embed` \(default (\d+)", readme)
    assert said is not None and int(said.group(1)) == DEFAULT_MASK_BUFFER


def test_mask_buffer_on_embeddings_is_said_unused(runs, tmp_path):
    folder = runs["0"]["folder"]
    result = change(
        folder / "embeddings_a.tif", folder / "embeddings_b.tif", tmp_path / "out", mask_buffer=3, png=False
    )
    assert any("--mask-buffer 3 is not used" in n for n in result.notes)
