"""Labelled pixels on an embedding raster's grid, from a vector file or a label raster.

Vectors (GeoJSON, GeoPackage, Shapefile, FlatGeobuf... anything GDAL/OGR reads) go through pyogrio and
shapely and are reprojected to the raster's CRS by ``rasterio.warp.transform_geom``: points take the
pixel they fall in; polygons and lines are rasterised with ``rasterio.features.rasterize`` (pixel
centres inside; a feature that covers no pixel centre takes the pixels it touches). Where features
overlap, the later one wins. A label raster must be on the embeddings' grid; 0 is unlabelled.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.features import rasterize
from rasterio.transform import rowcol
from rasterio.warp import transform_bounds, transform_geom
from rasterio.windows import Window, from_bounds

from ..errors import LabelError
from ..outputs.embeddings import EmbeddingRaster
from .deps import require

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")

#: Colours of common land-cover names (RGB); other classes get the segmenter's default palette.
NAMED_COLORS = {
    "water": (40, 110, 220),
    "forest": (16, 96, 32),
    "field": (232, 190, 70),
    "farm": (232, 190, 70),
    "cropland": (232, 190, 70),
    "grass": (102, 204, 102),
    "marsh": (100, 200, 210),
    "wetland": (100, 200, 210),
    "built": (220, 40, 40),
    "urban": (220, 40, 40),
    "bare": (190, 170, 150),
    "sand": (240, 220, 160),
    "snow": (250, 250, 250),
    "cloud": (200, 200, 200),
}


@dataclass
class Labels:
    """Labelled pixels: positions on the raster grid, 0-based class indices, class names and colours."""

    rows: np.ndarray
    cols: np.ndarray
    y: np.ndarray
    classes: list[str]
    colors: list[tuple[int, int, int]]
    source: str
    dropped_outside: int = 0
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Labelled pixels per class."""
        n = np.bincount(self.y, minlength=len(self.classes))
        return {c: int(n[i]) for i, c in enumerate(self.classes)}

    def subset(self, keep: np.ndarray) -> Labels:
        """The labels at ``keep`` (a boolean mask), same classes."""
        return Labels(
            self.rows[keep], self.cols[keep], self.y[keep], self.classes, self.colors, self.source,
            self.dropped_outside, list(self.notes),
        )  # fmt: skip


def default_colors(classes: list[str]) -> list[tuple[int, int, int]]:
    """A colour per class: :data:`NAMED_COLORS` for common names, else a tab10-like palette."""
    from ..segmenter import DEFAULT_COLORS

    out = []
    for i, c in enumerate(classes):
        rgb = NAMED_COLORS.get(c.strip().lower()) or DEFAULT_COLORS[i % len(DEFAULT_COLORS)]
        out.append((int(rgb[0]), int(rgb[1]), int(rgb[2])))
    return out


def read_geometries(path: str | os.PathLike, grid: EmbeddingRaster, column: str | None) -> tuple[list, list]:
    """Shapely geometries of a vector file in the raster's CRS, and their ``column`` values (or Nones)."""
    pyogrio = require("pyogrio")
    shapely = require("shapely")
    path = Path(path)
    if not path.exists():
        raise LabelError(f"The label file {path} does not exist; check the path.")
    if path.is_file() and path.stat().st_size == 0:
        raise LabelError(f"The label file {path} is empty (0 bytes); export the labels again from your GIS.")
    try:
        info = pyogrio.read_info(path)
    except Exception as err:
        raise LabelError(
            f"{path} is not a vector file GDAL can read ({err}); give GeoJSON, GeoPackage, Shapefile or FlatGeobuf, "
            "or a label raster (.tif)."
        ) from err
    if info["features"] == 0:
        raise LabelError(f"The label file {path} holds no features; draw or export at least a few labelled points.")
    fields = [str(f) for f in info["fields"]]
    if column is not None and column not in fields:
        raise LabelError(
            f"The label file {path} has no column {column!r}; its columns are {fields or 'none'}. "
            "Pass the one holding the class names with --column (Python: column=)."
        )
    if not info["crs"]:
        raise LabelError(
            f"The label file {path} has no CRS (e.g. a Shapefile without its .prj); re-export it with a CRS, "
            "such as EPSG:4326 for longitude/latitude."
        )
    _meta, _fids, wkb, field_data = pyogrio.raw.read(path, columns=[column] if column else [])
    values = list(field_data[0]) if column else [None] * len(wkb)
    keep = [i for i, g in enumerate(wkb) if g is not None]
    if not keep:
        raise LabelError(f"The label file {path} has features but no geometries; draw points or polygons.")
    if len(keep) < len(wkb):
        empty = [i + 1 for i, g in enumerate(wkb) if g is None]
        raise LabelError(
            f"{len(empty)} feature(s) of {path} have no geometry (feature {_listed(empty)}), so their labels "
            "would be dropped; give them a geometry or delete them in your GIS."
        )
    shapes = shapely.from_wkb([wkb[i] for i in keep])
    invalid = [i for i, g in enumerate(shapes) if not g.is_valid]
    if invalid:
        why = shapely.is_valid_reason(shapes[invalid[0]])
        raise LabelError(
            f"{len(invalid)} geometry(ies) of {path} are invalid (feature {_listed([i + 1 for i in invalid])}: {why}), "
            "so the pixels they label are ambiguous; repair them (QGIS: Fix geometries; shapely.make_valid) and "
            "check the result."
        )
    geoms = [shapely.geometry.mapping(g) for g in shapes]
    values = [values[i] for i in keep]
    try:
        geoms = transform_geom(info["crs"], grid.crs, geoms)
    except Exception as err:
        raise LabelError(
            f"The labels' CRS ({info['crs']}) cannot be transformed to the raster's ({grid.crs}): {err}. "
            "Re-export the labels in the raster's CRS or in EPSG:4326 (longitude/latitude)."
        ) from err
    geoms = [shapely.geometry.shape(g) for g in geoms]
    if any(not np.isfinite(_coords(g)).all() for g in geoms):
        raise LabelError(
            f"The labels' CRS ({info['crs']}) does not transform to the raster's ({grid.crs}) (infinite coordinates); "
            "check that the file's CRS is right, or re-export the labels in EPSG:4326."
        )
    return geoms, values


