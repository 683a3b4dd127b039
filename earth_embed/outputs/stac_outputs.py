"""What a STAC catalogue describes: one :class:`EmbeddingOutput` per exported COG or store group (and per
acquisition layer of a group kept with ``keep="all-dates"``), read from the files' own grids and tags, and the
acquisition dates of their source scenes. :mod:`earth_embed.outputs.stac` turns them into Items."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rasterio.crs import CRS
from rasterio.transform import Affine

from .. import quantize
from ..errors import RasterInputError
from .provenance import PRECISION_COG_TAG, RUNTIME_COG_TAG, WEIGHTS_COG_TAG, resolve_href

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
ZARR_MEDIA_TYPE = "application/vnd+zarr"
_DATE = re.compile(r"(?<!\d)(20\d{2})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2}))?(?!\d)")


@dataclass
class EmbeddingOutput:
    """One catalogued output: where its embeddings are, on which grid, from which model and scenes."""

    id: str
    href: str
    media_type: str
    crs: CRS
    transform: Affine
    shape: tuple[int, int]
    dimensions: int
    data_type: str
    model: str
    model_revision: str | None = None
    sources: list[str] = field(default_factory=list)
    scales_href: str | None = None
    quantization: dict[str, Any] | None = None
    dates: list[str] = field(default_factory=list)  # acquisition dates of the sources (YYYY-MM-DD), if known
    created: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    model_path: Path | None = None  # a local model's folder on this machine (None: a Hub id)
    source_paths: list[Path | None] = field(default_factory=list)  # each source's path here, when recorded
    absolute: bool = False  # link local paths absolutely (the user asked); else relative to the catalogue
    layer: dict[str, Any] | None = None  # an acquisition layer of a store group: its array and index on the time axis
    model_weights: str | None = None  # the hash of the model's weights (None: an earlier version's output)
    precision: str | None = None  # the forward's precision, when recorded
    runtime: str | None = None  # what ran the forward, when recorded


def outputs_from_cogs(paths: Sequence[str | os.PathLike]) -> list[EmbeddingOutput]:
    """One output per exported COG (:mod:`earth_embed.outputs.cog`), read from the file's grid and tags."""
    from .cog import read_cog_tags

    outs = []
    for path in paths:
        p = Path(path)
        meta = read_cog_tags(p)
        tags = meta["tags"]
        if tags.get(quantize.TAG) != quantize.RULE:
            raise RasterInputError(
                f"{p} is not an embedding COG of earth-embed (no {quantize.TAG}={quantize.RULE} tag)."
            )
        scales = p.parent / tags["EMBEDDING_SCALES_FILE"] if tags.get("EMBEDDING_SCALES_FILE") else None
        rev = tags.get("EMBEDDING_MODEL_REVISION")
        folder = p.resolve().parent
        model_path = tags.get("EMBEDDING_MODEL_PATH")
        sources = json.loads(tags.get("EMBEDDING_SOURCE_PATHS", "[]"))
        outs.append(
            EmbeddingOutput(
                id=p.stem,
                href=str(p.resolve()),
                media_type=COG_MEDIA_TYPE,
                crs=meta["crs"],
                transform=meta["transform"],
                shape=meta["shape"],
                dimensions=meta["count"],
                data_type=meta["dtype"],
                model=tags.get("EMBEDDING_MODEL", "unknown"),
                model_revision=None if rev in (None, "none") else rev,
                sources=json.loads(tags.get("EMBEDDING_SOURCES", "[]")),
                dates=json.loads(tags.get("EMBEDDING_SOURCE_DATES", "[]")),
                scales_href=str(scales.resolve()) if scales else None,
                quantization=quantize.geoemb_quantization(),
                model_path=resolve_href(model_path, folder) if model_path else None,
                source_paths=[resolve_href(q, folder) if q else None for q in sources],
                absolute=tags.get("EMBEDDING_ABSOLUTE_PATHS") == "yes",
                model_weights=tags.get(WEIGHTS_COG_TAG),
                precision=tags.get(PRECISION_COG_TAG),
                runtime=tags.get(RUNTIME_COG_TAG),
            )
        )
    return outs


def outputs_from_store(store: str | os.PathLike) -> list[EmbeddingOutput]:
    """One output per CRS group of a region store (asset: the Zarr group)."""
    from .zarr_groups import group_info, store_groups, store_links

    root = Path(store).resolve()
    outs = []
    for name in store_groups(root):
        info = group_info(root, name)
        links = store_links(root, info)
        outs.append(
            EmbeddingOutput(
                id=f"{root.stem}-{name}",
                href=str(root / name),
                media_type=ZARR_MEDIA_TYPE,
                crs=info.crs,
                transform=info.transform,
                shape=info.shape,
                dimensions=info.dimensions,
                data_type="int8",
                model=info.model,
                model_revision=info.revision,
                sources=info.sources,
                dates=info.dates,
                quantization=quantize.geoemb_quantization(),
                model_path=links.model_path,
                source_paths=links.sources,
                absolute=links.absolute,
                model_weights=info.weights,
                precision=info.precision,
                runtime=info.runtime,
            )
        )
        outs += _layer_outputs(outs[-1], info.attrs)
    return outs


def _layer_outputs(group: EmbeddingOutput, attrs: dict[str, Any]) -> list[EmbeddingOutput]:
    """One output per acquisition layer of a group kept with ``keep="all-dates"`` (its date, its scenes)."""
    from dataclasses import replace

    from .zarr_dates import CODES_BY_DATE, DATES_ATTR, SCALES_BY_DATE, SOURCES_ATTR

    dates, sources = list(attrs.get(DATES_ATTR) or []), list(attrs.get(SOURCES_ATTR) or [])
    paths = dict(zip(group.sources, group.source_paths))
    outs = []
    for t, date in enumerate(dates):
        ids = [str(s) for s in (sources[t] if t < len(sources) else [])]
        outs.append(
            replace(
                group,
                id=f"{group.id}-{date}",
                href=f"{group.href}/{CODES_BY_DATE}",
                scales_href=f"{group.href}/{SCALES_BY_DATE}",
                sources=ids,
                dates=[str(date)],
                source_paths=[paths.get(i) for i in ids],
                layer={"time_index": t, "date": str(date), "group": Path(group.href).name},
            )
        )
    return outs


def acquisition_dates(sources: Sequence[str]) -> list[dt.datetime]:
    """Acquisition times of the source scenes, from a ``source.json`` ``date`` or a date token in the path
    (``..._20170216T102101_...``); scenes without one are left out."""
    found = []
    for src in sources:
        p = Path(src)
        meta = (p if p.is_dir() else p.parent) / "source.json"
        text = None
        if meta.is_file():
            text = str(json.loads(meta.read_text()).get("date") or "")
        m = _DATE.search(text or "") or _DATE.search(p.name) or _DATE.search(p.parent.name)
        if m:
            y, mo, d, h, mi, s = (int(g) if g else 0 for g in m.groups())
            found.append(dt.datetime(y, mo, d, h, mi, s, tzinfo=dt.timezone.utc))
    return found


def parse_date(text: str) -> dt.datetime:
    """A UTC date from ``YYYY-MM-DD`` (or a date token in ``text``)."""
    found = _DATE.search(text.replace("-", ""))
    if not found:
        raise RasterInputError(f"Cannot read a date from {text!r}; give dates as YYYY-MM-DD.")
    y, mo, d = (int(g) for g in found.groups()[:3])
    return dt.datetime(y, mo, d, tzinfo=dt.timezone.utc)
