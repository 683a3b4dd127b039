"""How outputs name their model and source scenes: ids and relative paths that survive a move, never the
absolute paths of the machine that ran the job unless the user asks for them.

- The model is its Hugging Face Hub id, or for a local folder the folder's name plus its path relative to
  the output's folder (links point at its card, ``README.md``); what identifies it is the hash of its weights
  (:func:`earth_embed.hub.weights_sha256`), recorded with the forward's precision under the names below, the
  path being only a note. Outputs of earlier versions lack the hash: they still read, compared by path.
- A scene is its id (the product id of a SAFE product, else the file or folder name without suffix); its
  path is recorded only when the user declares a root the paths are relative to (CLI ``--scene-root``),
  or absolute when asked (``--absolute-paths``).

:func:`resolve_href` turns such a relative path back into a path on this machine; the STAC catalogue
then links it relative to its own files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: The weights' hash and the forward's precision: GeoTIFF tag of ``embed``, tag of a region COG, attribute of a
#: region store's groups and of STAC Items.
WEIGHTS_TAG, WEIGHTS_COG_TAG, WEIGHTS_ATTR = (
    "MODEL_WEIGHTS_SHA256",
    "EMBEDDING_MODEL_WEIGHTS_SHA256",
    "earth_embed:model_weights_sha256",
)
PRECISION_TAG, PRECISION_COG_TAG, PRECISION_ATTR = "PRECISION", "EMBEDDING_PRECISION", "earth_embed:precision"
RUNTIME_TAG, RUNTIME_COG_TAG, RUNTIME_ATTR = "RUNTIME", "EMBEDDING_RUNTIME", "earth_embed:runtime"

_SUFFIXES = (".safe", ".zip", ".tif", ".tiff", ".jp2", ".vrt", ".img", ".json")
_SAFE_INTERNALS = ("GRANULE", "IMG_DATA", "R10m", "R20m", "R60m")


def scene_id(source: str | os.PathLike | Sequence[str | os.PathLike]) -> str:
    """A scene's id: the SAFE product id when it lies in a ``.SAFE`` folder, else its file or folder name
    (band files: their folder's) without suffixes such as ``.tif`` or ``.zip``."""
    paths = [os.fspath(source)] if isinstance(source, (str, os.PathLike)) else [os.fspath(p) for p in source]
    p = Path(paths[0]) if len(paths) == 1 else Path(paths[0]).parent
    for part in (p, *p.parents):
        if part.name.upper().endswith(".SAFE"):
            return part.name[:-5]
    while p.name in _SAFE_INTERNALS and p.parent != p:  # a granule's band folder without a .SAFE parent
        p = p.parent
    name = p.name
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name or str(p)


def relative_href(target: str | os.PathLike, base: str | os.PathLike) -> str:
    """``target`` as a POSIX path relative to the folder ``base`` (absolute when no relative path exists)."""
    try:
        return Path(os.path.relpath(os.path.abspath(target), os.path.abspath(base))).as_posix()
    except ValueError:  # another drive (Windows)
        return Path(os.path.abspath(target)).as_posix()


def resolve_href(href: str, base: str | os.PathLike) -> Path:
    """A recorded path (relative to ``base``, or absolute) as an absolute path on this machine."""
    p = Path(href)
    return p if p.is_absolute() else (Path(base) / p).resolve()


def is_local_model(model_id: str) -> bool:
    """True when ``model_id`` names a folder (or file) on this machine, not a Hub id."""
    return Path(model_id).expanduser().exists()


def model_label(model_id: str) -> str:
    """The name outputs give a model: its Hub id, or a local folder's name."""
    if is_local_model(model_id):
        p = Path(model_id).expanduser().resolve()
        return p.name if p.is_dir() else p.parent.name
    return model_id


def model_folder(model_id: str) -> Path | None:
    """The folder of a local model, or None for a Hub id."""
    if not is_local_model(model_id):
        return None
    p = Path(model_id).expanduser().resolve()
    return p if p.is_dir() else p.parent


def model_link(folder: Path) -> Path:
    """What a link to a local model points at: its card (``README.md``) when it has one, else the folder."""
    card = folder / "README.md"
    return card if card.is_file() else folder


def model_facts(
    model_id: str,
    base: str | os.PathLike,
    absolute: bool = False,
    weights: str | None = None,
    precision: str | None = None,
    runtime: str | None = None,
) -> dict[str, Any]:
    """Store attributes naming the model: ``geoemb:model`` (label), its weights' hash and the precision when
    given, and for a local folder ``earth_embed:model_path`` (relative to ``base``, or absolute when ``absolute``)."""
    facts: dict[str, Any] = {"geoemb:model": model_label(model_id)}
    if weights:
        facts[WEIGHTS_ATTR] = weights
    if precision:
        facts[PRECISION_ATTR] = precision
    if runtime:
        facts[RUNTIME_ATTR] = runtime
    folder = model_folder(model_id)
    if folder is not None:
        facts["earth_embed:model_path"] = folder.as_posix() if absolute else relative_href(folder, base)
    return facts


def source_entry(source: Any, scene_root: str | os.PathLike | None = None, absolute: bool = False) -> dict[str, Any]:
    """``{"id": ..., ["href": ...]}`` for one scene source (a path or band files): an href only when a
    ``scene_root`` is declared (relative to it) or ``absolute`` paths are asked for."""
    entry: dict[str, Any] = {"id": scene_id(source)}
    paths = [os.fspath(source)] if isinstance(source, (str, os.PathLike)) else [os.fspath(p) for p in source]
    target = paths[0] if len(paths) == 1 else os.path.dirname(paths[0])
    if absolute:
        entry["href"] = Path(os.path.abspath(target)).as_posix()
    elif scene_root is not None:
        entry["href"] = relative_href(target, scene_root)
    return entry


__all__ = [
    "PRECISION_ATTR",
    "PRECISION_COG_TAG",
    "PRECISION_TAG",
    "RUNTIME_ATTR",
    "RUNTIME_COG_TAG",
    "RUNTIME_TAG",
    "WEIGHTS_ATTR",
    "WEIGHTS_COG_TAG",
    "WEIGHTS_TAG",
    "is_local_model",
    "model_facts",
    "model_folder",
    "model_label",
    "model_link",
    "relative_href",
    "resolve_href",
    "scene_id",
    "source_entry",
]
