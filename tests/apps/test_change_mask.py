"""The change mask's rules on real OSCD pixels (a 256 px Mumbai crop, 7 % labelled urban change, and date A
against itself moved by 0.5 px: no change): the change level on a fixed scale, the noise floor of the threshold
and the default mask on a changed and on a still pair."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from earth_embed.apps import change
from earth_embed.apps.change_mask import DEFAULT_LEVEL, auto_threshold, describe_rule
from earth_embed.apps.change_scores import DEFAULT_SCORE, ScoreStats, level_map, prepare, score_map
from earth_embed.errors import EarthEmbedError
from earth_embed.outputs.embeddings import open_embeddings


def _emb(path) -> np.ndarray:
    with open_embeddings(path) as e:
        return e.read()


def _bands(path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read().astype(np.float32)


def _level(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    stats = ScoreStats(DEFAULT_SCORE, a.shape[0])
    stats.add(*prepare(a, b, DEFAULT_SCORE))
    return level_map(a, b, stats)


@pytest.mark.parametrize("source", ["bands", "embeddings"])
def test_level_is_low_on_a_still_pair_and_high_on_change(mumbai, mumbai_still, source):
    read = _bands if source == "bands" else _emb
    key = "scene" if source == "bands" else "emb"
    y = mumbai["y"]
    real = _level(read(mumbai[f"{key}_a"]), read(mumbai[f"{key}_b"]))
    still = _level(read(mumbai_still[f"{key}_0"]), read(mumbai_still[f"{key}_1"]))
    assert real.shape == y.shape and np.isfinite(real).all() and np.isfinite(still).all()
    assert np.median(real[y == 1]) > 1.5 * np.median(real[y == 0])
    # the whitened score is scaled by the pair's own differences, the level is not
    assert np.median(still) < 0.5 * np.median(real[y == 0]), (np.median(still), np.median(real[y == 0]))
    s_real, s_still = (
        score_map(read(mumbai[f"{key}_a"]), read(mumbai[f"{key}_b"])),
        score_map(read(mumbai_still[f"{key}_0"]), read(mumbai_still[f"{key}_1"])),
    )
    assert np.median(s_still) > 0.5 * np.median(s_real[y == 0])
    with pytest.raises(EarthEmbedError, match="whitened"):
        stats = ScoreStats("cva", real.shape[0])
        level_map(read(mumbai[f"{key}_a"]), read(mumbai[f"{key}_b"]), stats)


def test_noise_floor_raises_the_share_cut(mumbai):
    s = score_map(_emb(mumbai["emb_a"]), _emb(mumbai["emb_b"])).ravel()
    share = auto_threshold(s, "share", 5.0)
    z = auto_threshold(s, "robust-z", 8.0)
    assert z > share  # on this crop the floor binds
    assert auto_threshold(s, "share", 5.0, floor=("robust-z", 8.0)) == pytest.approx(z)
    assert auto_threshold(s, "share", 5.0, floor=("robust-z", 0.0)) == pytest.approx(share)
    assert auto_threshold(s, "median-ratio", 2.0) == pytest.approx(2 * np.median(s), rel=1e-6)
    assert "noise floor" in describe_rule("share", 5.0, s.size, ("median-ratio", 2.0))
    with pytest.raises(EarthEmbedError, match="Unknown noise floor"):
        auto_threshold(s, "share", 5.0, floor=("share", 1.0))


def test_default_mask_is_quiet_on_a_still_pair_and_marks_the_change_of_a_real_one(mumbai, mumbai_still, tmp_path):
    """The threshold rule's no-change case: the default (share cut and level floor) marks almost nothing of a
    date against itself moved by 0.5 px, and about the labelled share (7 %) of the real pair; without the level
    floor the still pair gets the share cut's few per cent."""
    still = change(mumbai_still["emb_0"], mumbai_still["emb_1"], tmp_path / "still", polygons="geojson", png=False)
    real = change(mumbai["emb_a"], mumbai["emb_b"], tmp_path / "real", polygons="geojson", png=False)
    loud = change(mumbai_still["emb_0"], mumbai_still["emb_1"], tmp_path / "loud", min_level=0.0, png=False)
    assert DEFAULT_LEVEL > 0 and still.report["min_level"] == real.report["min_level"] == DEFAULT_LEVEL
    assert "min_level" not in loud.report
    share = {k: r.changed_pixels / r.valid_pixels for k, r in (("still", still), ("real", real), ("loud", loud))}
    assert share["still"] <= 0.005 and still.report["polygon_count"] <= 2, share
    assert 0.01 < share["real"] < 0.15 and real.report["polygon_count"] >= 3, share
    assert share["loud"] > 0.01, share
    with rasterio.open(real.mask) as m, rasterio.open(real.score) as sc:
        assert float(m.tags()["MIN_LEVEL"]) == pytest.approx(DEFAULT_LEVEL)
        assert (sc.read(1)[m.read(1) == 2] > real.threshold).all()
