"""Model configuration: plain data, written as ``config.json`` beside the weights."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .bands import canonical_band_names
from .errors import ConfigError


def check_windows(windows: Sequence[int]) -> list[int]:
    """The window sizes as ints, or a ConfigError unless each is odd and >= 3."""
    out = [int(w) for w in windows]
    bad = [w for w in out if w < 3 or w % 2 == 0]
    if bad or not out:
        raise ConfigError(f"local_stats windows must be odd sizes >= 3 (e.g. [5, 15]), got {list(windows)}.")
    return out


#: Version of the config.json format; bump on incompatible changes.
CONFIG_VERSION = 1


@dataclass
class Normalization:
    """How raw Sentinel-2 digital numbers (DN) become model input.

    ``reflectance = (DN + dn_offset) / dn_scale``; ``input = (reflectance - mean) / std`` per band.
    ``dn_offset`` is -1000 for products of processing baseline >= 04.00 (see
    :func:`earth_embed.bands.dn_offset_for_baseline`) and 0 before; it can be overridden per call.
    """

    mean: list[float]
    std: list[float]
    dn_scale: float = 10000.0
    dn_offset: float = 0.0

    def __post_init__(self) -> None:
        self.mean = [float(v) for v in self.mean]
        self.std = [float(v) for v in self.std]
        if len(self.mean) != len(self.std):
            raise ConfigError(
                f"normalization has {len(self.mean)} means but {len(self.std)} stds; give one of each per band."
            )
        if any(s <= 0 for s in self.std):
            raise ConfigError("normalization std values must all be > 0.")


@dataclass
class EarthConfig:
    """Everything needed to rebuild and correctly use a model.

    ``kind`` is ``"encoder"`` or ``"segmenter"``; ``classes``/``class_colors`` are set for segmenters.
    ``metadata`` is free-form (training data, steps, metrics, licence) and feeds the model card.
    """

    architecture: str
    backbone: str
    decoder_channels: list[int]
    bands: list[str]
    embed_dim: int
    normalization: Normalization
    kind: str = "encoder"
    backbone_out_indices: list[int] | None = None  # timm feature stages used (None: all)
    local_stats: list[int] | None = None  # windows of the texture layer before the head (None: no layer)
    classes: list[str] | None = None
    class_colors: list[list[int]] | None = None
    name: str = ""
    license: str = "apache-2.0"
    metadata: dict[str, Any] = field(default_factory=dict)
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        if isinstance(self.normalization, dict):
            self.normalization = Normalization(**self.normalization)
        self.bands = canonical_band_names(self.bands)
        self.decoder_channels = [int(c) for c in self.decoder_channels]
        if self.local_stats is not None:
            self.local_stats = check_windows(self.local_stats)
        if not self.bands:
            raise ConfigError("config lists no input bands; give at least one band name.")
        if self.embed_dim < 1:
            raise ConfigError(f"embed_dim must be >= 1, got {self.embed_dim}.")
        if len(self.normalization.mean) != len(self.bands):
            raise ConfigError(
                f"normalization has {len(self.normalization.mean)} values but the config lists "
                f"{len(self.bands)} bands ({', '.join(self.bands)}); give one mean/std per band."
            )
        if self.kind not in ("encoder", "segmenter"):
            raise ConfigError(f"config kind must be 'encoder' or 'segmenter', got {self.kind!r}.")
        if self.kind == "segmenter":
            if not self.classes:
                raise ConfigError("a segmenter config needs a non-empty 'classes' list.")
            if self.class_colors is not None and len(self.class_colors) != len(self.classes):
                raise ConfigError(
                    f"{len(self.class_colors)} class colours for {len(self.classes)} classes; give one RGB per class."
                )

    # --- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``local_stats`` only when set, so such configs stay readable by older releases)."""
        data = asdict(self)
        if data["local_stats"] is None:
            del data["local_stats"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EarthConfig:
        """Build from a dict, checking the format version and refusing unknown keys."""
        if not isinstance(data, dict):
            raise ConfigError("config.json must hold a JSON object.")
        version = data.get("version", CONFIG_VERSION)
        if version > CONFIG_VERSION:
            raise ConfigError(
                f"config.json has format version {version}, newer than this earth-embed understands "
                f"({CONFIG_VERSION}); upgrade earth-embed (pip install -U earth-embed)."
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"config.json has unknown keys {unknown}; is it an earth-embed config?")
        required = ["architecture", "backbone", "decoder_channels", "bands", "embed_dim", "normalization"]
        missing = [k for k in required if k not in data]
        if missing:
            raise ConfigError(f"config.json lacks {missing}; it was not written by earth-embed's save_pretrained.")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        """Write as pretty JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> EarthConfig:
        """Read a ``config.json``."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} is not valid JSON ({err}); re-save the model with save_pretrained.") from err
        return cls.from_dict(data)
