"""similar and cluster on real embeddings, and the embedding reader's dequantisation."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from PIL import Image
from pyogrio.raw import write as write_vector
from rasterio.windows import Window

from earth_embed import quantize
from earth_embed.apps import cluster, similar
from earth_embed.cli import main
from earth_embed.errors import RasterInputError
from earth_embed.outputs.embeddings import open_embeddings
from earth_embed.outputs.geotiff import GeoTiffWriter
from tests.helpers.apps_data import COL0, CROP_POINTS, ROW0, lonlat_of_pixels


def test_similar_to_one_point_is_one_there(crop_embeddings, tmp_path):
    c, r = CROP_POINTS["water"][0]
    (lonlat,) = lonlat_of_pixels(crop_embeddings, [(c, r)])
    out = similar(crop_embeddings, tmp_path / "sim.tif", points=[tuple(lonlat)])
    with rasterio.open(out) as ds, rasterio.open(crop_embeddings) as emb:
        sim = ds.read(1)
        assert ds.crs == emb.crs and ds.transform == emb.transform and ds.tags()["KIND"] == "similarity"
    assert abs(sim[r - ROW0, c - COL0] - 1) < 1e-3 and np.nanmin(sim) >= -1.001 and np.nanmax(sim) <= 1.001
    # water looks more like water than built-up land does
    water = np.mean([sim[r - ROW0, c - COL0] for c, r in CROP_POINTS["water"][1:]])
    built = np.mean([sim[r - ROW0, c - COL0] for c, r in CROP_POINTS["built"]])
    assert water > built
    with Image.open(tmp_path / "sim.png") as im:
        assert im.width > 400


def test_similar_to_a_polygon_and_from_the_cli(crop_embeddings, tmp_path, capsys):
    with rasterio.open(crop_embeddings) as ds:
        x0, y0 = ds.transform @ (100, 100)
        x1, y1 = ds.transform @ (120, 120)
        crs = ds.crs.to_string()
    path = tmp_path / "query.fgb"
    write_vector(path, shapely.to_wkb(np.array([shapely.box(x0, y1, x1, y0)])), [], fields=[], crs=crs,
                 driver="FlatGeobuf", geometry_type="Polygon")  # fmt: skip
    assert main(["similar", str(crop_embeddings), "--polygon", str(path), "--out", str(tmp_path / "p.tif"), "-q"]) == 0
    assert "wrote" in capsys.readouterr().out
    with rasterio.open(tmp_path / "p.tif") as ds:
        assert "400 px" in ds.tags()["QUERY"]
        sim = ds.read(1)
    outside = np.ones(sim.shape, bool)
    outside[100:120, 100:120] = False
    # the query pixels are more like their mean than the rest of the crop is
    assert np.nanmean(sim[100:120, 100:120]) > np.nanmean(sim[outside]) + 0.1
    assert (tmp_path / "p.png").is_file()


def test_cluster_map(crop_embeddings, tmp_path):
    out = cluster(crop_embeddings, tmp_path / "k.tif", k=5, sample=5000)
    with rasterio.open(out) as ds:
        k = ds.read(1)
        assert ds.colormap(1)[1][3] == 255 and "cluster 5" in ds.tags()["CLASS_NAMES"]
    values, counts = np.unique(k, return_counts=True)
    assert list(values) == [1, 2, 3, 4, 5]
    assert counts[0] >= counts[-1]  # numbered by size (in the sample)
    again = cluster(crop_embeddings, tmp_path / "k2.tif", k=5, sample=5000, png=False)
    with rasterio.open(again) as ds:
        assert (ds.read(1) == k).all()  # same seed, same map
    with Image.open(tmp_path / "k.png") as im:
        assert im.width > 384
    # water and built-up points fall in different clusters
    water = {int(k[r - ROW0, c - COL0]) for c, r in CROP_POINTS["water"]}
    built = {int(k[r - ROW0, c - COL0]) for c, r in CROP_POINTS["built"]}
    assert not water & built


def test_int8_embeddings_are_dequantised(tmp_path):
    """int8 codes + per-pixel scales (the one rule of region/quantize.py, as `embed` writes them) read back."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 40, 40)).astype(np.float32)
    x[:, :2, :2] = np.nan
    codes, scales = quantize.quantize(x)
    geo = dict(height=40, width=40, crs="EPSG:32618", transform=Affine(10, 0, 0, 0, -10, 0))
    tags = {"KIND": "embeddings", **quantize.metadata(), "EMBEDDING_SCALES_FILE": "q.scales.tif"}
    with GeoTiffWriter(tmp_path / "q.tif", count=3, dtype="int8", tags=tags, **geo) as w:
        w.write(0, 0, codes)
    with GeoTiffWriter(tmp_path / "q.scales.tif", count=1, dtype="float32", **geo) as w:
        w.write(0, 0, scales[None])
    with open_embeddings(tmp_path / "q.tif") as q:
        a = q.read()
    assert np.array_equal(np.isnan(a), np.isnan(x))
    assert np.nanmax(np.abs(a - x) - scales / 2) <= 1e-6  # half a code step per pixel


