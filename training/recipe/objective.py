"""The dense pre-training objective of one batch: pixel InfoNCE plus the optional release-3 terms.

* InfoNCE (the method): queries at view-a pixels, positives = keys at the partner pixels of view b,
  symmetrised. ``loss.mask_same_ground``: keys of windows that show the same ground (same scene or
  same group of acquisitions, origins less than a window apart) are never negatives.
* Positives across acquisitions (``data.cross_p`` > 0): view 2 of some windows comes from another
  acquisition of the same ground; their key maps are averaged over 3 x 3 pixels before the lookup
  (co-registration across dates is ~1 px, so the positive is a neighbourhood).
* Invariance across dates on the embedding itself (``loss.cross_invariance_weight`` > 0): for those
  windows, each query pixel's embedding is pulled towards the EMA key network's (pooled) embedding at its
  partner pixel of the other date, standardised per channel (:func:`standardised_invariance`). InfoNCE asks
  it of the projections, and a projection head can drop what differs between dates while the embedding keeps it.
* Input-anchored target (``loss.recon_weight`` > 0): a training-only linear head reconstructs the clean
  normalised bands at the query pixels, in a PCA-whitened band space (``loss.recon_whiten``), from the
  embedding itself. ``loss.recon_target: stack`` reconstructs the hand-made stack instead (the bands, box
  means over 3/7/15 px and local standard deviations over 5/15 px of the clean patch, each standardised
  over the batch's query pixels): the embedding must carry at least the local texture a probe gets from
  ten lines of box filters (hand-designed targets as in MaskFeat's HOG, Wei et al. 2022).
  ``loss.recon_within_weight`` adds the same head's error *within* each image (1 - R^2 after removing the
  image's mean): a batch-wide error is met by telling scenes apart, and leaves a flat scene's texture out.
  ``loss.recon_log_std`` takes the local standard deviations as log(std + 0.01): a winter field's texture
  (0.05-0.1 in normalised units) then weighs as much as a city's, not a rounding error beside it.
* Per-image anti-collapse (``loss.vc_weight`` > 0): VICReg variance + covariance over the query pixels
  of each image (within-scene spread; a batch-wide term is met by scene-to-scene differences).
* Embedding distance that follows spectral change (``loss.spectral_weight`` > 0): over pairs of query pixels
  of one window (both views' pixels together), the embedding's distance is tied to the distance between the
  bands each view showed the encoder, box-averaged over ``loss.spectral_box`` px so that a sub-pixel shift
  barely moves them (:func:`spectral_distance_loss`; ``loss.spectral_form`` hinge over the ``loss.spectral_top``
  share of pairs that differ most, or two-sided over all pairs).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from training.evaluation.features import LOCAL_STD_SIZES, handmade_stack_batch
from training.recipe.losses import (
    info_nce,
    per_image_variance_covariance,
    reconstruction_loss,
    spectral_distance_loss,
    standardised_invariance,
    within_image_reconstruction_loss,
)
from training.recipe.views import ViewPair, bilinear_lookup, sample_correspondences

__all__ = ["DenseObjective", "same_ground_matrix"]


def same_ground_matrix(group: Tensor, row: Tensor, col: Tensor, size: int) -> Tensor:
    """(B, B) bool: windows b != b' of one group (scene or acquisitions of one ground) that overlap."""
    g = group.view(-1)
    near = ((row.view(-1, 1) - row.view(1, -1)).abs() < size) & ((col.view(-1, 1) - col.view(1, -1)).abs() < size)
    out = (g[:, None] == g[None, :]) & near
    out.fill_diagonal_(False)
    return out


