"""The two dates of ``earth-embed change``: what makes two embedding rasters comparable, and scenes put on one grid.

Embeddings are comparable only when one model wrote both (the same weights, by the hash both record; for
outputs of earlier versions without it, the same model folder or id), at the same precision, with the same
revision, architecture and dimension, stored by the same rule (int8 ``pixel-scale-int8`` or float) on the same
grid (CRS, size, pixel size and origin): the spaces of two model versions are not comparable, bf16 and fp32
forwards differ by more than a change, and a pixel index must mean the same ground in both.
:func:`check_comparable` refuses anything else with a message naming both sides, and notes what an output
of an earlier version does not record.

Two scenes are embedded with one model, the later one onto the earlier one's grid: its bands are resampled
by georeference (bilinear, GDAL ``WarpedVRT``, DN 0 = nodata), the way the reader puts 20 m bands on the
10 m grid, before the model sees them (:func:`read_scene_on_grid`, :func:`write_scene_on_grid`). Saturation is
decided on each band's own grid and carried through the resampling (:data:`SATURATED_FILL`).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from .. import quantize
from ..errors import BandError, EarthEmbedError, RasterInputError
from ..inputs.bandfiles import named_bands
from ..inputs.pixel_grid import Grid, drawn_on, view_on_grid
from ..inputs.reader import open_scene
from ..inputs.scene import saturated
from ..outputs.embeddings import EmbeddingRaster, ZarrEmbeddings
from ..outputs.provenance import (
    PRECISION_COG_TAG,
    PRECISION_TAG,
    RUNTIME_COG_TAG,
    RUNTIME_TAG,
    WEIGHTS_COG_TAG,
    WEIGHTS_TAG,
)

#: The range of a score's values, which a given threshold must lie in: ``cos`` is 1 - cosine, ``fitted`` a
#: probability; every other score is a distance (0 or more).
SCORE_RANGES = {"cos": (0.0, 2.0), "fitted": (0.0, 1.0)}
DISTANCE_RANGE = (0.0, math.inf)
#: Runtimes whose forwards give the same embeddings (the fp32 forward, by torch or by ONNX Runtime).
SAME_NUMBERS = {"torch", "onnx"}


def check_change_options(a: Any, b: Any, score: str, threshold: Any, min_area: Any, min_level: Any = None) -> None:
    """Refuse (:class:`~earth_embed.errors.EarthEmbedError`) what ``change`` would otherwise use silently: the
    same input as both dates, a threshold that is not a number inside the score's range (NaN, ``cos -1``), a
    negative or non-finite minimum polygon area or change level, a change level with a score that has none."""
    if Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve():
        raise EarthEmbedError(
            f"A and B are the same input ({a}): change compares two dates of one ground; give the other date's "
            "embeddings or scene as B."
        )
    if threshold is not None:
        lo, hi = SCORE_RANGES.get(score, DISTANCE_RANGE)
        try:
            value = float(threshold)
        except (TypeError, ValueError):
            value = math.nan
        span = f"{lo:g} to {hi:g}" if math.isfinite(hi) else f"{lo:g} or more"
        fix = "give a number in that range, or leave --threshold out (Python: threshold=None) for the default rule."
        if math.isnan(value):
            raise EarthEmbedError(f"--threshold {threshold} is not a number; {score} scores run from {span}: {fix}")
        if not lo <= value <= hi or math.isinf(value):
            every = "every" if value < lo else "no"
            raise EarthEmbedError(
                f"--threshold {threshold} lies outside the range of the {score} score ({span}), so it would mark "
                f"{every} pixel as change; {fix}"
            )
    try:
        area = float(min_area)
    except (TypeError, ValueError):
        area = math.nan
    if not (math.isfinite(area) and area >= 0):
        raise EarthEmbedError(f"--min-area {min_area} must be a finite area in m² >= 0 (0 keeps every polygon).")
    if min_level is None:
        return
    try:
        level = float(min_level)
    except (TypeError, ValueError):
        level = math.nan
    if not (math.isfinite(level) and level >= 0):
        raise EarthEmbedError(f"--min-level {min_level} must be a finite change level >= 0 (0: no level floor).")
    if level > 0 and not score.startswith("whitened"):
        raise EarthEmbedError(
            f"--min-level needs a whitened score (whitened, whitened-box5): the change level is measured with its "
            f"statistics, and {score} has none; leave --min-level out or give --score whitened-box5."
        )


class IncomparableError(RasterInputError):
    """Two embedding rasters that cannot be compared pixel by pixel (other model, storage rule or grid)."""


@dataclass(frozen=True)
class Provenance:
    """Who wrote an embedding raster and how it is stored, from its tags (or a region store's attributes)."""

    path: str
    model: str
    revision: str
    architecture: str
    dim: int
    quantization: str
    weights: str | None = None  # sha256:... of the model's weights (None: not recorded, an earlier version)
    precision: str | None = None  # the forward's precision (None: not recorded)
    runtime: str | None = None  # what ran the forward (torch, onnx, onnx-int8; None: not recorded)

    def describe(self) -> str:
        rev = "" if self.revision == "none" else f" revision {self.revision}"
        weights = f" (weights {self.weights[:19]}...)" if self.weights else ""
        precision = f", computed in {self.precision}" if self.precision else ""
        return f"{self.path}: model {self.model}{rev}{weights}, {self.dim}-d{precision}, stored as {self.quantization}"


def provenance(emb: EmbeddingRaster) -> Provenance:
    """The :class:`Provenance` of an open embedding raster (``embed``'s GeoTIFF, a region COG or store group)."""
    t = emb.tags
    revision = t.get("MODEL_REVISION") or t.get("EMBEDDING_MODEL_REVISION")
    if isinstance(emb, ZarrEmbeddings):
        from ..outputs.zarr_groups import group_info

        revision = group_info(emb.store, emb.group).revision
    rule = t.get(quantize.TAG)
    storage = rule if rule else f"float ({t.get('OUTPUT_DTYPE', 'float')}, not quantised)"
    return Provenance(
        path=str(emb.path),
        model=emb.model or "unknown",
        revision=str(revision or "none"),
        architecture=t.get("MODEL_ARCHITECTURE", ""),
        dim=int(emb.dim),
        quantization=storage,
        weights=t.get(WEIGHTS_TAG) or t.get(WEIGHTS_COG_TAG) or None,
        precision=t.get(PRECISION_TAG) or t.get(PRECISION_COG_TAG) or None,
        runtime=t.get(RUNTIME_TAG) or t.get(RUNTIME_COG_TAG) or None,
    )


def _model_key(name: str) -> str:
    s = name.rstrip("/")
    p = Path(s).expanduser()
    return str(p.resolve()) if p.is_dir() else s


def _weights_digest(folder: Path) -> str | None:
    files = [folder / "config.json", folder / "model.safetensors"]
    if not all(f.is_file() for f in files):
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


def same_model(x: str, y: str) -> bool:
    """True when two MODEL tags name one model: the same id or folder, or two folders with identical files."""
    if _model_key(x) == _model_key(y):
        return True
    px, py = Path(x).expanduser(), Path(y).expanduser()
    if px.is_dir() and py.is_dir():
        dx = _weights_digest(px)
        return dx is not None and dx == _weights_digest(py)
    return False


def _same_weights(pa: Provenance, pb: Provenance, notes: list[str]) -> bool:
    """Same model: by the weights' hash when both record it, else (earlier versions) by name or folder."""
    if pa.weights and pb.weights:
        return pa.weights == pb.weights
    for side, p in (("A", pa), ("B", pb)):
        if not p.weights:
            notes.append(
                f"{side} ({p.path}) records no hash of its model's weights (written by an earlier earth-embed), so "
                "its model was compared by name and folder; embed it again to record the hash"
            )
    return same_model(pa.model, pb.model)


def check_comparable(a: EmbeddingRaster, b: EmbeddingRaster) -> list[str]:
    """Refuse (:class:`IncomparableError`) two embedding rasters of different models (weights), precisions,
    revisions, storage rules or grids; the message names both sides and the fix. Returns notes on what an
    input does not record (an earlier version's output)."""
    pa, pb = provenance(a), provenance(b)
    notes: list[str] = []
    sides = f"\n  A = {pa.describe()}\n  B = {pb.describe()}\n"
    if pa.model == "unknown" or pb.model == "unknown":
        raise IncomparableError(
            f"Cannot tell which model wrote the embeddings (no MODEL tag):{sides}Compare embeddings written by "
            "`earth-embed embed` or `embed-region`, which record their model."
        )
    arch = pa.architecture and pb.architecture and pa.architecture != pb.architecture
    if arch or pa.dim != pb.dim or not _same_weights(pa, pb, notes):
        raise IncomparableError(
            "The two dates were embedded by different models (other weights), whose embedding spaces are not "
            f"comparable:{sides}Embed both dates with the same --model (give `change` the two scenes and it does so)."
        )
    if pa.precision and pb.precision and pa.precision != pb.precision:
        raise IncomparableError(
            f"The two dates were computed at different precisions ({pa.precision} for A, {pb.precision} for B), "
            f"whose embeddings differ by more than many a real change:{sides}Embed both dates with the same "
            f"--precision (e.g. --precision {pa.precision})."
        )
    runtimes = {pa.runtime, pb.runtime}
    if None not in runtimes and len(runtimes) > 1 and not runtimes <= SAME_NUMBERS:
        raise IncomparableError(
            f"The two dates were computed by different runtimes ({pa.runtime} for A, {pb.runtime} for B), and "
            f"onnx-int8's quantised forward gives other embeddings than the fp32 one:{sides}Embed both dates with "
            f"the same --runtime (e.g. --runtime {pa.runtime})."
        )
    for side, p in (("A", pa), ("B", pb)):
        if not p.precision:
            notes.append(f"{side} ({p.path}) does not record its precision (an earlier earth-embed): not compared")
    if pa.revision != pb.revision:
        raise IncomparableError(
            "The two dates were embedded by different revisions of the model, whose embedding spaces are not "
            f"comparable:{sides}Embed both dates with the same --revision."
        )
    if pa.quantization != pb.quantization:
        raise IncomparableError(
            "The two dates are stored by different rules (int8 codes against float values), so equal vectors "
            f"do not read back equal:{sides}Embed both dates with the same --dtype (or export both from a region "
            "store)."
        )
    ga, gb = Grid.of(a), Grid.of(b)
    if not ga.same_as(gb):
        raise IncomparableError(
            f"The two dates are on different grids, so a pixel does not mean the same ground in both:\n  A = {pa.path}: "
            f"{ga.describe()}\n  B = {pb.path}: {gb.describe()}\nGive `change` the two scenes (it embeds B onto "
            "A's grid), or resample one scene onto the other's grid before embedding (gdalwarp -te ... -ts ...)."
        )
    return notes


def scene_grid(src: Any) -> Grid:
    """The grid a scene is embedded on (its finest band's), as :func:`~earth_embed.inputs.reader.open_scene` opens it."""
    with open_scene(src) as scene:
        return Grid.of(scene)


def _band_index(ds: Any, band: str, path: str) -> int:
    if ds.count == 1:
        return 1
    names = named_bands(ds)
    if names is None or band not in names:
        raise BandError(
            f"{path} has {ds.count} bands without Sentinel-2 names in their descriptions, so band {band} cannot be "
            "found; name the bands (band descriptions) or give a folder of per-band files."
        )
    return names.index(band) + 1


#: What a resampled band holds where its value draws on a saturated source pixel: the L1C product's special value
#: SATURATED, so that the scene opened from the resampled bands finds the pixel saturated (and grows it by the
#: saturation buffer) however the bilinear blend came out.
SATURATED_FILL = 65535.0


@contextmanager
def bands_on_grid(src: Any, bands: Sequence[str], grid: Grid) -> Iterator[list[tuple[Any, int, Any]]]:
    """(dataset, band index, native) per band of a scene, each reading on ``grid``: the band file itself when it is
    on that grid (native None), else a bilinear ``WarpedVRT`` of it (DN 0 is nodata) and the file on its own grid."""
    with open_scene(src, bands=list(bands)) as scene:
        paths = scene.paths
        names = scene.band_names
    with ExitStack() as stack:
        out = []
        for band in names:
            ds = stack.enter_context(rasterio.open(paths[band]))
            index = _band_index(ds, band, paths[band])
            nodata = 0.0 if ds.nodata is None else ds.nodata
            view = view_on_grid(ds, grid, Resampling.bilinear, nodata=0.0, src_nodata=nodata, dtype="float32")
            out.append((ds, index, None) if view is ds else (stack.enter_context(view), index, ds))
        yield out


def _read_on_grid(sources: list[tuple[Any, int, Any]], grid: Grid, win: Window) -> np.ndarray:
    """The bands of ``sources`` (:func:`bands_on_grid`) in ``win``; every band is :data:`SATURATED_FILL` where a
    resampled band draws on a saturated pixel of its own grid (:func:`~earth_embed.inputs.pixel_grid.drawn_on`)."""
    dn = np.stack([ds.read(i, window=win, out_dtype=np.float32) for ds, i, _ in sources])
    for _, i, native in sources:
        if native is not None:
            dn[:, drawn_on(native, i, grid, win, saturated)] = SATURATED_FILL
    return dn


def read_scene_on_grid(src: Any, bands: Sequence[str], grid: Grid, window: Window | None = None) -> np.ndarray:
    """Digital numbers ``(C, h, w)`` float32 of ``bands`` of a scene resampled onto ``grid`` (0 = nodata,
    :data:`SATURATED_FILL` where a resampled value draws on a saturated pixel)."""
    win = window or Window(0, 0, grid.width, grid.height)
    with bands_on_grid(src, bands, grid) as sources:
        return _read_on_grid(sources, grid, win)


def write_scene_on_grid(src: Any, bands: Sequence[str], grid: Grid, dst: str | os.PathLike, rows: int = 512) -> Path:
    """Write ``bands`` of a scene resampled onto ``grid`` (as :func:`read_scene_on_grid` reads them) as a multi-band
    float32 GeoTIFF whose band descriptions name the bands (what :func:`~earth_embed.inputs.reader.open_scene`
    reads), strip by strip."""
    dst = Path(dst)
    profile = dict(
        driver="GTiff", height=grid.height, width=grid.width, count=len(bands), dtype="float32", crs=grid.crs,
        transform=grid.transform, nodata=0.0, tiled=True, blockxsize=256, blockysize=256, compress="zstd",
        bigtiff="IF_SAFER",
    )  # fmt: skip
    with bands_on_grid(src, bands, grid) as sources, rasterio.open(dst, "w", **profile) as out:
        for k, band in enumerate(bands, start=1):
            out.set_band_description(k, band)
        for r in range(0, grid.height, rows):
            win = Window(0, r, grid.width, min(rows, grid.height - r))
            out.write(_read_on_grid(sources, grid, win), window=win)
    return dst
