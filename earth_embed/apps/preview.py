"""A PNG to look at: the embeddings' first three principal components as false colour (or the class
map with its colour table) next to a true-colour RGB of the input scene."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image, ImageDraw
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window

from ..bands import RGB_BANDS
from ..errors import RasterInputError
from ..inputs.reader import open_scene
from ..outputs.embeddings import EmbeddingRaster, open_embeddings

PCA_SAMPLE = 200_000


def _stretch(x: np.ndarray, valid: np.ndarray, lo: float = 2, hi: float = 98) -> np.ndarray:
    """Per-channel percentile stretch of (C, h, w) to uint8, black where invalid."""
    out = np.zeros(x.shape, np.uint8)
    for c in range(x.shape[0]):
        v = x[c][valid]
        if v.size == 0:
            continue
        a, b = np.percentile(v, [lo, hi])
        scaled = np.clip((x[c] - a) / max(b - a, 1e-12), 0, 1)
        out[c] = np.where(valid, np.rint(scaled * 255), 0).astype(np.uint8)
    return out


def pca_rgb(emb: np.ndarray, seed: int = 0) -> np.ndarray:
    """(D, h, w) embeddings with NaN nodata -> (3, h, w) uint8 false colour of the first 3 PCs."""
    d = emb.shape[0]
    flat = emb.reshape(d, -1)
    valid = np.isfinite(flat).all(axis=0)
    if not valid.any():
        raise RasterInputError("The embedding raster holds no valid pixel (all nodata); nothing to preview.")
    idx = np.flatnonzero(valid)
    rng = np.random.default_rng(seed)
    sample = flat[:, rng.choice(idx, size=min(PCA_SAMPLE, idx.size), replace=False)].astype(np.float64)
    mean = sample.mean(axis=1, keepdims=True)
    centred = sample - mean
    _evals, evecs = np.linalg.eigh(centred @ centred.T)
    comps = evecs[:, ::-1][:, :3].T  # (k, D), largest variance first
    # a deterministic sign: the largest loading of each component is positive
    comps = comps * np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])[:, None]
    proj = np.zeros((3, flat.shape[1]), np.float32)
    proj[: len(comps), idx] = comps.astype(np.float32) @ (flat[:, idx] - mean.astype(np.float32))
    return _stretch(proj.reshape(3, *emb.shape[1:]), valid.reshape(emb.shape[1:]))


def read_reduced(emb: EmbeddingRaster, factor: int, strip_blocks: int = 8) -> np.ndarray:
    """Decoded embeddings averaged over ``factor x factor`` pixels (nodata ignored), strip by strip."""
    h, w = emb.height // factor, emb.width // factor
    out = np.full((emb.dim, h, w), np.nan, np.float32)
    rows = factor * strip_blocks
    for r in range(0, h * factor, rows):
        n = min(rows, h * factor - r)
        x = emb.read(Window(0, r, w * factor, n)).reshape(emb.dim, n // factor, factor, w, factor)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks stay NaN
            out[:, r // factor : (r + n) // factor] = np.nanmean(x, axis=(2, 4))
    return out


def rgb_of_scene(
    src: str | Sequence[str], out_shape: tuple[int, int], bands: Sequence[str] | None = None
) -> np.ndarray:
    """True-colour (B04, B03, B02) uint8 (3, h, w) of a scene at a reduced size (``bands`` as for open_scene)."""
    if isinstance(src, (list, tuple)) and len(src) == 1:
        src = src[0]
    with open_scene(src, bands=bands) as scene:
        missing = [b for b in RGB_BANDS if b not in scene.band_names]
        if missing:
            raise RasterInputError(f"The input {scene.description} lacks {', '.join(missing)} for a true-colour image.")
        dn = scene.read(bands=RGB_BANDS, out_shape=out_shape)
        valid = ~(dn == scene.nodata).any(axis=0)
    reflect = np.sqrt(np.clip(dn / 10000.0, 0, None))  # a gentle gamma for dark land and water
    return _stretch(reflect, valid, 1, 99)


def _panel(img: np.ndarray, title: str) -> Image.Image:
    body = Image.fromarray(np.moveaxis(img, 0, -1))
    canvas = Image.new("RGB", (body.width, body.height + 18), "white")
    canvas.paste(body, (0, 18))
    ImageDraw.Draw(canvas).text((4, 3), title, fill="black")
    return canvas


def make_preview(
    emb_tif: str | os.PathLike,
    out_png: str | os.PathLike,
    *,
    src: str | Sequence[str] | None = None,
    bands: Sequence[str] | None = None,
    rgb: bool = True,
    max_size: int = 1024,
) -> Path:
    """Write ``out_png``: the input's RGB (left) beside the embeddings' PCA false colour (right).

    ``emb_tif``: a GeoTIFF or COG of embeddings or classes, or a region store (``OUT.zarr`` or ``OUT.zarr/GROUP``).

    For a class map written by ``classify_raster`` the right panel shows its colour table instead.
    ``src`` is the input scene (default: the ``INPUT`` tag of ``emb_tif``) and ``bands`` how to open
    it (default: as the embedding run did); ``rgb=False`` skips the RGB panel.
    """
    out = Path(out_png)
    if not out.parent.is_dir():
        raise RasterInputError(f"The output folder {out.parent} does not exist; create it first.")
    if (Path(emb_tif) / "zarr.json").is_file():  # a region store or one of its groups
        right, title, shape = _embedding_panel(emb_tif, max_size)
        if rgb and src is None:
            raise RasterInputError(
                f"{emb_tif} is a region store, which may hold many scenes: pass the scene for the RGB panel with "
                "src= (CLI: --input SRC), or rgb=False (CLI: --no-rgb) for the embedding panel alone."
            )
        return _write_sheet(out, right, title, shape, src if rgb else None, bands, {})
    if not Path(emb_tif).is_file():
        raise RasterInputError(
            f"{emb_tif} does not exist; give the GeoTIFF written by `earth-embed embed` (or a region store)."
        )
    try:
        ds = rasterio.open(emb_tif)
    except RasterioError as err:
        raise RasterInputError(
            f"{emb_tif} is not a raster ({err}); give the GeoTIFF written by `earth-embed embed` or `classify`."
        ) from err
    with ds:
        tags = ds.tags()
        if tags.get("KIND") not in ("embeddings", "classes"):
            raise RasterInputError(
                f"{emb_tif} is not an earth-embed output (it has no KIND=embeddings/classes tag): preview shows the "
                "GeoTIFF written by `earth-embed embed` or `classify`. Embed the scene first "
                "(`earth-embed embed SCENE emb.tif`), then preview emb.tif."
            )
        factor = max(1, -(-max(ds.height, ds.width) // max_size))
        shape = (ds.height // factor, ds.width // factor)
        if tags.get("KIND") == "classes":
            labels = ds.read(1, out_shape=shape, resampling=Resampling.nearest)
            cmap = ds.colormap(1)
            lut = np.zeros((256, 3), np.uint8)
            for k, c in cmap.items():
                lut[k] = c[:3]
            right, title = np.moveaxis(lut[labels], -1, 0), "land cover"
    if tags.get("KIND") == "embeddings":
        right, title, shape = _embedding_panel(emb_tif, max_size)
    if rgb and src is None:
        tag = tags.get("INPUT")
        if not tag:
            raise RasterInputError(f"{emb_tif} does not name its input scene; pass src= (CLI: --input SRC).")
        src = json.loads(tag) if tag.startswith("[") else tag
    return _write_sheet(out, right, title, shape, src if rgb else None, bands, tags)


def _embedding_panel(path: str | os.PathLike, max_size: int) -> tuple[np.ndarray, str, tuple[int, int]]:
    """PCA false colour of any embeddings :func:`open_embeddings` reads, reduced to at most ``max_size`` px."""
    with open_embeddings(path) as emb:
        factor = max(1, -(-max(emb.height, emb.width) // max_size))
        shape = (emb.height // factor, emb.width // factor)
        return pca_rgb(read_reduced(emb, factor)), f"embedding PCA 1-3 ({emb.dim} dims)", shape


def _write_sheet(
    out: Path,
    right: np.ndarray,
    title: str,
    shape: tuple[int, int],
    src: str | os.PathLike | Sequence[str] | None,
    bands: Sequence[str] | None,
    tags: dict[str, str],
) -> Path:
    """The panels side by side (the input's RGB first when ``src`` is given), written atomically."""
    panels = [_panel(right, title)]
    if src is not None:
        paths = [src] if isinstance(src, (str, os.PathLike)) else list(src)
        if not all(os.path.exists(p) for p in paths):
            raise RasterInputError(
                f"The input scene {src} is not found; pass its current location with src= (CLI: --input SRC), "
                "or rgb=False (CLI: --no-rgb) for the embedding panel alone."
            )
        if bands is None and tags.get("INPUT_OPEN_BANDS"):
            bands = json.loads(tags["INPUT_OPEN_BANDS"])
        scene = os.fspath(src) if isinstance(src, (str, os.PathLike)) else list(src)
        panels.insert(0, _panel(rgb_of_scene(scene, shape, bands), "input RGB (B04 B03 B02)"))
    gap = 8
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    sheet = Image.new("RGB", (width, max(p.height for p in panels)), "white")
    x = 0
    for p in panels:
        sheet.paste(p, (x, 0))
        x += p.width + gap
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}.png")
    try:
        sheet.save(tmp, format="PNG")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
