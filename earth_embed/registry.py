"""Named architectures: plain data, one registry (like timm's ``pretrained_cfg``)."""

from __future__ import annotations

from typing import Any

from .errors import ConfigError

#: name -> timm backbone + U-Net decoder widths (one width per x2 upsampling stage, deepest first).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "unet-resnet18": {"backbone": "resnet18", "decoder_channels": [256, 128, 64, 32, 32]},
    # ResNet-18 up to stride 16 (no layer4: 8.4 M of its 11.2 M weights) and a lighter decoder:
    # 3.6 M weights, for CPU-scale pre-training and small release folders.
    "unet-resnet18-s16": {
        "backbone": "resnet18",
        "backbone_out_indices": [0, 1, 2, 3],
        "decoder_channels": [128, 64, 32, 32],
    },
    # The stride-16 model with a texture layer before the head (the released encoder's architecture): the
    # head also sees the local standard deviation of each last-decoder channel over 5 and 15 px, so that
    # within-scene texture (what the hand-made stack adds to the bands) costs the network no capacity to carry.
    "unet-resnet18-s16-ls": {
        "backbone": "resnet18",
        "backbone_out_indices": [0, 1, 2, 3],
        "decoder_channels": [128, 64, 32, 32],
        "local_stats": [5, 15],
    },
    "unet-resnet34": {"backbone": "resnet34", "decoder_channels": [256, 128, 64, 32, 32]},
    "unet-resnet50": {"backbone": "resnet50", "decoder_channels": [256, 128, 64, 32, 32]},
    "unet-convnext-tiny": {"backbone": "convnext_tiny", "decoder_channels": [256, 128, 64, 32, 32]},
}


def register_architecture(name: str, spec: dict[str, Any], *, overwrite: bool = False) -> None:
    """Add an architecture under ``name`` (plain data, as the entries above), e.g. an experimental one of a
    training recipe; refuses to replace an existing name unless ``overwrite``."""
    if name in ARCHITECTURES and not overwrite and ARCHITECTURES[name] != spec:
        raise ConfigError(f"Architecture {name!r} is already registered; pick another name or pass overwrite=True.")
    if "backbone" not in spec or "decoder_channels" not in spec:
        raise ConfigError(f"Architecture {name!r} needs 'backbone' and 'decoder_channels' (got {sorted(spec)}).")
    ARCHITECTURES[name] = dict(spec)


def list_architectures() -> list[str]:
    """Names accepted by ``EarthEncoder.new``."""
    return sorted(ARCHITECTURES)


def get_architecture(name: str) -> dict[str, Any]:
    """The registry entry for ``name`` (a copy), or a ConfigError listing the known names."""
    if name not in ARCHITECTURES:
        raise ConfigError(f"Unknown architecture {name!r}. Known architectures: {', '.join(list_architectures())}.")
    return {key: list(value) if isinstance(value, list) else value for key, value in ARCHITECTURES[name].items()}
