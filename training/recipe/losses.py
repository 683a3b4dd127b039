"""Contrastive losses: dense pixel InfoNCE (the method) and image-level NT-Xent (the baseline).

Dense loss (``../shared/paper/embedding-earth.md``): for P sampled query pixels per view-1 image, the
positive is the key embedding of the partner pixel in view 2 (bilinear lookup); negatives are key
embeddings of pixels sampled from the *other* images of the batch (optionally also pixels of the
same image farther than ``min_dist`` patch pixels). Temperature ``tau``; symmetrised over views:

    L = -mean_i log( exp(q_i.k_i+/tau) / (exp(q_i.k_i+/tau) + sum_j exp(q_i.k_j-/tau)) )
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from training.recipe.views import ViewPair, bilinear_lookup, sample_correspondences

__all__ = [
    "dense_pair_loss",
    "info_nce",
    "masked_mean_pool",
    "nt_xent",
    "pca_whitening",
    "per_image_variance_covariance",
    "reconstruction_loss",
    "spectral_distance_loss",
    "within_image_reconstruction_loss",
]


def info_nce(
    q: Tensor,
    k: Tensor,
    tau: float = 0.1,
    weight: Tensor | None = None,
    max_negatives: int | None = None,
    same_image_negatives: bool = False,
    xy_patch: Tensor | None = None,
    min_dist: float = 8.0,
    generator: torch.Generator | None = None,
    same_ground: Tensor | None = None,
) -> Tensor:
    """Pixel InfoNCE. ``q``, ``k``: (B, N, d) L2-normalised; the positive of ``q[b, n]`` is ``k[b, n]``.

    Negatives are the keys of the other images (``k[b', m]``, b' != b); with
    ``same_image_negatives`` also keys of the same image whose patch coordinates (``xy_patch``,
    (B, N, 2)) are more than ``min_dist`` apart. ``max_negatives`` keeps a random subset of key
    columns (shared by all queries) to bound memory. ``weight`` (B, N) weights the queries and
    removes zero-weight keys from the negatives. ``same_ground`` (B, B) bool marks pairs of images
    that show the same ground (overlapping windows of one scene or of one group of acquisitions):
    their keys are never negatives of each other. Returns the weighted mean loss.
    """
    if q.shape != k.shape or q.ndim != 3:
        raise ValueError(f"q and k must both be (B, N, d), got {tuple(q.shape)} and {tuple(k.shape)}")
    B, N, d = q.shape
    qf, kf = q.reshape(B * N, d), k.reshape(B * N, d)
    w = torch.ones(B * N, device=q.device) if weight is None else weight.reshape(B * N).to(q.device, q.dtype)
    img = torch.arange(B, device=q.device).repeat_interleave(N)
    cols = torch.arange(B * N, device=q.device)
    if max_negatives is not None and max_negatives < B * N:
        perm = torch.randperm(B * N, generator=generator)[:max_negatives]
        cols = cols[perm.to(q.device)]
    pos = (qf * kf).sum(-1) / tau  # (BN,)
    neg = qf @ kf[cols].T / tau  # (BN, K)
    is_neg = img[:, None] != img[cols][None, :]
    if same_image_negatives:
        if xy_patch is None:
            raise ValueError("same_image_negatives needs xy_patch (the points' patch coordinates)")
        xy = xy_patch.reshape(B * N, 2).to(q.device, q.dtype)
        far = torch.cdist(xy, xy[cols]) > min_dist
        is_neg = is_neg | ((img[:, None] == img[cols][None, :]) & far)
    if same_ground is not None:
        is_neg = is_neg & ~same_ground.to(q.device)[img][:, img[cols]]
    is_neg = is_neg & (w[cols] > 0)[None, :]
    neg = neg.masked_fill(~is_neg, float("-inf"))
    logits = torch.cat([pos[:, None], neg], 1)
    per_query = torch.logsumexp(logits, 1) - pos
    return (per_query * w).sum() / w.sum().clamp(min=1e-8)


def _dense_direction(
    q_map: Tensor,
    k_map: Tensor,
    pair: ViewPair,
    query_view: int,
    q_head: Callable[[Tensor], Tensor],
    k_head: Callable[[Tensor], Tensor],
    n_points: int,
    tau: float,
    gen: torch.Generator,
    **kw,
) -> Tensor:
    idx, xy_k, xy_patch, weight = sample_correspondences(pair, n_points, gen, query_view)
    B, D = q_map.shape[:2]
    idx = idx.to(q_map.device)
    q = q_map.flatten(2).gather(2, idx[:, None, :].expand(B, D, -1)).transpose(1, 2)  # (B, N, D)
    with torch.no_grad():
        k = bilinear_lookup(k_map, xy_k.to(k_map.device))
        k = F.normalize(k_head(k).float(), dim=-1)
    q = F.normalize(q_head(q).float(), dim=-1)
    return info_nce(q, k, tau, weight=weight, xy_patch=xy_patch, generator=gen, **kw)


def dense_pair_loss(
    q1: Tensor,
    q2: Tensor,
    k1: Tensor,
    k2: Tensor,
    pair: ViewPair,
    q_head: Callable[[Tensor], Tensor],
    k_head: Callable[[Tensor], Tensor],
    n_points: int = 128,
    tau: float = 0.1,
    gen: torch.Generator | None = None,
    **kw,
) -> Tensor:
    """Symmetrised dense InfoNCE between query maps (q1, q2) and key maps (k1, k2), (B, D, O, O).

    The heads (per-pixel projection, e.g. 1x1 conv as an MLP on the last dim) are applied to the
    looked-up D-dim vectors; keys are computed without gradient. ``kw`` goes to :func:`info_nce`.
    """
    gen = gen if gen is not None else torch.Generator().manual_seed(0)
    l12 = _dense_direction(q1, k2, pair, 1, q_head, k_head, n_points, tau, gen, **kw)
    l21 = _dense_direction(q2, k1, pair, 2, q_head, k_head, n_points, tau, gen, **kw)
    return 0.5 * (l12 + l21)


def per_image_variance_covariance(v: Tensor, weight: Tensor | None = None, gamma: float = 1.0) -> Tensor:
    """VICReg's variance + covariance terms computed over the pixels of EACH image, then averaged.

    ``v`` (B, N, D): embedding vectors at N pixels of each image; ``weight`` (B, N): 0 drops a pixel.
    Per image: hinge ``mean_d relu(gamma - sqrt(var_d + 1e-4))`` plus the squared off-diagonal
    covariances over D (Bardes et al. 2022). A batch-wide term is satisfied by scene-to-scene
    differences; per image it asks for spread *within* a scene, where land cover has to be told apart.
    Images with fewer than 2 weighted pixels are skipped.
    """
    B, N, D = v.shape
    w = torch.ones(B, N, device=v.device) if weight is None else (weight > 0).to(v.device, v.dtype)
    n = w.sum(1)  # (B,)
    keep = n >= 2
    if not bool(keep.any()):
        return v.sum() * 0.0
    v, w, n = v[keep], w[keep], n[keep]
    mean = (v * w[..., None]).sum(1) / n[:, None]
    c = (v - mean[:, None]) * w[..., None]
    cov = c.transpose(1, 2) @ c / (n[:, None, None] - 1)  # (B', D, D)
    var = torch.diagonal(cov, dim1=1, dim2=2)
    var_term = F.relu(gamma - torch.sqrt(var + 1e-4)).mean(1)
    off = cov - torch.diag_embed(var)
    cov_term = off.pow(2).sum((1, 2)) / D
    return (var_term + cov_term).mean()


def pca_whitening(corr: Tensor, floor: float = 1e-3) -> Tensor:
    """(C, C) matrix W with ``z = x @ W.T`` white (unit variance, uncorrelated) for bands x of correlation ``corr``.

    PCA whitening ``W = diag(lambda)^-1/2 U^T`` of the band correlation (normalised bands): spectral
    shape (the small components) weighs as much as brightness (the first one). Eigenvalues are
    floored at ``floor`` times the largest so pure-noise directions are not blown up without bound.
    """
    lam, U = torch.linalg.eigh(corr.double())
    lam = lam.clamp(min=float(lam.max()) * floor)
    return (torch.diag(lam.rsqrt()) @ U.T).float()


def reconstruction_loss(pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Weighted mean squared error over pixels (B, N, C) of the reconstructed vs the target bands."""
    err = (pred.float() - target.float()).pow(2).mean(-1)  # (B, N)
    if weight is None:
        return err.mean()
    w = weight.to(err)
    return (err * w).sum() / w.sum().clamp(min=1e-8)


def within_image_reconstruction_loss(
    pred: Tensor, target: Tensor, weight: Tensor | None = None, floor: float = 0.01
) -> Tensor:
    """Mean over images and features of 1 - R^2 *within* each image (B, N, C): the residual after removing
    each image's (weighted) mean of prediction and target, over the target's variance in that image.

    A global squared error is met by scene-to-scene differences (a city's texture vs a field's); this term
    weighs every image's own spatial structure equally, whatever its contrast. ``floor`` (in the target's
    units) keeps flat images from dividing by ~0.
    """
    w = torch.ones(pred.shape[:2], device=pred.device) if weight is None else weight.to(pred.device).float()
    w = w[..., None]  # (B, N, 1)
    n = w.sum(1, keepdim=True).clamp(min=1e-8)
    p, t = pred.float(), target.float()
    pc = p - (p * w).sum(1, keepdim=True) / n
    tc = t - (t * w).sum(1, keepdim=True) / n
    var = ((tc * tc) * w).sum(1) / n[:, 0]  # (B, C)
    res = (((pc - tc) ** 2) * w).sum(1) / n[:, 0]
    return (res / (var + floor)).mean()


def masked_mean_pool(feat: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean over H, W of (B, D, H, W), counting only valid pixels when ``valid`` (B, 1, H, W) is given."""
    if valid is None:
        return feat.mean((2, 3))
    v = valid.to(feat)
    return (feat * v).sum((2, 3)) / v.sum((2, 3)).clamp(min=1.0)


def nt_xent(z1: Tensor, z2: Tensor, tau: float = 0.1) -> Tensor:
    """SimCLR NT-Xent on pooled embeddings z1, z2 (B, d) (L2-normalised here).

    The positive of view-1 image i is view-2 image i; negatives are the other 2B-2 embeddings.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (B, d), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    B = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=-1)
    sim = z @ z.T / tau
    sim = sim.masked_fill(torch.eye(2 * B, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(B, 2 * B), torch.arange(0, B)]).to(z.device)
    return F.cross_entropy(sim, target)


def standardised_invariance(query: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean over channels of the weighted squared difference ``query - target`` (B, N, D) over each channel's
    variance of ``query`` across the weighted pixels: 0 when the two embeddings agree, about 2 when unrelated,
    and not met by shrinking the embedding (the ratio does not depend on its scale). ``target`` carries no gradient.
    """
    q, t = query.float(), target.float().detach()
    w = torch.ones(q.shape[:2], device=q.device) if weight is None else (weight > 0).to(q.device, q.dtype)
    n = w.sum().clamp(min=2.0)
    wq = w[..., None]
    mean = (q * wq).sum((0, 1)) / n
    var = (((q - mean) ** 2) * wq).sum((0, 1)) / (n - 1)
    sq = (((q - t) ** 2) * wq).sum((0, 1)) / n
    return (sq / var.clamp(min=1e-6)).mean()


def _pair_distances(v: Tensor) -> Tensor:
    """(B, N, N) Euclidean distances between the N vectors of each image of ``v`` (B, N, F), finite gradient at 0."""
    v = v.float()
    sq = (v * v).sum(-1)
    d2 = (sq[:, :, None] + sq[:, None, :] - 2 * v @ v.transpose(1, 2)).clamp(min=0.0)
    return torch.sqrt(d2 + 1e-8)


def spectral_distance_loss(
    emb: Tensor, spectra: Tensor, weight: Tensor | None = None, top: float = 0.25, form: str = "hinge"
) -> Tensor:
    """Ask the embedding's distance between two pixels of one window to follow their spectral distance.

    ``emb`` (B, N, D): the embedding at N pixels of each window; ``spectra`` (B, N, C): the (box-smoothed) bands
    the encoder saw at the same pixels; ``weight`` (B, N): 0 drops a pixel. The pairs are every two distinct
    weighted pixels of one window. Both distances are divided by their mean over the batch's pairs, so the term
    does not depend on either's scale (it is not met by inflating the embedding). ``form``:

    * ``hinge``: over the ``top`` share of pairs with the largest spectral distance, the mean of
      ``relu(spectral - embedding)``: where the bands differ strongly, the embedding must differ at least as much,
      relative to its typical distance (which pixel-position noise inflates);
    * ``two_sided``: over every pair, the mean of ``|embedding - spectral|``.

    0 when the embedding's distances are the spectral ones up to a scale.
    """
    if emb.ndim != 3 or spectra.shape[:2] != emb.shape[:2]:
        raise ValueError(
            f"emb (B, N, D) and spectra (B, N, C) must share B, N, got {tuple(emb.shape)}, {tuple(spectra.shape)}"
        )
    if form not in ("hinge", "two_sided") or not 0 < top <= 1:
        raise ValueError(f"form must be 'hinge' or 'two_sided' and 0 < top <= 1, got {form!r}, {top}")
    B, N = emb.shape[:2]
    w = torch.ones(B, N, device=emb.device) if weight is None else (weight > 0).to(emb.device)
    pairs = torch.triu(torch.ones(N, N, dtype=torch.bool, device=emb.device), 1)[None]
    pairs = pairs & (w[:, :, None] > 0) & (w[:, None, :] > 0)
    if int(pairs.sum()) < 2:
        return emb.sum() * 0.0
    de = _pair_distances(emb)[pairs]
    with torch.no_grad():
        ds = _pair_distances(spectra.to(emb.device))[pairs]
        ds = ds / ds.mean().clamp(min=1e-8)
    de = de / de.mean().clamp(min=1e-8)
    if form == "two_sided":
        return (de - ds).abs().mean()
    strong = ds >= torch.quantile(ds, 1.0 - top) if top < 1 else torch.ones_like(ds, dtype=torch.bool)
    return F.relu(ds[strong] - de[strong]).mean()
