"""The change-detection evaluation's pieces on a real OSCD city (Paris-Bercy, 360 x 395 px): its one-sort
metrics equal scikit-learn's, its draws, and the few-shot head scored off its training pixels."""

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
