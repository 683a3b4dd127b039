"""Frozen per-pixel features for probes: encoder embeddings (stored or re-estimated BatchNorm), raw bands,
and a parameter-free hand-made stack — one implementation, used by every probe table.

* :func:`handmade_stack`: the normalised bands + box means over 3/7/15 px + local standard deviation
  over 5/15 px (6 features per band, 60 for the ten release bands). It is the bar a learnt embedding
  must clear: anyone can compute it in ten lines.
* :func:`adapt_batchnorm`: AdaBN (Li et al. 2016) — a copy of an encoder whose BatchNorm running
  statistics are re-estimated on unlabelled windows of the target scene (no labels are read), through
  :func:`reestimate_batchnorm` (any batches: e.g. the pre-training corpus, ``experiments/corpus_batchnorm.py``).
* :func:`scene_features`: ``(H*W, F)`` features of a whole scene for one of the sources above.

Every probe (``training/evaluation/probe.py``, ``training/experiments/linear_probe.py``, ``probe_checkpoints.py``)
standardises these features on its training pixels and fits the same L-BFGS logistic regression.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

import torch

from earth_embed import EarthEncoder
from earth_embed.local_stats import box_mean, local_std
from earth_embed.onnx_forward import onnx_forward
from earth_embed.precision import autocast_for

__all__ = [
    "BN_MODES",
    "BOX_MEAN_SIZES",
    "HANDMADE",
    "LOCAL_STD_SIZES",
    "STACK_FEATURES",
    "adabn_windows",
    "adapt_batchnorm",
    "handmade_stack",
    "handmade_stack_batch",
    "normalise_scene",
    "reestimate_batchnorm",
    "scene_features",
]

BOX_MEAN_SIZES: tuple[int, ...] = (3, 7, 15)
LOCAL_STD_SIZES: tuple[int, ...] = (5, 15)
#: Features per band in the hand-made stack: the band, its box means, its local standard deviations.
STACK_FEATURES = 1 + len(BOX_MEAN_SIZES) + len(LOCAL_STD_SIZES)
BN_MODES = ("stored", "adabn")
#: Parameter-free feature sources by name: (box-mean sizes, local-std sizes) added to the bands.
HANDMADE: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "raw": ((), ()),
    "stack": (BOX_MEAN_SIZES, LOCAL_STD_SIZES),
    "raw+means": (BOX_MEAN_SIZES, ()),
    "raw+std": ((), LOCAL_STD_SIZES),
}  # BatchNorm statistics as stored in the encoder / re-estimated on the target


def normalise_scene(refl: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Reflectance (C, H, W) -> normalised model input (C, H, W) with the encoder's per-band statistics."""
    m = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)
    return (refl.float() - m) / s


@torch.no_grad()
def handmade_stack(
    x: torch.Tensor, mean_sizes: Sequence[int] = BOX_MEAN_SIZES, std_sizes: Sequence[int] = LOCAL_STD_SIZES
) -> torch.Tensor:
    """(C, H, W) bands -> (C * (1 + len(mean_sizes) + len(std_sizes)), H, W) hand-made features.

    Order: the bands, then the box means (per size, all bands), then the local standard deviations.
    Window sizes must be odd and smaller than twice the scene's shorter side (mirrored edges).
    """
    if x.ndim != 3:
        raise ValueError(f"handmade_stack expects one (bands, height, width) scene, got shape {tuple(x.shape)}")
    for k in (*mean_sizes, *std_sizes):
        if k % 2 == 0 or k // 2 >= min(x.shape[-2:]):
            raise ValueError(
                f"window {k} px does not fit a {x.shape[-2]}x{x.shape[-1]} scene; use odd sizes below twice "
                "the shorter side"
            )
    return handmade_stack_batch(x[None], mean_sizes, std_sizes)[0]


def handmade_stack_batch(
    xb: torch.Tensor, mean_sizes: Sequence[int] = BOX_MEAN_SIZES, std_sizes: Sequence[int] = LOCAL_STD_SIZES
) -> torch.Tensor:
    """:func:`handmade_stack` of a batch (B, C, H, W) -> (B, C * (1 + len(mean_sizes) + len(std_sizes)), H, W),
    without its checks (the pre-training target of ``loss.recon_target: stack``; no gradient flows to it)."""
    xb = xb.float()
    means = [box_mean(xb, k, edge="reflect") for k in mean_sizes]
    stds = [local_std(xb, k, edge="reflect") for k in std_sizes]
    return torch.cat([xb, *means, *stds], 1)


