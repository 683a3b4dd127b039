"""The change-detection evaluation's pieces on a real OSCD city (Paris-Bercy, 360 x 395 px): its one-sort
metrics equal scikit-learn's, its draws, the few-shot head scored off its training pixels, and the pieces of the
mask-rule selections."""

from __future__ import annotations

import numpy as np
import pytest

from earth_embed import EarthEncoder
from earth_embed.released import find_released
from training.evaluation.oscd_change import city_arrays, features, metrics
from training.experiments.change_detection import draws, few_shot, zero_shot


@pytest.fixture(scope="module")
def bercy(shared_data):
    enc = EarthEncoder.from_pretrained(find_released("encoder"))
    dn1, dn2, y, grid = city_arrays(shared_data, "bercy", enc.bands)
    f1, f2 = features("raw", dn1, enc), features("raw", dn2, enc)
    valid = np.isfinite(f1).all(1) & np.isfinite(f2).all(1)
    return f1, f2, y.ravel(), valid, grid


def test_metrics_equal_scikit_learn(bercy):
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    f1, f2, y, valid, grid = bercy
    assert valid.mean() > 0.99 and y.size == grid.height * grid.width and 0 < y.mean() < 0.02
    s = zero_shot(f1, f2, valid, ("cva",), (grid.height, grid.width))["cva"]
    s_tied = np.round(s, 1)  # many ties
    for score in (s, s_tied):
        m = metrics(score, y)  # NaN (nodata) pixels are left out
        score, yv = score[valid], y[valid]
        p, r, _ = precision_recall_curve(yv, score)
        assert m["ap"] == pytest.approx(average_precision_score(yv, score), abs=1e-9)
        assert m["auroc"] == pytest.approx(roc_auc_score(yv, score), abs=1e-9)
        assert m["f1"] == pytest.approx(np.max(2 * p * r / np.maximum(p + r, 1e-12)), abs=1e-9)
    assert metrics(s, y)["auroc"] > 0.6  # raw-band change vectors find the new buildings better than chance


def test_few_shot_head_is_scored_off_its_draw(bercy):
    f1, f2, y, valid, _ = bercy
    sets = draws(y, valid, 20, 3, seed=0)
    assert len(sets) == 3 and all(len(i) == 40 and y[i].sum() == 20 and len(set(i)) == 40 for i in sets)
    assert draws(y, valid, 20, 3, seed=0)[0].tolist() == sets[0].tolist()  # reproducible
    s = few_shot(f1, f2, y, valid, sets[0], seed=0)
    test = valid.copy()
    test[sets[0]] = False
    assert np.isnan(s[~test]).all() and np.isfinite(s[test]).all()
    assert metrics(s, y)["auroc"] > 0.6


def test_change_defaults_mask_grid_and_leave_one_city_out(bercy):
    """The selection's pieces on Bercy's raw bands: every mask rule's share and F1, and the LOCO pick."""
    from earth_embed.apps.change_scores import score_map
    from training.evaluation.oscd_change import as_maps, mask_f1
    from training.experiments.change_defaults import MIN_PX, RULES, SMOOTH, loco, mask_grid

    f1, f2, y, valid, grid = bercy
    hw = (grid.height, grid.width)
    a, b = (as_maps(np.where(valid[:, None], f, np.nan).astype(np.float32), hw) for f in (f1, f2))
    s, labels = score_map(a, b, "cva"), y.reshape(hw)
    cells = mask_grid(s, labels)
    assert len(cells) == len(SMOOTH) * len(RULES) * len(MIN_PX)
    assert abs(cells["smooth 0, share 5, min 1 px"]["share"] - 0.05) < 0.002
    assert cells["smooth 0, share 5, min 16 px"]["share"] <= cells["smooth 0, share 5, min 1 px"]["share"]
    assert all(0 <= c["f1"] <= 1 for c in cells.values())
    ok = np.isfinite(s)
    assert mask_f1(labels == 1, labels, ok) == 1.0 and mask_f1(np.zeros_like(ok), labels, ok) == 0.0
    table = {"x": {"c1": 0.9, "c2": 0.1, "c3": 0.5}, "y": {"c1": 0.2, "c2": 0.8, "c3": 0.6}}
    out = loco(table, ["c1", "c2", "c3"])
    assert [f["pick"] for f in out["folds"]] == ["y", "x", "x"] and out["default"] == "x"
    assert out["held_out_mean"] == pytest.approx((0.2 + 0.1 + 0.5) / 3)


