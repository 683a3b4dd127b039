"""A STAC catalogue of region embeddings: one Item per output (a store group or a COG).

Outputs (a COG of :mod:`earth_embed.outputs.cog`, or a CRS group of the Zarr store) are described by
:class:`~earth_embed.outputs.stac_outputs.EmbeddingOutput` (:mod:`earth_embed.outputs.stac_outputs`); :func:`write_catalog` writes a self-contained STAC Collection with one Item
each, carrying the draft STAC embedding extension's fields (``emb:type`` ``pixel``, ``emb:dimensions``,
``data_type``, ``emb:quantization``, links ``emb:model`` / ``emb:source-data``), the projection
extension's ``proj:`` fields, and the asset key ``embeddings`` (plus ``scales``, the per-pixel scales of
the int8 rule). :func:`validate_catalog` validates every object offline: the STAC core against the
official 1.1.0 schemas that pystac ships, the two extensions against the schema files in
``earth_embed/outputs/schemas/`` (written from the extensions' READMEs: their published schemas cannot
be fetched without network).

pystac is imported here, not by ``import earth_embed``. Input ItemCollections (scene lists) are read by
:mod:`earth_embed.inputs.stac_items`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rasterio.transform import array_bounds
from rasterio.warp import transform_bounds, transform_geom

from .. import quantize
from ..errors import RasterInputError
from .provenance import (
    PRECISION_ATTR,
    RUNTIME_ATTR,
    WEIGHTS_ATTR,
    model_link,
    relative_href,
)
from .stac_outputs import (
    EmbeddingOutput,
    acquisition_dates,
    outputs_from_cogs,
    outputs_from_store,
    parse_date,
)

EMB_EXTENSION = "https://stac-extensions.github.io/embeddings/v0.0.1/schema.json"
PROJ_EXTENSION = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
SCHEMA_FILES = {EMB_EXTENSION: "embeddings-v0.0.1.json", PROJ_EXTENSION: "projection-v2.0.0.json"}
#: Where the source imagery's collection is described (the Collection's ``emb:source-data`` link).
SENTINEL2_URL = "https://sentiwiki.copernicus.eu/web/s2-mission"


def model_href(model: str, folder: Path | None = None) -> str:
    """A link target for a model: its local folder's card (an absolute path here; :func:`write_catalog` makes
    it relative), or its Hugging Face Hub page."""
    if folder is not None:
        return model_link(folder).as_posix()
    return f"https://huggingface.co/{model}"


def _proj_fields(out: EmbeddingOutput) -> dict[str, Any]:
    epsg = out.crs.to_epsg()
    fields: dict[str, Any] = {
        "proj:code": f"EPSG:{epsg}" if epsg else None,
        "proj:shape": [int(out.shape[0]), int(out.shape[1])],
        "proj:transform": [float(v) for v in tuple(out.transform)[:6]],
    }
    if not epsg:
        fields["proj:wkt2"] = out.crs.to_wkt()
    return fields


def build_item(out: EmbeddingOutput) -> Any:
    """A pystac Item for one output (footprint of its grid in WGS84, embedding and projection fields)."""
    import pystac

    h, w = out.shape
    left, bottom, right, top = array_bounds(h, w, out.transform)
    box = {
        "type": "Polygon",
        "coordinates": [[[left, bottom], [right, bottom], [right, top], [left, top], [left, bottom]]],
    }
    geometry = transform_geom(out.crs, "EPSG:4326", box, precision=7)
    bbox = list(transform_bounds(out.crs, "EPSG:4326", left, bottom, right, top, densify_pts=21))
    dates = [parse_date(d) for d in out.dates if d] or acquisition_dates(out.sources)
    props: dict[str, Any] = {
        "emb:type": "pixel",
        "emb:dimensions": int(out.dimensions),
        "data_type": out.data_type,
        "gsd": float(abs(out.transform.a)),
        "created": out.created.isoformat(),
        "emb:runtime_parameters": {"model": out.model, "model_revision": out.model_revision},
    }
    if out.model_weights:  # what identifies the model (its name and path are notes)
        props["emb:runtime_parameters"]["model_weights_sha256"] = out.model_weights
        props[WEIGHTS_ATTR] = out.model_weights
    if out.precision:
        props["emb:runtime_parameters"]["precision"] = out.precision
        props[PRECISION_ATTR] = out.precision
    if out.runtime:
        props["emb:runtime_parameters"]["runtime"] = out.runtime
        props[RUNTIME_ATTR] = out.runtime
    if out.quantization:
        props["emb:quantization"] = out.quantization
    props.update(_proj_fields(out))
    if dates and min(dates) != max(dates):
        props["start_datetime"], props["end_datetime"] = min(dates).isoformat(), max(dates).isoformat()
    item = pystac.Item(
        id=out.id,
        geometry=geometry,
        bbox=bbox,
        datetime=None if props.get("start_datetime") else (dates[0] if dates else out.created),
        properties=props,
        stac_extensions=[EMB_EXTENSION, PROJ_EXTENSION],
    )
    item.add_asset(
        "embeddings",
        pystac.Asset(
            href=out.href, media_type=out.media_type, roles=["data", "embeddings"], title="embeddings (int8 codes)"
        ),
    )
    if out.scales_href:
        item.add_asset(
            quantize.SCALES_NAME,
            pystac.Asset(
                href=out.scales_href,
                media_type=out.media_type,
                roles=["data", "scales"],
                title="per-pixel scales of the int8 codes (value = code * scale)",
            ),
        )
    props["earth_embed:source_scenes"] = list(out.sources)  # scene ids
    if out.layer is not None:  # the asset's arrays are (time, band, y, x): this Item is one index of time
        props["earth_embed:layer"] = out.layer
    item.add_link(pystac.Link("emb:model", model_href(out.model, out.model_path), title=out.model))
    for i, src in enumerate(out.sources):
        path = out.source_paths[i] if i < len(out.source_paths) else None
        if path is not None:  # only where the user declared a scene root (or asked for absolute paths)
            item.add_link(pystac.Link("emb:source-data", path.as_posix(), title=src))
    return item


def build_collection(outputs: Sequence[EmbeddingOutput], collection_id: str, description: str | None = None) -> Any:
    """A pystac Collection holding one Item per output (all from one model, same dimensions and dtype)."""
    import pystac

    if not outputs:
        raise RasterInputError("No outputs to catalogue: embed a region first (earth-embed embed-region ...).")
    first = outputs[0]
    mixed = {(o.model, o.dimensions, o.data_type) for o in outputs}
    if len(mixed) > 1:
        raise RasterInputError(
            f"The outputs come from different models or formats {sorted(mixed)}; write one catalogue per model."
        )
    items = [build_item(o) for o in outputs]
    bboxes = [it.bbox for it in items]
    union = [min(b[0] for b in bboxes), min(b[1] for b in bboxes), max(b[2] for b in bboxes), max(b[3] for b in bboxes)]
    times = [t for it in items for t in _item_times(it)]
    collection = pystac.Collection(
        id=collection_id,
        description=description
        or f"Per-pixel {first.dimensions}-d embeddings of Sentinel-2 scenes by {first.model} (earth-embed).",
        extent=pystac.Extent(pystac.SpatialExtent([union]), pystac.TemporalExtent([[min(times), max(times)]])),
        license="other",
        stac_extensions=[EMB_EXTENSION],
        extra_fields={
            "emb:type": "pixel",
            "emb:dimensions": int(first.dimensions),
            "data_type": first.data_type,
            "gsd": float(abs(first.transform.a)),
        },
    )
    collection.add_link(pystac.Link("emb:model", model_href(first.model, first.model_path), title=first.model))
    collection.add_link(pystac.Link("emb:source-data", SENTINEL2_URL, title="Copernicus Sentinel-2 MSI"))
    collection.add_items(items)
    return collection


def _item_times(item: Any) -> list[dt.datetime]:
    if item.datetime is not None:
        return [item.datetime]
    p = item.properties
    return [dt.datetime.fromisoformat(p["start_datetime"]), dt.datetime.fromisoformat(p["end_datetime"])]


def write_catalog(
    outputs: Sequence[EmbeddingOutput], stac_dir: str | os.PathLike, collection_id: str | None = None
) -> Path:
    """Write a self-contained Collection (``collection.json``) and its Items under ``stac_dir``; validate it.

    Asset hrefs become relative, and so do the links to a local model folder and to source scenes (which the
    outputs record only when a scene root was declared), so the folder can move with its outputs; absolute
    only when the outputs were written with absolute paths asked for. Returns the collection file.
    """
    import pystac

    root = Path(stac_dir).resolve()
    collection = build_collection(outputs, collection_id or root.name)
    collection.normalize_hrefs(str(root) + os.sep)  # the separator: a folder named like x.stac is no file
    collection.make_all_asset_hrefs_relative()
    if not any(o.absolute for o in outputs):
        _relative_links([collection, *collection.get_items(recursive=True)])
    collection.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    path = root / "collection.json"
    validate_catalog(path)
    return path


def _relative_links(objects: Sequence[Any]) -> None:
    """Model and source links to local paths, made relative to the file of the object that holds them."""
    for obj in objects:
        here = Path(obj.get_self_href()).parent
        for link in obj.links:
            target = link.target
            if link.rel in ("emb:model", "emb:source-data") and isinstance(target, str) and Path(target).is_absolute():
                link.target = relative_href(target, here)


def offline_validator() -> Any:
    """pystac's JSON-schema validator with the core schemas pystac ships and our extension schema files."""
    from pystac.validation import JsonSchemaSTACValidator

    validator = JsonSchemaSTACValidator()
    folder = Path(__file__).resolve().parent / "schemas"
    for uri, name in SCHEMA_FILES.items():
        validator.schema_cache[uri] = json.loads((folder / name).read_text())
    return validator


def validate_catalog(collection_path: str | os.PathLike) -> int:
    """Validate a written Collection and all its Items offline; returns the number of objects checked."""
    import pystac

    validator = offline_validator()
    collection = pystac.Collection.from_file(str(collection_path))
    collection.validate(validator=validator)
    n = 1
    for item in collection.get_items(recursive=True):
        item.validate(validator=validator)
        n += 1
    return n


def publish(
    store: str | os.PathLike,
    cog_dir: str | os.PathLike | None = None,
    stac_dir: str | os.PathLike | None = None,
) -> tuple[list[Any], Path | None]:
    """After a run: export ``store``'s finished shards as COGs into ``cog_dir`` and/or catalogue the outputs
    (each store group, and each COG when exported) as a validated STAC Collection in ``stac_dir``.

    Returns the COG tiles and the collection file (None when ``stac_dir`` is None).
    """
    from .cog import export_cogs

    tiles = export_cogs(store, cog_dir) if cog_dir is not None else []
    if stac_dir is None:
        return tiles, None
    outputs = outputs_from_store(store) + outputs_from_cogs([t.path for t in tiles])
    return tiles, write_catalog(outputs, stac_dir)
