"""EarthEncoder: a dense (per-pixel) Sentinel-2 encoder, timm backbone + U-Net decoder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import kernels
from .bands import canonical_band_names
from .config import EarthConfig, Normalization
from .decoder import UNetDecoder
from .errors import BandError
from .hub import EarthHubMixin, apply_state_dict
from .local_stats import LocalStats
from .registry import get_architecture


def check_input(x: torch.Tensor, bands: Sequence[str]) -> None:
    """Raise a clear error unless ``x`` is a (B, C, H, W) tensor with C == len(bands) and H, W >= 1."""
    if not isinstance(x, torch.Tensor):
        hint = " Convert it with torch.from_numpy(x)." if type(x).__module__.startswith("numpy") else ""
        raise BandError(
            f"expected a torch.Tensor of shape (batch, bands, height, width), got {type(x).__name__}.{hint}"
        )
    if x.ndim != 4:
        raise BandError(
            f"expected a (batch, bands, height, width) tensor, got shape {tuple(x.shape)}; "
            "add a batch dimension with x[None] for a single image."
        )
    if x.shape[1] != len(bands):
        raise BandError(
            f"input has {x.shape[1]} bands but the model expects {len(bands)}: {', '.join(bands)}. "
            "Reorder or subset by name with earth_embed.bands.select_bands(available, model.bands)."
        )
    if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise BandError(
            f"input of shape {tuple(x.shape)} is empty; give at least one image of at least 1 x 1 px "
            "(16 x 16 px or more for meaningful embeddings)."
        )


class EarthEncoder(nn.Module, EarthHubMixin):
    """Per-pixel embeddings ``(B, D, H, W)`` for Sentinel-2 input of any height and width.

    Build a random-init model with :meth:`new`, load one with :meth:`from_pretrained`.
    ``enc(x)`` takes normalised input; :meth:`embed` takes raw digital numbers.
    """

    _card_template = "encoder"

    def __init__(self, config: EarthConfig) -> None:
        super().__init__()
        self.config = config
        stages: dict[str, Any] = (
            {"out_indices": tuple(config.backbone_out_indices)} if config.backbone_out_indices else {}
        )
        import timm  # imported here: it pulls in torchvision, which ``import earth_embed`` does not need

        self.backbone = timm.create_model(
            config.backbone, pretrained=False, features_only=True, in_chans=len(config.bands), **stages
        )
        info: Any = self.backbone.feature_info
        self.decoder = UNetDecoder(info.channels(), info.reduction(), len(config.bands), config.decoder_channels)
        self.local_stats = LocalStats(config.local_stats) if config.local_stats else None
        head_in = self.decoder.out_channels
        if self.local_stats is not None:
            head_in = self.local_stats.out_channels(head_in)
        self.head = nn.Conv2d(head_in, config.embed_dim, kernel_size=1)
        norm = config.normalization
        self.register_buffer("_mean", torch.tensor(norm.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(norm.std).view(1, -1, 1, 1), persistent=False)

    # --- construction ------------------------------------------------------------------
    @classmethod
    def new(
        cls,
        architecture: str,
        bands: Sequence[str],
        embed_dim: int = 64,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        dn_offset: float = 0.0,
        **config_fields,
    ) -> EarthEncoder:
        """A randomly initialised encoder of a registered architecture (see ``list_architectures``).

        ``mean``/``std`` are per-band reflectance statistics (default 0 and 1: reflectance as is).
        """
        arch = get_architecture(architecture)
        bands = canonical_band_names(bands)
        norm = Normalization(
            mean=list(mean) if mean is not None else [0.0] * len(bands),
            std=list(std) if std is not None else [1.0] * len(bands),
            dn_offset=dn_offset,
        )
        config = EarthConfig(
            architecture=architecture, bands=bands, embed_dim=embed_dim, normalization=norm, **arch, **config_fields
        )
        return cls(config)

    @classmethod
    def _model_from_config(cls, config: EarthConfig, state: dict[str, torch.Tensor], source: str) -> EarthEncoder:
        if config.kind == "segmenter":  # take the encoder out of a fine-tuned segmenter
            config = replace(config, kind="encoder", classes=None, class_colors=None)
            state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
        model = cls(config)
        apply_state_dict(model, state, source)
        return model

    # --- properties --------------------------------------------------------------------
    @property
    def bands(self) -> list[str]:
        """Input band names, in input order."""
        return list(self.config.bands)

    @property
    def embed_dim(self) -> int:
        """Embedding size D."""
        return self.config.embed_dim

    @property
    def pad_multiple(self) -> int:
        """Total stride of the backbone: windows offset by multiples of this give identical outputs."""
        info: Any = self.backbone.feature_info
        return int(info.reduction()[-1])

    # --- forward -----------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``(B, C, H, W)`` -> embeddings ``(B, D, H, W)``."""
        check_input(x, self.config.bands)
        height, width = x.shape[-2:]
        m = self.pad_multiple
        pad_h, pad_w = (-height) % m, (-width) % m
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        features = self.backbone(x)
        decoded = self.decoder(features, x)
        if isinstance(self.local_stats, LocalStats):  # the head reads its output at once: a reused buffer will do
            decoded = self.local_stats(decoded, reuse_output=True)
        elif self.local_stats is not None:  # a drop-in replacement (tests, benchmarks)
            decoded = self.local_stats(decoded)
        y = self.head(decoded)
        return y[..., :height, :width]

    def normalize(self, dn: torch.Tensor, dn_offset: float | None = None) -> torch.Tensor:
        """Raw digital numbers -> normalised model input, per the config's normalisation."""
        check_input(dn, self.config.bands)
        norm = self.config.normalization
        offset = norm.dn_offset if dn_offset is None else dn_offset
        mean = cast(torch.Tensor, self._mean).to(dn.device, torch.float32)
        std = cast(torch.Tensor, self._std).to(dn.device, torch.float32)
        reflectance = (dn.float() + offset) / norm.dn_scale
        return (reflectance - mean) / std

    def normalize_into(
        self, dn: np.ndarray, valid: np.ndarray, out: torch.Tensor, dn_offset: float | None = None
    ) -> None:
        """:meth:`normalize` of one image's ``(C, H, W)`` float32 digital numbers, 0 where ``valid`` (``(H, W)``) is
        False, written into the CPU tensor ``out`` (``(C, H, W)``, e.g. a channels_last batch's image) by the fused
        kernel (:func:`earth_embed.kernels.normalize_into`): the same float32 bits, one pass."""
        check_input(torch.from_numpy(np.asarray(dn))[None], self.config.bands)
        norm = self.config.normalization
        offset = norm.dn_offset if dn_offset is None else dn_offset
        mean, std = (cast(torch.Tensor, t).reshape(-1).float().cpu().numpy() for t in (self._mean, self._std))
        kernels.normalize_into(dn, valid, offset, norm.dn_scale, mean, std, out)

    def embed(self, dn: torch.Tensor, dn_offset: float | None = None) -> torch.Tensor:
        """Raw Sentinel-2 digital numbers ``(B, C, H, W)`` -> embeddings ``(B, D, H, W)``.

        Pixels with NaN or infinity in any band enter the model as the band mean and get NaN
        embeddings; they never spread to their neighbours.
        """
        check_input(dn, self.config.bands)
        valid = torch.isfinite(dn).all(dim=1, keepdim=True)
        if bool(valid.all()):
            return self(self.normalize(dn, dn_offset))
        emb = self(torch.where(valid, self.normalize(dn, dn_offset), 0.0))
        return torch.where(valid, emb, float("nan"))

    def pooled(self, dn: torch.Tensor, dn_offset: float | None = None) -> torch.Tensor:
        """One embedding per image ``(B, D)``: the mean over valid (non-nodata) pixels."""
        emb = self.embed(dn, dn_offset)
        finite = torch.isfinite(dn).all(dim=1, keepdim=True)
        valid = ((dn != 0).any(dim=1, keepdim=True) & finite).to(emb.dtype)
        emb = torch.where(finite, emb, 0.0)
        empty = valid.sum(dim=(2, 3), keepdim=True) == 0
        valid = torch.where(empty, torch.ones_like(valid), valid)
        return (emb * valid).sum(dim=(2, 3)) / valid.sum(dim=(2, 3))

    def extra_repr(self) -> str:
        return f"architecture={self.config.architecture}, bands={self.bands}, embed_dim={self.embed_dim}"
