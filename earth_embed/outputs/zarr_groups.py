"""Read a region store's layout: its CRS groups, each group's grid and provenance, its finished shards."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rasterio.crs import CRS
from rasterio.transform import Affine

from ..errors import RasterInputError
from .provenance import PRECISION_ATTR, RUNTIME_ATTR, WEIGHTS_ATTR


@dataclass(frozen=True)
class GroupInfo:
    """A store group's grid and provenance, read from its attributes."""

    name: str
    crs: CRS
    transform: Affine
    shape: tuple[int, int]
    dimensions: int
    shard: int
    chunk: int
    attrs: dict[str, Any]
    run_id: str | None = None  # the id the group's embeddings and scales arrays carry

    @property
    def model(self) -> str:
        return str(self.attrs.get("geoemb:model", "unknown"))

    @property
    def revision(self) -> str | None:
        rev = self.attrs.get("geoemb:model_revision")
        return None if rev in (None, "none") else str(rev)

    @property
    def weights(self) -> str | None:
        """The hash of the model's weights (None: a store of an earlier version, which did not record it)."""
        return self.attrs.get(WEIGHTS_ATTR) or None

    @property
    def precision(self) -> str | None:
        """The forward's precision (None: not recorded, an earlier version's store: fp32)."""
        return self.attrs.get(PRECISION_ATTR) or None

    @property
    def runtime(self) -> str | None:
        """What ran the forward (None: not recorded, an earlier version's store: torch)."""
        return self.attrs.get(RUNTIME_ATTR) or None

    @property
    def dates(self) -> list[str]:
        return [
            str(s["date"]) for s in self.attrs.get("geoemb:source_scenes", []) if isinstance(s, dict) and s.get("date")
        ]

    @property
    def sources(self) -> list[str]:
        """Ids of the source scenes (stores of earlier versions recorded their paths as ``name``)."""
        return [
            str(s.get("id") or s.get("name")) if isinstance(s, dict) else str(s)
            for s in self.attrs.get("geoemb:source_scenes", [])
        ]

    @property
    def source_hrefs(self) -> list[str | None]:
        """Recorded paths of the source scenes (relative to the store's scene root, or absolute), or None each."""
        return [
            (str(s["href"]) if s.get("href") else None) if isinstance(s, dict) else None
            for s in self.attrs.get("geoemb:source_scenes", [])
        ]


def _open_root(store: str | os.PathLike) -> Any:
    import zarr

    p = Path(store)
    if not (p / "zarr.json").is_file():
        raise RasterInputError(f"{p} is not a Zarr v3 store; pass the OUT.zarr written by earth-embed embed-region.")
    return zarr.open_group(p, mode="r")


def group_info(store: str | os.PathLike, name: str) -> GroupInfo:
    """Grid, shard size and attributes of group ``name`` of a region store."""
    root = _open_root(store)
    if name not in root:
        raise RasterInputError(f"{store} has no group {name!r}; it has {', '.join(sorted(root.group_keys()))}.")
    g = root[name]
    attrs = dict(g.attrs)
    crs = CRS.from_user_input(attrs.get("proj:wkt2") or attrs["proj:code"])
    transform = Affine(*attrs["spatial:transform"][:6])
    if transform.b != 0 or transform.d != 0 or transform.e >= 0:
        raise RasterInputError(f"group {name} of {store} is not on a north-up grid ({transform}); re-embed it.")
    arr = g["embeddings"]
    shards = getattr(arr, "shards", None) or arr.chunks
    return GroupInfo(
        name=name,
        crs=crs,
        transform=transform,
        shape=(int(arr.shape[1]), int(arr.shape[2])),
        dimensions=int(arr.shape[0]),
        shard=int(shards[1]),
        chunk=int(arr.chunks[1]),
        attrs=attrs,
        run_id=str(arr.attrs["earth_embed:run_id"]) if arr.attrs.get("earth_embed:run_id") else None,
    )


def store_groups(store: str | os.PathLike) -> list[str]:
    """The CRS groups of a region store, sorted (as listed in the root's ``earth_embed:groups``)."""
    root = _open_root(store)
    listed = root.attrs.get("earth_embed:groups")
    return sorted(listed) if listed else sorted(k for k in root.group_keys() if not k.startswith("_"))


@dataclass(frozen=True)
class StoreLinks:
    """Where a store's model folder and a group's source scenes are on this machine, as far as the store says
    (paths recorded relative to the store's folder or its scene root; ``absolute``: the user asked for absolute paths)."""

    model_path: Path | None
    sources: list[Path | None]
    absolute: bool


def store_links(store: str | os.PathLike, info: GroupInfo) -> StoreLinks:
    """The model folder and the source scenes of group ``info`` of ``store``, resolved (see :class:`StoreLinks`)."""
    from .provenance import resolve_href

    attrs = dict(_open_root(store).attrs)
    base = Path(store).resolve().parent
    model = attrs.get("earth_embed:model_path")
    absolute = bool(attrs.get("earth_embed:absolute_paths"))
    scene_root = attrs.get("earth_embed:scene_root")
    root_dir = resolve_href(str(scene_root), base) if scene_root else None
    sources: list[Path | None] = []
    for href in info.source_hrefs:
        if href is None or (not Path(href).is_absolute() and root_dir is None):
            sources.append(None)
        else:
            sources.append(resolve_href(href, root_dir or base))
    return StoreLinks(resolve_href(str(model), base) if model else None, sources, absolute)


def finished_shards(store: str | os.PathLike, info: GroupInfo) -> list[tuple[int, int]]:
    """Shards of ``info``'s group that the store's registry marks as finished (``_units/<group>/r.c.json``)."""
    folder = Path(store) / "_units" / info.name
    done = []
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        r, c = p.stem.split(".")
        done.append((int(r), int(c)))
    return sorted(done)
