"""Where earth-embed's released models are found when no model is named."""

from __future__ import annotations

import os
from pathlib import Path

#: Release folder names (as their Hub ids would be, without the organisation).
RELEASED = {
    "encoder": "earth-embed-s2-unet-r18s16",
    "segmenter": "earth-embed-s2-unet-r18s16-brandenburg-landuse",
}


def model_dirs() -> list[Path]:
    """Folders searched for released models, in order: ``$EARTH_EMBED_MODELS``, ``./models``, the
    source checkout's ``models/``, the copy installed with the package (``earth_embed/models``)."""
    dirs = []
    if os.environ.get("EARTH_EMBED_MODELS"):
        dirs.append(Path(os.environ["EARTH_EMBED_MODELS"]))
    here = Path(__file__).resolve().parent
    dirs += [Path.cwd() / "models", here.parent / "models", here / "models"]
    return dirs


def find_released(kind: str = "encoder") -> str | None:
    """Path of the released ``kind`` ('encoder' or 'segmenter') model folder, or None if none is present."""
    name = RELEASED[kind]
    for folder in model_dirs():
        candidate = folder / name
        if (candidate / "config.json").is_file() and (candidate / "model.safetensors").is_file():
            return str(candidate)
    return None
