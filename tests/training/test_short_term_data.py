"""The short-term pre-training data (CaCo's rule): positives across acquisitions only between dates weeks apart,
read on one grid; OSCD's long-term pairs are never positives (docs/results/short_term_positives.md)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.training.helpers import CONFIGS
from training.data.unlabelled import UnlabelledWindows, load_data_config
from training.recipe.config import DEFAULTS

DATA = CONFIGS / "data" / "pretrain-short-term.yaml"
SLOVENIA_CLEAR = {"S2L1C_20150711.tif", "S2L1C_20150830.tif", "S2L1C_20150909.tif"}
SSL4EO = {"20200604_L1C", "20200604_L2A", "20200813_L2A", "20200823_L1C"}


@pytest.fixture(scope="module")
def windows(shared_data) -> UnlabelledWindows:
    cfg = load_data_config(DATA, shared_data)
    return UnlabelledWindows(cfg.scenes, DEFAULTS["data"]["bands"], 96, length=64, seed=1, cross_p=1.0)


def test_only_short_term_acquisitions_are_paired(windows, shared_data):
    scenes = windows.scenes
    paired = {scenes[k].path.name for k in range(len(scenes)) if windows.partners[k]}
    assert paired == SLOVENIA_CLEAR | SSL4EO  # the two clouded slovenia dates are left out
    oscd = [s for s in scenes if s.path.parent.name in ("oscd", "oscd-date1")]
    assert len(oscd) == 24 and {s.path.parent.name for s in oscd} == {"oscd"}  # one date a city: the later one
    assert all(s.group is None for s in oscd)
    labelled = {p.name for p in (shared_data / "labelled" / "oscd-change").iterdir() if p.is_dir()}
    assert len(labelled) == 10 and not labelled & paired
    assert sum(s.weight for s in scenes) == pytest.approx(1.0)
    assert sum(s.weight for k, s in enumerate(scenes) if windows.partners[k]) == pytest.approx(0.296)


def test_no_oscd_window_gets_a_positive_from_another_date(windows):
    drawn = [windows[i] for i in range(len(windows))]
    oscd = [b for b in drawn if windows.scenes[int(b["scene"])].source == "oscd-single-date"]
    assert oscd  # the source is drawn (weight 0.2): the check below is not vacuous
    for b in oscd:
        assert int(b["cross"]) == 0 and np.array_equal(b["x2"].numpy(), b["x"].numpy())
    crossed = {windows.scenes[int(b["scene"])].source for b in drawn if int(b["cross"])}
    assert crossed and crossed <= {"slovenia-eolearn-dates", "ssl4eo-s12-l1c", "ssl4eo-s12-l2a"}


def test_a_short_term_pair_is_read_on_one_grid(windows):
    names = [s.path.name for s in windows.scenes]
    k, j = names.index("S2L1C_20150711.tif"), names.index("S2L1C_20150830.tif")
    assert windows.map_origin(k, j, 3, 4) == (3, 4)  # the dated GeoTIFFs share one 100 x 101 px grid
    drawn = (windows[i] for i in range(len(windows)))
    item = next(
        b for b in drawn if int(b["cross"]) and windows.scenes[int(b["scene"])].source == "slovenia-eolearn-dates"
    )
    x, x2 = item["x"].numpy(), item["x2"].numpy()
    nir = windows.bands.index("B08")
    aligned = np.corrcoef(x[nir].ravel(), x2[nir].ravel())[0, 1]
    moved = np.corrcoef(x[nir, 4:].ravel(), x2[nir, :-4].ravel())[0, 1]
    # weeks apart over the same forest and fields: the near-infrared agrees pixel by pixel (0.69-0.91 on these
    # dates), and far less once the partner is moved by 4 px (0.38-0.52): the pair is registered, not just alike
    assert aligned > 0.6 and aligned > moved + 0.15
    assert not np.array_equal(x, x2)  # another acquisition, not the same pixels
