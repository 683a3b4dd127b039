"""Saturated pixels in ``earth-embed change`` (issue 33, ``docs/reliability.md``): a Paris crop (OSCD) whose earlier date
holds a small object saturated at DN 28000 in B02-B08 (the highest score of the city before this fix). A pixel with a
saturated band in either date is invalid like nodata (``Scene.valid_mask``): it is nodata in the embedding, NaN in the
score, 0 in the mask, and not counted in the changed share."""

from __future__ import annotations

import json

import numpy as np
import rasterio
import torch
from affine import Affine

from earth_embed import RELEASE_BANDS, EarthEncoder
from earth_embed.apps.change_inputs import SATURATED_FILL, bands_on_grid, read_scene_on_grid
from earth_embed.cli import main
from earth_embed.inputs import S2_SATURATED, open_scene
from earth_embed.inputs.pixel_grid import Grid
from earth_embed.inputs.scene import SATURATION_BUFFER
from tests.helpers.change_data import square_grow, write_crop

#: A 64 px crop of Paris holding the saturated object of date A (rows 7-9, columns 215-217 of the city).
PARIS_SATURATED, SIZE = ("paris", 0, 184), 64


def test_saturated_pixels_are_invalid_in_the_scene_and_the_change_map(shared_data, tmp_path):
    city, r0, c0 = PARIS_SATURATED
    a = write_crop(shared_data, "oscd-date1", city, r0, c0, SIZE, tmp_path / "a.tif")
    b = write_crop(shared_data, "oscd", city, r0, c0, SIZE, tmp_path / "b.tif")
    with rasterio.open(a) as ds:
        saturated = (ds.read() >= S2_SATURATED).any(axis=0)
    assert 3 <= saturated.sum() <= 20  # the real object: a few pixels at DN 28000
    with open_scene(a, bands=RELEASE_BANDS) as scene:
        grown = square_grow(saturated, SATURATION_BUFFER)
        assert (scene.valid_mask() == ~grown).all()  # no DN 0 in the crop: the saturated pixels and their buffer
    torch.manual_seed(0)
    EarthEncoder.new("unet-resnet18", bands=RELEASE_BANDS, embed_dim=4).save_pretrained(tmp_path / "enc")
    out = tmp_path / "chg"
    argv = ["change", str(a), str(b), str(out), "-m", str(tmp_path / "enc"), "--no-png", "-q"]
    assert main(argv) == 0
    with rasterio.open(out / "embeddings_a.tif") as ds:
        emb = ds.read(1)
    with rasterio.open(out / "score.tif") as ds:
        score = ds.read(1)
    with rasterio.open(out / "mask.tif") as ds:
        mask = ds.read(1)
    report = json.loads((out / "change_report.json").read_text())
    assert np.isnan(emb[grown]).all()  # (the cloud mask may hide other pixels too)
    assert np.isnan(score[grown]).all() and (mask[grown] == 0).all()
    assert report["valid_pixels"] == int(np.isfinite(score).sum()) <= SIZE * SIZE - grown.sum()
    assert report["changed_pixels"] == int((mask == 2).sum())


def test_saturated_pixels_of_a_resampled_date_b_stay_invalid(shared_data, tmp_path):
    """B (Paris's earlier date, its own band files) on another grid than A (the later date, moved by half a pixel):
    ``change`` resamples B's bands onto A's grid, and every pixel drawing on a saturated pixel of B's own grids
    is invalid, though the bilinear blend puts many of them below the bound."""
    city, r0, c0 = PARIS_SATURATED
    a = write_crop(shared_data, "oscd", city, r0, c0, SIZE, tmp_path / "a.tif")
    with rasterio.open(a, "r+") as ds:
        ds.transform = ds.transform @ Affine.translation(0.5, 0.5)
        grid = Grid.of(ds)
    b = shared_data / "unlabelled" / "oscd-date1" / city
    dn = read_scene_on_grid(b, RELEASE_BANDS, grid)
    carried = (dn == SATURATED_FILL).all(axis=0)
    with bands_on_grid(b, RELEASE_BANDS, grid) as sources:
        plain = np.stack([ds.read(i, out_dtype=np.float32) for ds, i, _ in sources])
    hidden = carried & ~(plain >= S2_SATURATED).any(axis=0)
    assert carried.sum() >= 30 and hidden.sum() >= 10  # the blend alone would have left these valid
    torch.manual_seed(0)
    EarthEncoder.new("unet-resnet18", bands=RELEASE_BANDS, embed_dim=4).save_pretrained(tmp_path / "enc")
    out = tmp_path / "chg"
    assert main(["change", str(a), str(b), str(out), "-m", str(tmp_path / "enc"), "--no-png", "-q"]) == 0
    with rasterio.open(out / "embeddings_b.tif") as ds:
        emb = ds.read(1)
    with rasterio.open(out / "score.tif") as ds:
        score = ds.read(1)
    grown = square_grow(carried, SATURATION_BUFFER)
    assert np.isnan(emb[grown]).all() and np.isnan(score[grown]).all()
    assert np.isfinite(score).mean() > 0.7  # the clear ground is scored
