"""Cloud and shadow masks at read time: which pixels of a scene are clear.

A :class:`MaskSpec` (picklable, carried by :class:`~earth_embed.inputs.spec.SceneSpec`) names the source:

- ``auto`` (default): the product's own SCL layer where it has one (:mod:`.scl`), else the cloud/shadow library
  (:mod:`.library`, ``earth-embed[clouds]``) where it is installed and the scene has its bands, else no mask, said
  aloud (:func:`resolve_mask`);
- ``scl``, ``ukis-csmask``: that source, or a clear error;
- a path: the user's own mask raster (:mod:`.userfile`: 0 clear, anything else masked);
- ``none``: no mask.

``buffer`` grows every mask by that many pixels. :func:`open_mask` opens the settled source for an open scene; its
``masked(window, dn, bands)`` is a boolean ``(h, w)`` for a window of the scene grid. Masked pixels are nodata in
every output (int8 code -128 with a NaN scale, NaN floats).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
from rasterio.windows import Window

from ...errors import RasterInputError
from . import library
from .grid import dilate
from .library import LibraryMask
from .scl import SclMask, find_scl
from .userfile import FileMask

#: What ``--mask`` takes besides a file path.
MASK_CHOICES = ("auto", "scl", library.NAME, "none")
DEFAULT_MASK = "auto"


class MaskSource(Protocol):
    name: str

    def masked(self, window: Window, dn: np.ndarray, bands: list[str]) -> np.ndarray: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class MaskSpec:
    """Where a scene's cloud/shadow mask comes from: ``source`` (one of :data:`MASK_CHOICES` or a raster path) and
    ``buffer`` (px of dilation on the scene grid)."""

    source: str = DEFAULT_MASK
    buffer: int = 0

    @classmethod
    def of(cls, mask: Any = DEFAULT_MASK, buffer: int = 0) -> MaskSpec:
        """A checked MaskSpec from ``mask=`` (a name, a path, None for none, or a MaskSpec) and ``buffer``."""
        if isinstance(mask, MaskSpec):
            return mask if not buffer else replace(mask, buffer=int(buffer))
        if isinstance(buffer, bool) or int(buffer) != buffer or int(buffer) < 0:
            raise RasterInputError(f"mask buffer={buffer!r} must be a whole number of pixels >= 0 (e.g. 2).")
        source = "none" if mask is None or mask is False else os.fspath(mask)
        if source.lower() in MASK_CHOICES:
            return cls(source.lower(), int(buffer))
        if not os.path.isfile(source):
            raise RasterInputError(
                f"--mask {source!r} (Python: mask=) is neither a mask source ({', '.join(MASK_CHOICES)}) nor an "
                "existing mask raster; pass one of those names or the path of a one-band raster (0 = clear)."
            )
        return cls(os.path.abspath(source), int(buffer))

    @property
    def is_file(self) -> bool:
        return self.source not in MASK_CHOICES

    def describe(self) -> str:
        text = "file " + os.path.basename(self.source) if self.is_file else self.source
        return text + (f" (buffer {self.buffer} px)" if self.buffer else "")


def resolve_mask(spec: MaskSpec, scene: Any) -> tuple[MaskSpec, str | None]:
    """The concrete source for ``scene`` (``auto`` settled) and a note when ``auto`` cannot mask; raises a clear
    error when an explicitly asked source cannot run on this scene."""
    if spec.source == "auto":
        if find_scl(scene.source) is not None:
            return replace(spec, source="scl"), None
        if library.bands_for(scene.band_names) is None:
            return replace(spec, source="none"), (
                f"no cloud mask for {scene.description}: it has no SCL layer, and {library.NAME} needs bands "
                "B02 B03 B04 B08; clouds and shadows are embedded as ground (pass --mask FILE to give a mask)."
            )
        if not library.available():
            return replace(spec, source="none"), (
                f"no cloud mask for {scene.description}: it has no SCL layer and the cloud/shadow library is not "
                f"installed; install it with {library.INSTALL} (or pass --mask FILE, or --mask none to silence this)."
            )
        return replace(spec, source=library.NAME), None
    if spec.source == "scl" and find_scl(scene.source) is None:
        raise RasterInputError(
            f"--mask scl: {scene.description} has no SCL layer (an L2A product's *_SCL_20m file, or SCL.tif beside "
            f"the band files); use --mask auto or {library.NAME}, or pass a mask file."
        )
    if spec.source == library.NAME:
        library.require()
    return spec, None


def open_mask(spec: MaskSpec | None, scene: Any, dn_offset: float) -> BufferedMask | None:
    """The mask source of a settled ``spec`` for the open ``scene`` (None for ``none``); close it after use."""
    if spec is None or spec.source == "none":
        return None
    if spec.source == "auto":
        spec, _ = resolve_mask(spec, scene)
        if spec.source == "none":
            return None
    source: MaskSource
    if spec.is_file:
        source = FileMask(spec.source, scene)
    elif spec.source == "scl":
        path = find_scl(scene.source)
        if path is None:
            raise RasterInputError(f"--mask scl: {scene.description} has no SCL layer any more; check the input.")
        source = SclMask(path, scene)
    else:
        source = LibraryMask(scene, dn_offset)
    return BufferedMask(source, spec.buffer)


class BufferedMask:
    """A mask source with its dilation buffer applied."""

    def __init__(self, source: MaskSource, buffer: int) -> None:
        self.source = source
        self.buffer = buffer
        self.name = source.name

    def masked(self, window: Window, dn: np.ndarray, bands: list[str]) -> np.ndarray:
        return dilate(self.source.masked(window, dn, bands), self.buffer)

    def close(self) -> None:
        self.source.close()


__all__ = ["DEFAULT_MASK", "MASK_CHOICES", "BufferedMask", "MaskSpec", "open_mask", "resolve_mask"]