def test_region_store_and_its_cogs(crop_embeddings, tmp_path):
    """A region store (int8 codes + per-pixel scales, written by the region engine) and the COGs exported
    from it read back as the float embeddings of `embed`, and the apps run on both."""
    from earth_embed import EarthEncoder
    from earth_embed.outputs import cog
    from earth_embed.outputs.zarr_store import RegionStore
    from earth_embed.tiling.engine import RunOptions, run_plan
    from earth_embed.tiling.plan import RegionPlan

    scene = crop_embeddings.parent / "crop.tif"  # the 384 x 384 px crop the fixture embedded
    with open_embeddings(crop_embeddings) as emb:
        x = emb.read()
        model_id, transform = emb.tags["MODEL"], emb.transform
    model = EarthEncoder.from_pretrained(model_id).eval()
    plan = RegionPlan.from_scenes([scene], model, chunk=128, shard=256)
    store = RegionStore.create(tmp_path / "out.zarr", plan, model_id=model_id)
    run_plan(plan, lambda: model, store, RunOptions(progress=False))
    tiles = cog.export_cogs(store.path, tmp_path / "cogs")
    with open_embeddings(store.path) as z, open_embeddings(tiles[0].path) as c:
        assert z.model == c.model == model_id and z.transform == transform == c.transform
        from_store, from_cog = z.read(Window(0, 0, 256, 256)), c.read(Window(0, 0, 256, 256))
    assert np.array_equal(from_store, from_cog, equal_nan=True)
    # the same encoder on the same pixels: int8 rounding and tiling aside, the same embeddings
    assert np.abs(from_store - x[:, :256, :256]).mean() < 0.02 * np.abs(x).mean()
    assert cluster(store.path, tmp_path / "k.tif", k=3, sample=2000, png=False).is_file()
    assert cluster(tiles[0].path, tmp_path / "k2.tif", k=3, sample=2000, png=False).is_file()
    # the preview reads a store as it reads a GeoTIFF: PCA panel alone, or beside the scene's RGB
    from PIL import Image

    from earth_embed.apps.preview import make_preview

    with Image.open(make_preview(store.path, tmp_path / "z.png", rgb=False)) as one:
        assert one.size == (384, 384 + 18)  # the store's grid at full size, plus the title strip
    with Image.open(make_preview(store.path, tmp_path / "z2.png", src=str(scene))) as two:
        assert two.size == (2 * 384 + 8, 384 + 18)
    with pytest.raises(RasterInputError, match="region store"):
        make_preview(store.path, tmp_path / "z3.png")
    tiles[0].scales_path.unlink()
    with pytest.raises(RasterInputError, match="per-pixel scales"):
        open_embeddings(tiles[0].path)