def _listed(numbers: list[int]) -> str:
    return ", ".join(map(str, numbers[:5])) + (" ..." if len(numbers) > 5 else "")


def _coords(geom: Any) -> np.ndarray:
    """(N, 2) vertex coordinates of a shapely geometry."""
    return require("shapely").get_coordinates(geom)


def geometry_pixels(geom: Any, grid: EmbeddingRaster) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the pixels a geometry in the raster's CRS labels (only those inside the raster)."""
    pts = _coords(geom)
    if geom.geom_type in ("Point", "MultiPoint"):
        r, c = rowcol(grid.transform, pts[:, 0], pts[:, 1])
        rows, cols = np.asarray(r, np.int64), np.asarray(c, np.int64)
    else:
        if pts.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        win = from_bounds(pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max(), grid.transform)
        c0, r0 = int(np.floor(win.col_off)), int(np.floor(win.row_off))
        win = Window(
            c0, r0, int(np.ceil(win.col_off + win.width)) - c0 + 1, int(np.ceil(win.row_off + win.height)) - r0 + 1
        )
        try:
            win = win.intersection(Window(0, 0, grid.width, grid.height))
        except rasterio.errors.WindowError:  # entirely outside
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        shape = (int(win.height), int(win.width))
        wt = rasterio.windows.transform(win, grid.transform)
        mask = rasterize([(geom, 1)], out_shape=shape, transform=wt, fill=0, dtype="uint8")
        if not mask.any():  # smaller than a pixel: the pixels it touches
            mask = rasterize([(geom, 1)], out_shape=shape, transform=wt, fill=0, dtype="uint8", all_touched=True)
        r, c = np.nonzero(mask)
        rows, cols = r.astype(np.int64) + int(win.row_off), c.astype(np.int64) + int(win.col_off)
    inside = (rows >= 0) & (rows < grid.height) & (cols >= 0) & (cols < grid.width)
    return rows[inside], cols[inside]


def _outside_error(path: Any, grid: EmbeddingRaster, geoms: list) -> LabelError:
    pts = np.concatenate([_coords(g) for g in geoms])
    lb = transform_bounds(grid.crs, "EPSG:4326", pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max())
    rb = transform_bounds(grid.crs, "EPSG:4326", *grid.bounds)
    fmt = "lon {:.4f}..{:.4f}, lat {:.4f}..{:.4f}"
    return LabelError(
        f"No label of {path} falls on the raster: the labels span {fmt.format(lb[0], lb[2], lb[1], lb[3])}, the raster "
        f"{fmt.format(rb[0], rb[2], rb[1], rb[3])}. Draw the labels over this scene (or check the labels' CRS)."
    )