def adabn_windows(
    height: int,
    width: int,
    allowed: torch.Tensor | None = None,
    window: int = 128,
    max_windows: int = 48,
    seed: int = 0,
) -> list[tuple[int, int, int, int]]:
    """(row, col, height, width) windows tiling a scene (the last row/column flush with the edge), all
    inside ``allowed``.

    ``allowed`` is an optional (H, W) bool mask (e.g. a training block) that every window must lie in.
    At most ``max_windows`` are kept, drawn with ``seed``. A scene side shorter than ``window`` is
    taken whole (a 100 x 101 scene is one 100 x 101 window).
    """
    wh, ww = min(window, height), min(window, width)
    rows = sorted({*range(0, height - wh + 1, wh), height - wh})
    cols = sorted({*range(0, width - ww + 1, ww), width - ww})
    wins = [(r, c, wh, ww) for r in rows for c in cols]
    if allowed is not None:
        wins = [(r, c, h, w) for r, c, h, w in wins if bool(allowed[r : r + h, c : c + w].all())]
    if len(wins) > max_windows:
        g = torch.Generator().manual_seed(seed)
        wins = [wins[i] for i in sorted(torch.randperm(len(wins), generator=g)[:max_windows].tolist())]
    return wins


@torch.no_grad()
def reestimate_batchnorm(enc: EarthEncoder, batches: Iterable[torch.Tensor]) -> EarthEncoder:
    """A copy of ``enc`` (eval mode) whose BatchNorm running mean/variance are the average of the batch statistics
    over ``batches`` of normalised inputs (B, C, H, W) — the cumulative average of precise BN (Wu & Johnson 2021).

    One batch gives that batch's exact statistics. The encoder passed in is left untouched.
    """
    out = copy.deepcopy(enc)
    bns = [m for m in out.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the forward passes
    out.train()
    n = 0
    with torch.random.fork_rng(devices=[]):
        for xb in batches:
            out(xb)
            n += 1
    if n == 0:
        raise ValueError("no batch to re-estimate BatchNorm statistics on; pass at least one")
    for m, ref in zip(bns, (m for m in enc.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))):
        m.momentum = ref.momentum
    return out.eval()


def adapt_batchnorm(
    enc: EarthEncoder,
    x: torch.Tensor,
    allowed: torch.Tensor | None = None,
    window: int = 128,
    max_windows: int = 48,
    seed: int = 0,
) -> EarthEncoder:
    """AdaBN: a copy of ``enc`` (eval mode) with every BatchNorm's running mean/variance re-estimated on
    windows of the normalised scene ``x`` (C, H, W) — one forward pass over all windows as one batch.

    No labels are used. ``allowed`` restricts the windows to a region (model selection must not read
    the test block). The encoder passed in is left untouched.
    """
    wins = adabn_windows(x.shape[-2], x.shape[-1], allowed, window, max_windows, seed)
    if not wins:
        raise ValueError(f"no {window} px window fits inside the allowed region; pass a smaller window")
    return reestimate_batchnorm(enc, [torch.stack([x[:, r : r + h, c : c + w] for r, c, h, w in wins])])


@torch.no_grad()
def scene_features(
    source: EarthEncoder | str,
    refl: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    bn: str = "stored",
    adabn_region: torch.Tensor | None = None,
    precision: str = "fp32",
    runtime: str = "torch",
) -> torch.Tensor:
    """(H*W, F) per-pixel features of a whole scene (reflectance (C, H, W)).

    ``source``: an encoder (its embeddings; ``bn`` = ``stored`` or ``adabn``, the latter re-estimated
    on windows inside ``adabn_region``, default the whole scene) or a :data:`HANDMADE` name: ``"raw"``
    (the normalised bands), ``"stack"`` (:func:`handmade_stack` of them), ``"raw+means"``, ``"raw+std"``.
    ``precision``: the encoder's forward as :func:`earth_embed.precision.autocast_for` runs it (CPU).
    ``runtime``: ``torch``, or an ONNX Runtime path of :mod:`earth_embed.runtime` (``onnx``, ``onnx-int8``; fp32).
    """
    x = normalise_scene(refl, mean, std)
    if isinstance(source, str):
        if source not in HANDMADE:
            raise ValueError(f"feature source must be an EarthEncoder or one of {sorted(HANDMADE)}, got {source!r}")
        means, stds = HANDMADE[source]
        out = handmade_stack(x, means, stds)
    else:
        if bn not in BN_MODES:
            raise ValueError(f"bn must be one of {BN_MODES}, got {bn!r}")
        enc = adapt_batchnorm(source, x, adabn_region) if bn == "adabn" else source
        was_training = enc.training
        forward = enc.eval() if runtime == "torch" else onnx_forward(enc, runtime)
        with autocast_for(precision, "cpu"):
            out = forward(x[None])[0].float()
        enc.train(was_training)
    return out.flatten(1).T.contiguous()


@torch.no_grad()
def head_input(enc: EarthEncoder, refl: torch.Tensor) -> torch.Tensor:
    """(H*W, F) per-pixel input of the encoder's 1x1 embedding head (the texture layer's output, before the head
    mixes it down to ``embed_dim``) for a whole scene (reflectance (C, H, W)), stored BatchNorm."""
    captured: list[torch.Tensor] = []
    handle = enc.head.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    try:
        n = enc.config.normalization
        enc.eval()(normalise_scene(refl, n.mean, n.std)[None])
    finally:
        handle.remove()
    h, w = refl.shape[-2:]
    return captured[0][0, :, :h, :w].flatten(1).T.contiguous()  # the encoder pads to its stride; crop it off
