"""One input scene as the pipelines see it: how to open it, its checks, and its DN offset settled.

:class:`SceneSpec` is picklable (workers reopen a scene by path). :func:`settle_scene` is the one place
where a scene's DN offset is decided (explicit > the product's own metadata > the model's) and where
implausible values are warned about, for ``embed`` and ``embed-region`` alike.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import Any

from ..errors import RasterInputError
from .plausibility import inspect_input
from .reader import open_scene

#: Smallest scene side accepted: the model computes every pixel from its spatial context.
MIN_SIZE = 16
_DATE = re.compile(r"(?<!\d)(20\d{2})-?([01]\d)-?([0-3]\d)(?:T\d{6})?(?!\d)")


@dataclass(frozen=True)
class SceneSpec:
    """How to open one input scene (picklable: workers reopen it by path).

    ``source``: what :func:`~earth_embed.inputs.reader.open_scene` takes (a file, a folder, or band files).
    ``date``: acquisition date ``YYYY-MM-DD`` (orders overlapping scenes); found in the path when
    not given. ``dn_offset``: this scene's DN offset (-1000 for baseline >= 04.00), default the model's.
    """

    source: str | tuple[str, ...]
    bands: tuple[str, ...] | None = None
    date: str | None = None
    dn_offset: float | None = None
    name: str = ""

    @classmethod
    def of(cls, src: Any) -> SceneSpec:
        """A SceneSpec from a path, a list of band files, or a SceneSpec."""
        if isinstance(src, SceneSpec):
            spec = src
        elif isinstance(src, (str, os.PathLike)):
            spec = cls(os.path.abspath(os.fspath(src)))
        else:
            spec = cls(tuple(os.path.abspath(os.fspath(p)) for p in src))
        return spec if spec.name and spec.date else spec._with_defaults()

    def _with_defaults(self) -> SceneSpec:
        paths = [self.source] if isinstance(self.source, str) else list(self.source)
        name = self.name or (paths[0] if len(paths) == 1 else os.path.dirname(paths[0]) or paths[0])
        date = self.date
        if date is None:
            found = _DATE.search(" ".join(paths))
            date = f"{found[1]}-{found[2]}-{found[3]}" if found else None
        return replace(self, name=name, date=date)

    def open(self):
        """The opened :class:`~earth_embed.inputs.scene.Scene` (close it, or use ``with``)."""
        return open_scene(self.source if isinstance(self.source, str) else list(self.source), bands=self.bands)


def _check(scene: Any, spec: SceneSpec, model: Any) -> SceneSpec:
    """Checks on an open scene (the model's bands, size, CRS); ``spec`` with the product's own DN offset and
    acquisition date (SAFE metadata, ``source.json``, tags) where it states them and the spec has none."""
    scene.read(((0, 1), (0, 1)), bands=model.bands)  # BandError naming missing bands
    check_scene_size(scene.height, scene.width, spec.name)
    if scene.crs is None:
        raise RasterInputError(
            f"{spec.name} has no coordinate reference system; georeference it first (gdal_edit -a_srs)."
        )
    own = scene.product.dn_offset(list(model.bands))
    if spec.dn_offset is None and own is not None:
        spec = replace(spec, dn_offset=float(own))
    if spec.date is None and scene.product.date is not None:  # the product's own metadata dates it
        spec = replace(spec, date=scene.product.date)
    return spec


def inspect_scene(spec: SceneSpec, model: Any) -> tuple:
    """Open ``spec`` once: ``(spec, crs, transform, height, width, nodata)``; raises a clear
    :class:`~earth_embed.errors.EarthEmbedError` for an unreadable scene, missing bands or a tiny area.
    A spec without a ``dn_offset`` comes back with the one the product states about itself (SAFE
    metadata, sidecar, tags: -1000 for baseline >= 04.00), if it states one."""
    with spec.open() as scene:
        spec = _check(scene, spec, model)
        return spec, scene.crs, scene.transform, scene.height, scene.width, scene.nodata


def settle_scene(spec: SceneSpec, model: Any, dn_offset: float | None = None) -> SceneSpec:
    """``spec`` with its DN offset settled (explicit ``dn_offset`` > the product's own > the model's, the
    choice said aloud) after the checks of :func:`inspect_scene` and the plausibility warnings: the one
    place where ``embed`` and ``embed-region`` decide a scene's DN offset. One open of the scene."""
    with spec.open() as scene:
        spec = _check(scene, spec, model)
        return replace(spec, dn_offset=inspect_input(scene, model, dn_offset))


def check_scene_size(height: int, width: int, name: str) -> None:
    """Refuse scenes smaller than :data:`MIN_SIZE` px on a side."""
    if height < MIN_SIZE or width < MIN_SIZE:
        raise RasterInputError(
            f"The input {name} is {height}x{width} px; earth-embed needs at least {MIN_SIZE}x{MIN_SIZE} px "
            "because every embedding is computed from the pixel's spatial context. Pass a larger area."
        )
