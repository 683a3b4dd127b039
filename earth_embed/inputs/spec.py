"""One input scene as the pipelines see it: how to open it, its checks, and its DN offset settled.

:class:`SceneSpec` is picklable (workers reopen a scene by path). :func:`settle_scene` is the one place
where a scene's DN offset is decided (explicit > the product's own metadata > the model's) and where
implausible values are warned about, for ``embed`` and ``embed-region`` alike, and where its acquisition date
is decided: a date given by the caller, else the product's own metadata, else a date in the file's own
name, else in its own folder's name (never an ancestor folder's); when two sources disagree, the one that
won is said aloud.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, replace
from typing import Any

from ..errors import RasterInputError
from .masks import MaskSpec, resolve_mask
from .plausibility import inspect_input
from .reader import open_scene

log = logging.getLogger("earth_embed")
#: Smallest scene side accepted: the model computes every pixel from its spatial context.
MIN_SIZE = 16
log = logging.getLogger("earth_embed")
_DATE = re.compile(r"(?<!\d)(20\d{2})-?([01]\d)-?([0-3]\d)(?:T\d{6})?(?!\d)")


@dataclass(frozen=True)
class SceneSpec:
    """How to open one input scene (picklable: workers reopen it by path).

    ``source``: what :func:`~earth_embed.inputs.reader.open_scene` takes (a file, a folder, or band files).
    ``date``: acquisition date ``YYYY-MM-DD`` (orders overlapping scenes); when not given, found in the
    file's own name or its own folder's name (``date_from`` says where; the product's metadata overrides
    such a date when the scene is settled). ``dn_offset``: this scene's DN offset (-1000 for baseline
    >= 04.00), default the model's.
    ``mask``: where its cloud/shadow mask comes from (:class:`~earth_embed.inputs.masks.MaskSpec`; None: no mask);
    :func:`settle_scene` turns ``auto`` into the source that runs on this scene.
    """

    source: str | tuple[str, ...]
    bands: tuple[str, ...] | None = None
    date: str | None = None
    dn_offset: float | None = None
    name: str = ""
    date_from: str = ""  # "" (given), "metadata", "file name" or "folder name"
    mask: MaskSpec | None = None

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
        if self.date is not None:
            return replace(self, name=name)
        found = path_dates(self.source)
        date, where = found[0] if found else (None, "")
        return replace(self, name=name, date=date, date_from=where)

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
    return _settle_date(spec, scene.product.date)


def path_dates(source: str | tuple[str, ...]) -> list[tuple[str, str]]:
    """``(YYYY-MM-DD, where)`` found in a scene's own name (a file's, a folder's; band files': theirs) and then
    in its own folder's name (``where``: "file name", "folder name"); never in an ancestor folder's."""
    paths = [p.rstrip("/\\") for p in ([source] if isinstance(source, str) else source)]
    texts = [(" ".join(os.path.basename(p) for p in paths), "file name")]
    if len(paths) > 1 or not os.path.isdir(paths[0]):  # a folder scene's own folder is itself
        texts.append((os.path.basename(os.path.dirname(paths[0])), "folder name"))
    found = []
    for text, where in texts:
        hit = _DATE.search(text)
        if hit:
            found.append((f"{hit[1]}-{hit[2]}-{hit[3]}", where))
    return found


def _settle_date(spec: SceneSpec, product_date: str | None) -> SceneSpec:
    """The scene's date by the module's rule (given > metadata > file name > folder name), saying which
    source won when two disagree."""
    if spec.date is not None and spec.date_from in ("", "metadata"):  # given by the caller, or settled
        return spec
    found = ([(product_date, "metadata")] if product_date else []) + path_dates(spec.source)
    if not found:
        return replace(spec, date=None, date_from="")
    date, where = found[0]
    other = next(((d, w) for d, w in found[1:] if d != date), None)
    if other is not None:
        log.warning(
            "%s: dated %s from its %s; its %s says %s, which is ignored (give the date explicitly to choose "
            "another: SceneSpec(..., date='YYYY-MM-DD'))",
            spec.name, date, where, other[1], other[0],
        )  # fmt: skip
    return replace(spec, date=date, date_from=where)


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
    place where ``embed`` and ``embed-region`` decide a scene's DN offset. Its mask source is settled too
    (``auto``: SCL, else the library, else none with a note). One open of the scene."""
    with spec.open() as scene:
        spec = _check(scene, spec, model)
        if spec.mask is not None:
            mask, note = resolve_mask(spec.mask, scene)
            if note:
                log.warning(note)
            spec = replace(spec, mask=mask)
        return replace(spec, dn_offset=inspect_input(scene, model, dn_offset))


def check_scene_size(height: int, width: int, name: str) -> None:
    """Refuse scenes smaller than :data:`MIN_SIZE` px on a side."""
    if height < MIN_SIZE or width < MIN_SIZE:
        raise RasterInputError(
            f"The input {name} is {height}x{width} px; earth-embed needs at least {MIN_SIZE}x{MIN_SIZE} px "
            "because every embedding is computed from the pixel's spatial context. Pass a larger area."
        )
