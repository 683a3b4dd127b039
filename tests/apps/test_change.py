"""earth-embed change on real OSCD city pairs: score direction on labelled urban change, the refusals (other
model, grid, storage rule), the command end to end, the fitted head, and two scenes on two grids."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch

from earth_embed import EarthEncoder
from earth_embed.api import embed_raster
from earth_embed.apps import change
from earth_embed.apps.change_inputs import IncomparableError, check_comparable
from earth_embed.apps.change_mask import DEFAULT_RULE, auto_threshold
from earth_embed.apps.change_scores import cosine_change, cva_change, otsu_threshold, pooled_std, smooth_map
from earth_embed.cli import main
from earth_embed.outputs.embeddings import EmbeddingRaster, open_embeddings
from earth_embed.outputs.geotiff import GeoTiffWriter
from earth_embed.released import find_released
from tests.helpers.change_data import HONGKONG, MUMBAI, crop_labels, write_crop, write_label_points

SIZE = 256


def _read(path) -> np.ndarray:
    with open_embeddings(path) as e:
        x = e.read()
    return x.reshape(x.shape[0], -1).T


def _bands(path) -> np.ndarray:
    with rasterio.open(path) as ds:
        x = ds.read().astype(np.float32)
    return x.reshape(x.shape[0], -1).T


def test_changed_pixels_score_higher(mumbai):
    y = mumbai["y"].ravel()
    assert 0.03 < y.mean() < 0.2  # the crop was chosen for its change
    raw_a, raw_b = _bands(mumbai["scene_a"]), _bands(mumbai["scene_b"])
    emb_a, emb_b = _read(mumbai["emb_a"]), _read(mumbai["emb_b"])
    scores = {
        "raw cva": cva_change(raw_a, raw_b, pooled_std(raw_a, raw_b)),
        "encoder cva": cva_change(emb_a, emb_b, pooled_std(emb_a, emb_b)),
        "encoder cos": cosine_change(emb_a, emb_b),
    }
    for name, s in scores.items():
        changed, same = s[y == 1].mean(), s[y == 0].mean()
        assert changed > 1.3 * same, f"{name}: changed {changed:.3f} vs unchanged {same:.3f}"
    # Otsu's cut lies between the two classes' typical scores
    s = scores["encoder cva"]
    assert np.median(s[y == 0]) < otsu_threshold(s) < np.percentile(s[y == 1], 90)


def test_cli_writes_score_cog_mask_png_and_polygons(mumbai, tmp_path, capsys):
    out = tmp_path / "cos"
    args = ["change", str(mumbai["emb_a"]), str(mumbai["emb_b"]), str(out), "--score", "cos", "--polygons", "gpkg"]
    assert main([*args, "--min-area", "1000", "-q"]) == 0
    assert "changed" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"score.tif", "mask.tif", "change.png", "change_report.json",
                                              "changes.gpkg"}  # fmt: skip
    y = mumbai["y"]
    with (
        rasterio.open(out / "score.tif") as s,
        rasterio.open(out / "mask.tif") as m,
        rasterio.open(mumbai["emb_a"]) as e,
    ):
        assert s.dtypes[0] == "float32" and s.crs == e.crs and s.transform == e.transform
        assert s.tags()["CHANGE_SCORE"] == "cos" and m.dtypes[0] == "uint8"
        score, mask = s.read(1), m.read(1)
        thr = float(m.tags()["THRESHOLD"])
    assert np.isfinite(score).all() and set(np.unique(mask)) == {1, 2}
    assert thr == pytest.approx(auto_threshold(score.ravel(), *DEFAULT_RULE), rel=1e-5)  # every pixel is sampled
    assert (score[mask == 2] > thr).all() and (mask == 2).sum() <= (score > thr).sum()  # small patches dropped
    assert (mask[y == 1] == 2).mean() > 2 * (mask[y == 0] == 2).mean()  # change flagged where it happened
    report = json.loads((out / "change_report.json").read_text())
    assert report["changed_pixels"] == int((mask == 2).sum()) and report["min_area_m2"] == 1000
    assert report["polygon_count"] > 0 and str(tmp_path / "cos") in report["polygons"]  # final paths, not temporary
    from pyogrio import read_info

    info = read_info(out / "changes.gpkg")
    assert info["features"] == report["polygon_count"] and list(info["fields"]) == ["pixels", "area_m2", "mean_score"]
    # a second run into the same folder is refused without --overwrite
    assert main([*args, "-q"]) == 2


def test_nodata_in_either_date_stays_nodata_after_smoothing(mumbai, tmp_path):
    with rasterio.open(mumbai["emb_b"]) as ds:
        data, tags, profile = ds.read(), ds.tags(), ds.profile
    data[:, 100:140, 60:90] = np.nan  # a hole in date B
    holed = tmp_path / "emb_b_holed.tif"
    with GeoTiffWriter(holed, height=profile["height"], width=profile["width"], count=profile["count"],
                       crs=profile["crs"], transform=profile["transform"], dtype="float16", tags=tags) as w:  # fmt: skip
        w.write(0, 0, data)
    res = change(mumbai["emb_a"], holed, tmp_path / "out", score="cva", smooth=5, threshold=10.0, png=False)
    with rasterio.open(res.score) as s, rasterio.open(res.mask) as m:
        score, mask = s.read(1), m.read(1)
    hole = np.zeros(score.shape, bool)
    hole[100:140, 60:90] = True
    assert np.isnan(score[hole]).all() and np.isfinite(score[~hole]).all()
    assert (mask[hole] == 0).all() and (mask[~hole] > 0).all()
    assert res.threshold == 10.0 and res.valid_pixels == (~hole).sum() and res.png is None
    raw = np.full(score.shape, np.nan, np.float32)  # the smoothed map is the box mean of the unsmoothed one
    a, b = _read(mumbai["emb_a"]), _read(holed)
    ok = ~hole.ravel()
    raw.ravel()[ok] = cva_change(a[ok], b[ok], pooled_std(a[ok], b[ok]))
    np.testing.assert_allclose(score, smooth_map(raw, 5), rtol=1e-4, atol=1e-4)


def test_windows_with_halos_give_the_whole_map(mumbai, tmp_path, monkeypatch):
    """Read in 96 px windows (each with a halo for the box mean), the map is the one read in one window."""
    whole = change(mumbai["emb_a"], mumbai["emb_b"], tmp_path / "whole", score="cos", smooth=7, png=False)
    tiled_windows = EmbeddingRaster.windows
    monkeypatch.setattr(EmbeddingRaster, "windows", lambda self, size=96: tiled_windows(self, size))
    with open_embeddings(mumbai["emb_a"]) as e:
        assert len(list(e.windows())) == 9
    tiled = change(mumbai["emb_a"], mumbai["emb_b"], tmp_path / "tiled", score="cos", smooth=7, png=False)
    default_tiled = change(mumbai["emb_a"], mumbai["emb_b"], tmp_path / "default_tiled", png=False)  # box + smooth
    monkeypatch.undo()
    default_whole = change(mumbai["emb_a"], mumbai["emb_b"], tmp_path / "default_whole", png=False)
    for x, y in ((whole, tiled), (default_whole, default_tiled)):
        with rasterio.open(x.score) as a, rasterio.open(y.score) as b:
            np.testing.assert_allclose(a.read(1), b.read(1), rtol=1e-4, atol=1e-5)
        assert x.changed_pixels == y.changed_pixels and x.threshold == pytest.approx(y.threshold, rel=1e-5)


def test_fitted_head_from_labelled_points(mumbai, tmp_path):
    y = mumbai["y"]
    pts = write_label_points(tmp_path / "labels.geojson", mumbai["scene_a"], y, 40)
    res = change(mumbai["emb_a"], mumbai["emb_b"], tmp_path / "fit", labels=pts, block_size=64, folds=3, png=False)
    cv = res.report["cross_validation"]
    assert res.report["score"] == "fitted" and cv["change_class"] == "change"
    assert cv["counts"] == {"no change": 40, "change": 40} and cv["folds"] == 3
    assert cv["per_class_iou"]["change"] > 0.3
    with rasterio.open(res.score) as ds:
        p = ds.read(1)
    assert p.min() >= 0 and p.max() <= 1
    assert p[y == 1].mean() > p[y == 0].mean() + 0.2  # over every pixel, not only the 80 labelled
    with pytest.raises(Exception, match="labels"):
        change(mumbai["emb_a"], mumbai["emb_b"], tmp_path / "x", score="cos", labels=pts)


def _save_twin(enc: EarthEncoder, folder) -> str:
    torch.manual_seed(0)
    EarthEncoder(enc.config).save_pretrained(folder)
    return str(folder)


def test_refuses_other_model_grid_and_storage(mumbai, shared_data, tmp_path, capsys):
    root, enc = tmp_path, mumbai["encoder"]
    twin = _save_twin(enc, root / "twin")
    other_model = embed_raster(EarthEncoder.from_pretrained(twin), mumbai["scene_b"], root / "twin.tif",
                               progress=False, dtype="float16", model_id=twin)  # fmt: skip
    city, r0, c0 = MUMBAI
    shifted_scene = write_crop(shared_data, "oscd", city, r0 + 8, c0, SIZE, root / "b_shift.tif")
    shifted = embed_raster(enc, shifted_scene, root / "shift.tif", progress=False, dtype="float16",
                           model_id=find_released("encoder"))  # fmt: skip
    int8 = embed_raster(enc, mumbai["scene_b"], root / "int8.tif", progress=False, dtype="int8",
                        model_id=find_released("encoder"))  # fmt: skip
    cases = {other_model: "different models", shifted: "different grids", int8: "different rules"}
    with open_embeddings(mumbai["emb_a"]) as a:
        for path, what in cases.items():
            with open_embeddings(path) as b, pytest.raises(IncomparableError, match=what) as err:
                check_comparable(a, b)
            msg = str(err.value)
            assert str(mumbai["emb_a"]) in msg and str(path) in msg  # names both sides
    assert main(["change", str(mumbai["emb_a"]), str(other_model), str(root / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "different models" in err and twin in err and find_released("encoder") in err
    assert not (root / "out").exists() and not list(root.glob(".out.partial*"))  # nothing left behind


def test_two_scenes_on_two_grids(shared_data, tmp_path, encoder_name):
    """Hong Kong's dates come from two MGRS tiles (540 x 695 vs 538 x 693 px over the same bounds): B's bands
    are resampled onto A's grid before embedding, and labelled change still scores higher."""
    city, r0, c0 = HONGKONG
    a = write_crop(shared_data, "oscd-date1", city, r0, c0, SIZE, tmp_path / "a.tif")
    b = write_crop(shared_data, "oscd", city, r0, c0, SIZE, tmp_path / "b.tif")
    with rasterio.open(a) as da, rasterio.open(b) as db:
        assert da.transform != db.transform
    res = change(a, b, tmp_path / "out", score="cva", png=False)
    assert res.embeddings is not None and all(p.parent == res.out_dir for p in res.embeddings)
    assert any("resampled" in n for n in res.notes)
    with rasterio.open(res.embeddings[0]) as ea, rasterio.open(res.embeddings[1]) as eb, rasterio.open(a) as da:
        assert ea.transform == eb.transform == da.transform and ea.tags()["MODEL"] == eb.tags()["MODEL"]
    assert not list(res.out_dir.glob(".b_bands*"))  # the resampled bands are not kept
    with rasterio.open(res.score) as ds:
        s = ds.read(1)
    y = crop_labels(shared_data, city, r0, c0, SIZE)
    assert np.nanmean(s[y == 1]) > 1.3 * np.nanmean(s[y == 0])