def read_vector_labels(path: str | os.PathLike, grid: EmbeddingRaster, column: str = "class") -> Labels:
    """Labelled pixels from a vector file's features, class names from ``column`` (sorted)."""
    geoms, values = read_geometries(path, grid, column)
    names = [str(v).strip() if v is not None else "" for v in values]
    if any(n in ("", "None", "nan") for n in names):
        missing = sum(n in ("", "None", "nan") for n in names)
        raise LabelError(
            f"{missing} feature(s) of {path} have no value in column {column!r}; fill them or delete them."
        )
    classes = sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    rows, cols, ys = [], [], []
    outside = 0
    for geom, name in zip(geoms, names):
        r, c = geometry_pixels(geom, grid)
        if r.size == 0:
            outside += 1
        rows.append(r)
        cols.append(c)
        ys.append(np.full(r.size, index[name], np.int64))
    if outside == len(geoms):
        raise _outside_error(path, grid, geoms)
    labels = _dedupe(np.concatenate(rows), np.concatenate(cols), np.concatenate(ys))
    notes = [f"{outside} of {len(geoms)} features lie outside the raster and were ignored"] if outside else []
    return Labels(*labels, classes, default_colors(classes), str(path), outside, notes)


def _dedupe(rows: np.ndarray, cols: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One label per pixel: the last one given wins."""
    key = rows * (cols.max(initial=0) + 1) + cols
    _, last = np.unique(key[::-1], return_index=True)
    keep = np.sort(len(key) - 1 - last)
    return rows[keep], cols[keep], y[keep]


def _raster_class_names(ds: Any, path: Path, values: list[int]) -> tuple[list[str], list | None]:
    tags = ds.tags()
    names: dict[int, str] = {}
    if tags.get("CLASS_NAMES"):
        names = dict(enumerate(json.loads(tags["CLASS_NAMES"])))
    names.update({int(k[6:]): v for k, v in tags.items() if k.startswith("CLASS_") and k[6:].isdigit()})
    sidecar = path.with_name("classes.json")
    if sidecar.is_file():  # the labelled sets' layout
        names.update({int(k): v for k, v in json.loads(sidecar.read_text()).get("names", {}).items()})
    try:
        cmap = ds.colormap(1)
    except ValueError:
        cmap = None
    colors = [tuple(cmap[v][:3]) for v in values] if cmap else None
    return [names.get(v, f"class {v}") for v in values], colors


def read_raster_labels(path: str | os.PathLike, grid: EmbeddingRaster) -> Labels:
    """Labelled pixels of a single-band label raster on the embeddings' grid (0 = unlabelled)."""
    path = Path(path)
    if not path.exists():
        raise LabelError(f"The label raster {path} does not exist; check the path.")
    try:
        ds = rasterio.open(path)
    except rasterio.errors.RasterioIOError as err:
        raise LabelError(f"{path} is not a readable raster ({err}).") from err
    with ds:
        same = (
            ds.crs == grid.crs
            and (ds.height, ds.width) == (grid.height, grid.width)
            and ds.transform.almost_equals(grid.transform)
        )
        if not same:
            raise LabelError(
                f"The label raster {path} is on another grid ({ds.crs}, {ds.width}x{ds.height} px, origin "
                f"{ds.transform.c:g}, {ds.transform.f:g}, pixel {ds.transform.a:g} m) than the embeddings ({grid.crs}, "
                f"{grid.width}x{grid.height} px, origin {grid.transform.c:g}, {grid.transform.f:g}, pixel "
                f"{grid.transform.a:g} m). Resample it onto the embeddings' grid with nearest neighbour "
                f"(gdalwarp -r near -t_srs {grid.crs} -te {' '.join(f'{v:g}' for v in grid.bounds)} -ts {grid.width} "
                f"{grid.height}), or give the labels as a vector file."
            )
        rows, cols, vals = [], [], []
        for win in grid.windows():
            block = ds.read(1, window=win)
            r, c = np.nonzero(block)
            rows.append(r + int(win.row_off))
            cols.append(c + int(win.col_off))
            vals.append(block[r, c].astype(np.int64))
        v = np.concatenate(vals)
        if v.size == 0:
            raise LabelError(f"The label raster {path} labels no pixel (all 0 = unlabelled); label a few pixels.")
        values = sorted(int(x) for x in np.unique(v))
        classes, colors = _raster_class_names(ds, path, values)
    y = np.searchsorted(np.asarray(values), v)
    return Labels(
        np.concatenate(rows), np.concatenate(cols), y, classes, list(colors or default_colors(classes)), str(path)
    )


def read_labels(path: str | os.PathLike, grid: EmbeddingRaster, column: str = "class") -> Labels:
    """Labelled pixels from a vector file (any CRS, class ``column``) or a label raster on ``grid``."""
    if Path(path).suffix.lower() in RASTER_SUFFIXES:
        return read_raster_labels(path, grid)
    return read_vector_labels(path, grid, column)
