"""The public change scorer (``change_scores.score_map``), the threshold rules and the minimum area, on a real
OSCD city pair (a 256 px crop of Mumbai, 7 % labelled urban change): raw bands and released embeddings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from scipy import ndimage

from earth_embed.apps import change
from earth_embed.apps.change_mask import DEFAULT_RULE, auto_threshold, drop_small, min_pixels
from earth_embed.apps.change_scores import (
    DEFAULT_SCORE,
    HALO,
    MAP_SCORES,
    ScoreStats,
    cva_change,
    pooled_std,
    prepare,
    score_map,
)
from earth_embed.errors import EarthEmbedError
from earth_embed.outputs.embeddings import open_embeddings


def _maps(mumbai) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for name, key in (("bands", "scene"), ("embeddings", "emb")):
        pair = []
        for date in ("a", "b"):
            if name == "bands":
                with rasterio.open(mumbai[f"{key}_{date}"]) as ds:
                    pair.append(ds.read().astype(np.float32))
            else:
                with open_embeddings(mumbai[f"{key}_{date}"]) as e:
                    pair.append(e.read())
        out[name] = (pair[0], pair[1])
    return out


def _auroc(score: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    ok = np.isfinite(score)
    return float(roc_auc_score(y[ok], score[ok]))


@pytest.mark.parametrize("score", MAP_SCORES)
def test_score_map_ranks_real_change_on_bands_and_embeddings(mumbai, score):
    y = mumbai["y"]
    for name, (a, b) in _maps(mumbai).items():
        s = score_map(a, b, score)
        assert s.shape == y.shape and s.dtype == np.float32 and np.isfinite(s).all(), (name, score)
        assert _auroc(s, y) > 0.6, f"{score} on {name}: AUROC {_auroc(s, y):.3f}"
        assert np.median(s[y == 1]) > np.median(s[y == 0])


def test_score_map_cva_is_the_row_cva_and_nodata_stays_nodata(mumbai):
    a, b = _maps(mumbai)["embeddings"]
    d = a.shape[0]
    rows_a, rows_b = a.reshape(d, -1).T, b.reshape(d, -1).T
    np.testing.assert_allclose(
        score_map(a, b, "cva").ravel(), cva_change(rows_a, rows_b, pooled_std(rows_a, rows_b)), rtol=1e-5
    )
    b2 = b.copy()
    b2[:, 100:120, 40:60] = np.nan
    for score in MAP_SCORES:
        s = score_map(a, b2, score)
        assert np.isnan(s[100:120, 40:60]).all() and np.isfinite(s[:90]).all(), score
    with pytest.raises(EarthEmbedError, match="one shape"):
        score_map(a, b[:, :-1], "cva")
    with pytest.raises(EarthEmbedError, match="Unknown score"):
        score_map(a, b, "nope")


def test_shift_min_forgives_a_one_pixel_misregistration(mumbai):
    """Date A against itself moved by one pixel: no change, only misregistration. CVA sees a change wherever
    there is texture; the shift-tolerant score sees (almost) none away from the border."""
    for name, (a, _) in _maps(mumbai).items():
        moved = np.roll(a, 1, axis=2)
        inner = (slice(2, -2), slice(2, -2))
        cva, tolerant = score_map(a, moved, "cva")[inner], score_map(a, moved, "shift-min")[inner]
        assert np.median(tolerant) < 0.2 * np.median(cva), name
        assert np.allclose(score_map(a, a, "cva"), 0) and np.allclose(score_map(a, a, "shift-min"), 0)


@pytest.mark.parametrize("score", MAP_SCORES)
def test_windows_with_stats_and_halo_give_the_whole_map(mumbai, score):
    a, b = _maps(mumbai)["embeddings"]
    whole = score_map(a, b, score)
    stats = ScoreStats(score, a.shape[0])
    pa, pb = prepare(a, b, score)
    stats.add(pa, pb)
    halo, rows = HALO[score], []
    for r0 in range(0, a.shape[1], 100):
        lo, hi = max(0, r0 - halo), min(a.shape[1], r0 + 100 + halo)
        part = score_map(a[:, lo:hi], b[:, lo:hi], score, stats=stats)
        rows.append(part[r0 - lo : r0 - lo + min(100, a.shape[1] - r0)])
    np.testing.assert_allclose(np.concatenate(rows), whole, rtol=1e-4, atol=1e-5)


def test_threshold_rules_on_a_real_score_map(mumbai):
    a, b = _maps(mumbai)["embeddings"]
    s = score_map(a, b).ravel()
    assert abs((s > auto_threshold(s, "share", 3.0)).mean() - 0.03) < 0.002
    med = np.median(s)
    assert auto_threshold(s, "robust-z", 4.0) == pytest.approx(med + 4 * 1.4826 * np.median(np.abs(s - med)), rel=1e-6)
    default = (s > auto_threshold(s, *DEFAULT_RULE)).mean()
    assert 0.005 < default < 0.1  # about the true change share (7 % in this crop, 0.3-3.8 % over whole cities)
    with pytest.raises(EarthEmbedError, match="Unknown threshold rule"):
        auto_threshold(s, "mean", 1.0)


def test_min_area_drops_small_patches_of_a_real_mask(mumbai):
    a, b = _maps(mumbai)["embeddings"]
    s = score_map(a, b)
    changed = s > auto_threshold(s.ravel(), "otsu")
    kept = drop_small(changed, 8)
    eight = np.ones((3, 3), bool)
    labels, _ = ndimage.label(changed, structure=eight)
    sizes = np.bincount(labels.ravel())[1:]
    assert (sizes < 8).any() and (sizes >= 8).any()  # the real mask has both
    assert kept.sum() == sizes[sizes >= 8].sum() and not (kept & ~changed).any()
    kept_sizes = np.bincount(ndimage.label(kept, structure=eight)[0].ravel())[1:]
    assert kept_sizes.min() >= 8
    assert drop_small(changed, 1) is changed
    assert min_pixels(1000.0, 100.0) == 10 and min_pixels(1001.0, 100.0) == 11 and min_pixels(0.0, 100.0) == 1


def test_default_map_min_area_polygons_share_and_missing_parents(mumbai, tmp_path):
    out = tmp_path / "new" / "deeper" / "chg"
    res = change(mumbai["emb_a"], mumbai["emb_b"], out, polygons="geojson", min_area=1000.0)
    rep = res.report
    assert out.is_dir() and rep["min_area_m2"] == 1000.0 and rep["score"] == DEFAULT_SCORE
    with rasterio.open(res.mask) as m, rasterio.open(res.score) as s:
        mask, score, thr = m.read(1), s.read(1), float(m.tags()["THRESHOLD"])
    assert thr == pytest.approx(auto_threshold(score.ravel(), *DEFAULT_RULE), rel=1e-5)
    changed = mask == 2
    assert (score[changed] > thr).all() and rep["changed_share"] == pytest.approx(changed.mean())
    sizes = np.bincount(ndimage.label(changed, structure=np.ones((3, 3), bool))[0].ravel())[1:]
    assert sizes.min() >= rep["min_area_px"] >= 5  # 1000 m² of ~12 m pixels
    feats = json.loads(res.polygons.read_text())["features"]
    assert len(feats) == rep["polygon_count"] == len(sizes) and min(f["properties"]["area_m2"] for f in feats) >= 1000
    # a failure leaves no folder behind, not even the parents it created
    bad = tmp_path / "gone" / "chg"
    with pytest.raises(EarthEmbedError):
        change(mumbai["emb_a"], mumbai["scene_b"], bad, model=str(tmp_path / "no-such-model"))
    assert not (tmp_path / "gone").exists()


def test_recentred_whitening_keeps_the_covariance_and_takes_the_other_pairs_mean(mumbai):
    """The real pair's mean difference is the dates' radiometric offset: a date against itself scores ||W mean||
    everywhere under it, and zero once re-centred on its own (zero) mean difference."""
    a, b = _maps(mumbai)["embeddings"]
    stats = ScoreStats("whitened", a.shape[0])
    stats.add(*prepare(a, b, "whitened"))
    offset = score_map(a, a, "whitened", stats=stats)
    assert offset.min() > 0.5 and np.ptp(offset) < 1e-3
    own = stats.recentred(*prepare(a, a, "whitened"))
    assert np.allclose(score_map(a, a, "whitened", stats=own), 0, atol=1e-4)
    np.testing.assert_array_equal(own.params()["whiten"], stats.params()["whiten"])
    assert stats.recentred(a, b) is not stats
