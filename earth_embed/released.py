"""Where earth-embed's released models are found, and the one way models are loaded by name."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import ModelNotFoundError

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
    if kind not in RELEASED:
        raise ValueError(f"kind must be one of {', '.join(RELEASED)}, got {kind!r}")
    name = RELEASED[kind]
    for folder in model_dirs():
        candidate = folder / name
        if (candidate / "config.json").is_file() and (candidate / "model.safetensors").is_file():
            return str(candidate)
    return None


def load_model(model: Any = None, kind: str = "encoder", revision: str | None = None) -> Any:
    """A ready model: ``model`` itself when it is one, else loaded from a folder or Hub id (``str``), else
    (``None``) the released model of ``kind`` ('encoder' or 'segmenter')."""
    if model is not None and not isinstance(model, (str, os.PathLike)):
        return model
    name = os.fspath(model) if model is not None else find_released(kind)
    if name is None:
        raise ModelNotFoundError(
            f"No released {kind} is installed here and no model was named. Pass a model folder "
            "(config.json + model.safetensors) or a Hugging Face Hub id such as org/name."
        )
    if kind == "segmenter":
        from .segmenter import EarthSegmenter

        return EarthSegmenter.from_pretrained(name, revision=revision)
    from .encoder import EarthEncoder

    return EarthEncoder.from_pretrained(name, revision=revision)


def load_released(kind: str = "encoder") -> Any:
    """The released ``kind`` model ('encoder': :class:`~earth_embed.EarthEncoder`, 'segmenter':
    :class:`~earth_embed.EarthSegmenter`), loaded from the folders of :func:`model_dirs`."""
    return load_model(None, kind)