class DenseObjective:
    """Callable ``(net, key_net, pair, views, batch, x, x2, gen, accelerator) -> (loss, parts)``.

    ``x``/``x2``: the clean normalised patches (B, C, S, S) that views 1 and 2 were cut from (the
    reconstruction target); ``batch`` the loader's dict (group, row, col, cross); ``whitening`` the
    (C, C) PCA-whitening matrix of the bands (needed when ``recon_weight`` > 0).
    """

    def __init__(self, l_cfg: dict[str, Any], whitening: Tensor | None = None) -> None:
        self.cfg = l_cfg
        self.recon_weight = float(l_cfg["recon_weight"])
        self.vc_weight = float(l_cfg["vc_weight"])
        self.within_weight = float(l_cfg.get("recon_within_weight", 0.0))
        self.invariance_weight = float(l_cfg.get("cross_invariance_weight", 0.0))
        self.log_std = bool(l_cfg.get("recon_log_std", False))
        self.spectral_weight = float(l_cfg.get("spectral_weight", 0.0))
        self.whitening = whitening
        self.recon_stack = l_cfg.get("recon_target", "bands") == "stack"
        if self.recon_weight > 0 and whitening is None and not self.recon_stack:
            raise ValueError("loss.recon_weight > 0 needs the band whitening matrix")

    def __call__(
        self,
        net,
        unwrapped,
        key_net,
        pair: ViewPair,
        views: Tensor,
        batch: dict[str, Tensor],
        x: Tensor,
        x2: Tensor,
        gen: torch.Generator,
        accelerator,
    ) -> tuple[Tensor, dict[str, float]]:
        cfg, dev = self.cfg, accelerator.device
        P, B = int(cfg["points"]), pair.view1.shape[0]
        idx1, xyk2, xyp1, w1 = sample_correspondences(pair, P, gen, 1)
        idx2, xyk1, xyp2, w2 = sample_correspondences(pair, P, gen, 2)
        cross = batch["cross"].to(dev).bool() if "cross" in batch else torch.zeros(B, dtype=torch.bool, device=dev)
        invariance = self.invariance_weight > 0 and bool(cross.any())
        need_emb = self.recon_weight > 0 or self.vc_weight > 0 or invariance or self.spectral_weight > 0
        out = net(views, idx=torch.cat([idx1, idx2]).to(dev), with_embedding=need_emb)
        q, emb, recon = out if need_emb else (out, None, None)
        with torch.no_grad(), accelerator.autocast():
            keys = key_net if key_net is not None else unwrapped
            kout = keys(
                views, xy=torch.cat([xyk1, xyk2]).to(dev), key_pool=torch.cat([cross, cross]), with_embedding=invariance
            )
            k, k_emb = (kout[0], kout[1]) if invariance else (kout, None)
        q = F.normalize(q.float(), dim=-1)
        k = F.normalize(k.float(), dim=-1)
        same = None
        if cfg["mask_same_ground"] and "group" in batch:
            same = same_ground_matrix(batch["group"], batch["row"], batch["col"], int(x.shape[-1]))
        kw = dict(
            tau=float(cfg["tau"]),
            max_negatives=cfg["max_negatives"],
            same_image_negatives=bool(cfg["same_image_negatives"]),
            min_dist=float(cfg["min_dist"]),
            generator=gen,
            same_ground=same,
        )
        w1, w2 = w1.to(dev), w2.to(dev)
        l12 = info_nce(q[:B], k[B:], weight=w1, xy_patch=xyp1, **kw)  # view-1 queries vs view-2 keys
        l21 = info_nce(q[B:], k[:B], weight=w2, xy_patch=xyp2, **kw)
        loss = 0.5 * (l12 + l21)
        parts = {"nce": float(loss.detach())}
        if emb is not None:
            weight = torch.cat([w1, w2])
            if self.recon_weight > 0:
                assert recon is not None, "the net needs a recon head"
                target = self._recon_target(x.to(dev), x2.to(dev), xyp1.to(dev), xyp2.to(dev))
                rec = reconstruction_loss(recon, target, weight)
                loss = loss + self.recon_weight * rec
                parts["recon"] = float(rec.detach())
                if self.within_weight > 0:
                    within = within_image_reconstruction_loss(recon, target, weight)
                    loss = loss + self.within_weight * within
                    parts["recon_within"] = float(within.detach())
            if invariance:
                assert k_emb is not None
                # view-1 queries pair with view-2 keys (rows B:) and view-2 queries with view-1 keys (rows :B)
                pairs = torch.cat([cross, cross])
                partner = torch.cat([k_emb[B:], k_emb[:B]])
                inv = standardised_invariance(emb[pairs], partner[pairs], weight[pairs])
                loss = loss + self.invariance_weight * inv
                parts["invariance"] = float(inv.detach())
            if self.spectral_weight > 0:
                sp = self._spectral(emb, pair, idx1, idx2, weight)
                loss = loss + self.spectral_weight * sp
                parts["spectral"] = float(sp.detach())
            if self.vc_weight > 0:
                vc = per_image_variance_covariance(emb, weight)
                loss = loss + self.vc_weight * vc
                parts["vc"] = float(vc.detach())
        if self.invariance_weight > 0 and not invariance:  # a batch without windows from two dates (rare)
            parts["invariance"] = 0.0
        return loss, parts

    def _spectral(self, emb: Tensor, pair: ViewPair, idx1: Tensor, idx2: Tensor, weight: Tensor) -> Tensor:
        """The spectral-distance term over pairs of query pixels of each window, both views' pixels together.

        ``emb`` (2B, P, D): the embedding at view 1's query pixels ``idx1`` (rows :B) and view 2's ``idx2``
        (rows B:); the spectra are each view's bands as the encoder saw them (after the photometric changes),
        box-averaged over ``loss.spectral_box`` px of that view.
        """
        cfg, B = self.cfg, pair.view1.shape[0]
        with torch.no_grad():
            k = int(cfg["spectral_box"])
            spectra = []
            for view, idx in ((pair.view1, idx1), (pair.view2, idx2)):
                smooth = F.avg_pool2d(view.float(), k, stride=1, padding=k // 2, count_include_pad=False)
                C = smooth.shape[1]
                idx = idx.to(smooth.device)
                spectra.append(smooth.flatten(2).gather(2, idx[:, None, :].expand(B, C, -1)).transpose(1, 2))
        both = torch.cat([emb[:B], emb[B:]], 1)  # (B, 2P, D): each window's pixels of both views
        w = torch.cat([weight[:B], weight[B:]], 1)
        top, form = float(cfg["spectral_top"]), str(cfg["spectral_form"])
        return spectral_distance_loss(both, torch.cat(spectra, 1), w, top=top, form=form)

    def _stack(self, x: Tensor) -> Tensor:
        """The hand-made stack of clean patches (B, C, S, S); local std as log(std + 0.01) with ``recon_log_std``."""
        st = handmade_stack_batch(x)
        if self.log_std:
            n_std = x.shape[1] * len(LOCAL_STD_SIZES)
            st = torch.cat([st[:, :-n_std], torch.log(st[:, -n_std:] + 0.01)], 1)
        return st

    @torch.no_grad()
    def _recon_target(self, x: Tensor, x2: Tensor, xyp1: Tensor, xyp2: Tensor) -> Tensor:
        """(2B, N, F) reconstruction target at the query pixels of both views."""
        if not self.recon_stack:
            assert self.whitening is not None
            return torch.cat([bilinear_lookup(x, xyp1), bilinear_lookup(x2, xyp2)]) @ self.whitening.to(x.device).T
        t = torch.cat([bilinear_lookup(self._stack(x), xyp1), bilinear_lookup(self._stack(x2), xyp2)])
        flat = t.reshape(-1, t.shape[-1])
        return (t - flat.mean(0)) / flat.std(0).clamp(min=1e-6)
