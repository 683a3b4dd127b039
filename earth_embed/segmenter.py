"""EarthSegmenter: an EarthEncoder plus a 1x1 classifier, for land-cover maps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from .config import EarthConfig
from .encoder import EarthEncoder
from .errors import ConfigError
from .hub import EarthHubMixin, apply_state_dict

#: Colours used when a segmenter is built without ``colors`` (tab10-like, RGB).
DEFAULT_COLORS = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
]


class EarthSegmenter(nn.Module, EarthHubMixin):
    """Per-pixel class scores ``(B, K, H, W)`` from an encoder's embeddings."""

    _card_template = "segmenter"

    def __init__(self, config: EarthConfig) -> None:
        super().__init__()
        if config.kind != "segmenter":
            raise ConfigError(
                "This config describes an encoder, not a segmenter (it has no classes). Train one on labels with "
                "`earth-embed fit EMBEDDINGS LABELS OUT` (it saves OUT/segmenter, which `classify --model` takes), "
                "or in Python: EarthSegmenter.from_encoder(EarthEncoder.from_pretrained(...), classes=[...])."
            )
        self.config = config
        self.encoder = EarthEncoder(replace(config, kind="encoder", classes=None, class_colors=None))
        self.classifier = nn.Conv2d(config.embed_dim, len(config.classes or []), kernel_size=1)

    @classmethod
    def from_encoder(
        cls, encoder: EarthEncoder, classes: Sequence[str], colors: Sequence[Sequence[int]] | None = None
    ) -> EarthSegmenter:
        """A segmenter that starts from ``encoder``'s weights with a fresh classifier."""
        classes = [str(c) for c in classes]
        if colors is None:
            colors = [DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i in range(len(classes))]
        config = replace(
            encoder.config, kind="segmenter", classes=classes, class_colors=[[int(v) for v in c] for c in colors]
        )
        model = cls(config)
        model.encoder.load_state_dict(encoder.state_dict())
        return model

    @classmethod
    def _model_from_config(cls, config: EarthConfig, state: dict[str, torch.Tensor], source: str) -> EarthSegmenter:
        model = cls(config)
        apply_state_dict(model, state, source)
        return model

    @property
    def bands(self) -> list[str]:
        return self.encoder.bands

    @property
    def embed_dim(self) -> int:
        return self.encoder.embed_dim

    @property
    def pad_multiple(self) -> int:
        return self.encoder.pad_multiple

    @property
    def classes(self) -> list[str]:
        return list(self.config.classes or [])

    @property
    def class_colors(self) -> list[tuple[int, int, int]]:
        return [(int(c[0]), int(c[1]), int(c[2])) for c in (self.config.class_colors or [])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input -> logits ``(B, K, H, W)``."""
        return self.classifier(self.encoder(x))

    def normalize(self, dn: torch.Tensor, dn_offset: float | None = None) -> torch.Tensor:
        return self.encoder.normalize(dn, dn_offset)

    def normalize_into(
        self, dn: np.ndarray, valid: np.ndarray, out: torch.Tensor, dn_offset: float | None = None
    ) -> None:
        self.encoder.normalize_into(dn, valid, out, dn_offset)

    def class_scores(self, dn: torch.Tensor, dn_offset: float | None = None) -> torch.Tensor:
        """Raw digital numbers -> logits ``(B, K, H, W)``; NaN where any band of a pixel is NaN."""
        valid = torch.isfinite(dn).all(dim=1, keepdim=True) if isinstance(dn, torch.Tensor) else None
        if valid is None or bool(valid.all()):
            return self(self.normalize(dn, dn_offset))
        return torch.where(valid, self(torch.where(valid, self.normalize(dn, dn_offset), 0.0)), float("nan"))

    @torch.no_grad()
    def predict(self, dn: torch.Tensor, dn_offset: float | None = None) -> torch.Tensor:
        """Raw digital numbers -> class indices ``(B, H, W)`` (0-based into :attr:`classes`)."""
        return self.class_scores(dn, dn_offset).argmax(dim=1)