def test_change_adaptive_rules_under_the_level_floor(bercy):
    """The threshold comparisons' pieces on Bercy's raw bands (0.74 % labelled change): both rules under the level
    floor, their marked share and patch count, round 2's grid of share cuts and floors, and the share / true share
    distance."""
    from earth_embed.apps.change_mask import auto_threshold, component_sizes, drop_small
    from earth_embed.apps.change_scores import DEFAULT_SCORE, ScoreStats, level_map, prepare, score_map, smooth_map
    from training.evaluation.oscd_change import as_maps
    from training.experiments.change_adaptive import CURRENT, MIN_PX, SMOOTH, log_ratio, marks
    from training.experiments.change_believable import LEVEL_QS, SHARES, name, table

    f1, f2, y, valid, grid = bercy
    hw = (grid.height, grid.width)
    a, b = (as_maps(np.where(valid[:, None], f, np.nan).astype(np.float32), hw) for f in (f1, f2))
    stats = ScoreStats(DEFAULT_SCORE, a.shape[0])
    stats.add(*prepare(a, b, DEFAULT_SCORE))
    s, lv = smooth_map(score_map(a, b, stats=stats), SMOOTH), smooth_map(level_map(a, b, stats), SMOOTH)
    maps, labels, rules = {SMOOTH: (s, lv)}, y.reshape(hw), [CURRENT, ("robust-z", 3.0)]
    free, high = marks(maps, -np.inf, rules, labels), marks(maps, float(np.nanquantile(lv, 0.99)), rules, labels)
    ok = np.isfinite(s) & np.isfinite(lv)
    z = ok & (np.where(ok, s, -np.inf) > auto_threshold(s[ok], "robust-z", 3.0))
    want = drop_small(z, MIN_PX)
    assert free["robust-z 3"]["share"] == pytest.approx(want[ok].mean())  # no floor: the rule alone
    assert free["robust-z 3"]["patches"] == len(component_sizes(want)[1]) - 1 > 0
    assert 0.04 <= free["share 5"]["share"] <= 0.05  # the top 5 %, less the patches under 4 px
    for rule in ("share 5", "robust-z 3"):  # a floor above 99 % of the level leaves at most 1 % marked
        assert high[rule]["share"] <= min(free[rule]["share"], 0.01) and 0 <= high[rule]["f1"] <= 1
    cands = table(maps, dict.fromkeys(LEVEL_QS, -np.inf), labels)  # round 2's grid, every floor below the level
    assert len(cands) == len(SHARES) * len(LEVEL_QS)
    assert cands[name(5.0, 0.9)] == free["share 5"] and cands[name(100.0, 0.9)]["share"] > 0.999
    assert log_ratio(0.02, 0.01) == pytest.approx(np.log(2)) == pytest.approx(log_ratio(0.005, 0.01))
    assert log_ratio(0.0, 0.01) == np.inf


def test_self_shift_pairs_and_head_input_blocks(shared_data):
    """The diagnostics' pieces on Bercy's date 1: the 1 px and 0.5 px pairs, the pixel classes, and the released
    head's input blocks (decoder features, then one texture block per window)."""
    from training.evaluation.oscd_change import shifted
    from training.experiments.change_channels import blocks
    from training.experiments.change_shift_noise import pixel_classes

    enc = EarthEncoder.from_pretrained(find_released("encoder"))
    dn1, _, y, _ = city_arrays(shared_data, "bercy", enc.bands)
    pairs = shifted(dn1)
    one, half = pairs["1 px"], pairs["0.5 px"]
    np.testing.assert_array_equal(one[0][:, :, 1:], one[1][:, :, :-1])  # the same pixels, one column apart
    np.testing.assert_allclose(half[1] - half[0], 0.5 * (one[1] - one[0]), rtol=1e-5, atol=1e-2)
    classes = pixel_classes(dn1, enc.bands, y)
    assert classes["all"].all() and not (classes["built-up or bare"] & classes["vegetation"]).any()
    red, nir = dn1[enc.bands.index("B04")], dn1[enc.bands.index("B08")]
    np.testing.assert_array_equal(classes["vegetation"], (nir - red) / (nir + red) > 0.5)
    assert 0.2 < classes["built-up or bare"].mean() < 0.95  # Paris: mostly built up (vegetation is 0.1 %)
    b = blocks(enc)
    assert list(b) == ["decoded", "std5", "std15"] and b["std15"].stop == enc.head.in_channels


def test_saturation_in_the_evaluation_is_the_pipelines(shared_data):
    """Bercy's later date has one B8A pixel saturated on its 20 m grid, hidden by the blend onto the 10 m grid: the
    evaluation carries it (``read_scene_on_grid``), its features are NaN there and within the buffer, as in the
    pipeline, and the half-pixel self-shift keeps it saturated."""
    from earth_embed.apps.change_inputs import SATURATED_FILL
    from earth_embed.inputs.scene import SATURATION_BUFFER
    from tests.helpers.change_data import square_grow
    from training.evaluation.oscd_change import shifted

    enc = EarthEncoder.from_pretrained(find_released("encoder"))
    _, dn2, _, _ = city_arrays(shared_data, "bercy", enc.bands)
    filled = (dn2 == SATURATED_FILL).all(axis=0)
    assert 16 <= filled.sum() <= 25 and not (dn2[:, ~filled] >= 28000).any()
    rows = np.flatnonzero(filled.any(axis=1))
    crop = dn2[:, max(0, rows[0] - 20) : rows[-1] + 20]  # a strip around it, to keep the forward small
    x = features("raw", crop, enc).reshape(*crop.shape[1:], -1)
    grown = square_grow((crop == SATURATED_FILL).all(axis=0), SATURATION_BUFFER)
    assert np.isnan(x[grown]).all() and np.isfinite(x[~grown]).all()
    half = shifted(crop)["0.5 px"][0]
    assert ((half == SATURATED_FILL).all(axis=0) >= (crop[:, :, 1:] == SATURATED_FILL).all(axis=0)).all()
