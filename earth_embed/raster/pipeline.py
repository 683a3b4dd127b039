"""Stream a Sentinel-2 scene through a model into a georeferenced raster, tile by tile.

A reader thread prefetches (and resamples) the next windows while the model computes; a writer
thread compresses and writes finished regions. Tiles overlap and are blended (see ``windows``),
so there are no seams; memory is bounded by tile x batch, not by the scene size.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from .. import __version__
from ..errors import RasterInputError
from .classmap import class_map_style
from .reader import Scene, open_scene
from .windows import Blender, Tile, TileGrid, default_tiling
from .writer import GeoTiffWriter, check_output_path

#: Smallest scene side accepted: the model computes every pixel from its spatial context.
MIN_SIZE = 16
#: GDAL block cache for the output (MB): a constant, whatever the scene size.
GDAL_CACHE_MB = 128
_STOP = object()


def model_identity(model: Any) -> tuple[str, str]:
    """(model id, revision) for output tags: attributes set by the loader, else the config name."""
    name = getattr(model, "name_or_path", None) or getattr(model.config, "name", "") or "unsaved model (random init)"
    revision = getattr(model, "revision", None) or "none"
    return str(name), str(revision)


def _pick_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RasterInputError(f"device={device!r} was asked for but CUDA is not available; use device='cpu'.")
    return dev


def _batches(grid: TileGrid, batch_size: int) -> Iterator[list[Tile]]:
    """Consecutive tiles of equal shape, at most ``batch_size`` each (edge tiles are smaller)."""
    batch: list[Tile] = []
    for t in grid:
        if batch and (len(batch) == batch_size or (t.height, t.width) != (batch[0].height, batch[0].width)):
            yield batch
            batch = []
        batch.append(t)
    if batch:
        yield batch


class _Worker(threading.Thread):
    """A daemon thread that runs ``fn`` and keeps its exception for the caller."""

    def __init__(self, fn: Callable[[], None], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.fn = fn
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.fn()
        except BaseException as err:  # handed to the main thread
            self.error = err


def _put(q: queue.Queue, item: Any, stop: threading.Event, consumer: threading.Thread | None = None) -> bool:
    """Put ``item`` unless ``stop`` is set or the ``consumer`` thread has died (then False)."""
    while not stop.is_set() and (consumer is None or consumer.is_alive()):
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def stream(
    scene: Scene,
    bands: Sequence[str],
    forward: Callable[[torch.Tensor], torch.Tensor],
    normalize: Callable[[torch.Tensor], torch.Tensor],
    channels: int,
    grid: TileGrid,
    finish: Callable[[np.ndarray, np.ndarray], np.ndarray],
    writer: GeoTiffWriter,
    *,
    batch_size: int = 1,
    device: torch.device | str = "cpu",
    progress: bool = True,
    desc: str = "tiles",
) -> None:
    """Run ``forward(normalize(dn))`` over every tile of ``grid``, blend, ``finish`` and write.

    ``finish(block, valid)`` turns a blended float32 block (channels, h, w) and its validity mask
    into what ``writer`` stores. Pixels where any band is nodata are fed to the model as 0 (the
    normalised mean) and marked invalid. Exceptions in any thread stop the run and propagate.
    """
    from tqdm.auto import tqdm

    stop = threading.Event()
    # double buffering on both sides: one batch read ahead, one finished region waiting for the writer
    # (a finished region is a view into its tile's output, D x tile x tile float32)
    read_q: queue.Queue = queue.Queue(maxsize=1)
    write_q: queue.Queue = queue.Queue(maxsize=1)
    device = torch.device(device)
    cuda = device.type == "cuda"

    def read_all() -> None:
        for batch in _batches(grid, batch_size):
            dn = np.stack([scene.read(Window(t.col, t.row, t.width, t.height), bands=bands) for t in batch])
            valid = ~(dn == scene.nodata).any(axis=1) & np.isfinite(dn).all(axis=1)
            if not _put(read_q, (batch, dn, valid), stop):
                return
        _put(read_q, _STOP, stop)

    def write_all() -> None:
        while True:
            item = write_q.get()
            if item is _STOP:
                return
            r0, c0, data = item
            writer.write(r0, c0, data)

    reader, writer_thread = _Worker(read_all, "earth-embed-reader"), _Worker(write_all, "earth-embed-writer")
    reader.start()
    writer_thread.start()
    blender = Blender(grid, channels)
    bar = tqdm(total=len(grid), desc=desc, unit="tile", disable=not progress, dynamic_ncols=True)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        if cuda
        else contextlib.nullcontext()
    )
    try:
        while True:
            try:
                item = read_q.get(timeout=0.5)
            except queue.Empty:
                if reader.error is not None:
                    raise reader.error from None
                continue
            if item is _STOP:
                break
            if writer_thread.error is not None:
                raise writer_thread.error
            batch, dn, valid = item
            if valid.any():
                x = torch.from_numpy(dn)
                v = torch.from_numpy(valid)
                if cuda:
                    x, v = x.pin_memory().to(device, non_blocking=True), v.pin_memory().to(device, non_blocking=True)
                with torch.inference_mode(), autocast:
                    # invalid pixels (nodata, NaN) enter as 0, the normalised mean; torch.where, not a
                    # product: NaN * 0 is NaN, and the convolutions would spread it to valid pixels
                    xin = torch.where(v[:, None], normalize(x), 0.0)
                    out = forward(xin).float()
                out_np = out.cpu().numpy()
            else:  # nothing valid: skip the model
                out_np = np.zeros((len(batch), channels, batch[0].height, batch[0].width), np.float32)
            for k, t in enumerate(batch):
                r0, c0, block = blender.add(t, out_np[k])
                h, w = block.shape[1:]
                region_valid = valid[k, r0 - t.row : r0 - t.row + h, c0 - t.col : c0 - t.col + w]
                if not _put(write_q, (r0, c0, finish(block, region_valid)), stop, writer_thread):
                    raise writer_thread.error or RuntimeError("writer stopped")
            bar.update(len(batch))
        _put(write_q, _STOP, stop, writer_thread)
        writer_thread.join()
        if writer_thread.error is not None:
            raise writer_thread.error
    finally:
        stop.set()
        bar.close()
        reader.join()  # it checks `stop` between batches; the scene must outlive it
        if writer_thread.is_alive():  # drop what is queued, then let the writer finish its current block
            with contextlib.suppress(queue.Empty):
                while True:
                    write_q.get_nowait()
            write_q.put(_STOP)
            writer_thread.join()


def _prepare(
    model: Any,
    src: Any,
    dst: Any,
    tile: int | None,
    overlap: int | None,
    batch_size: int | None,
    device: Any,
    bands: Sequence[str] | None,
    overwrite: bool,
):
    """Common checks (cheap ones first), then open the scene and plan the tiles."""
    check_output_path(dst, overwrite)
    dev = _pick_device(device)
    default_tile, default_overlap = default_tiling(model.pad_multiple)
    tile = default_tile if tile is None else tile
    overlap = default_overlap if overlap is None else overlap
    batch_size = (4 if dev.type == "cuda" else 1) if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise RasterInputError(f"batch_size={batch_size} must be >= 1.")
    scene = open_scene(src, bands=bands)
    try:
        scene.read(Window(0, 0, 1, 1), bands=model.bands)  # raises BandError naming missing bands
        if scene.height < MIN_SIZE or scene.width < MIN_SIZE:
            raise RasterInputError(
                f"The input is {scene.height}x{scene.width} px; earth-embed needs at least {MIN_SIZE}x{MIN_SIZE} px "
                "because every embedding is computed from the pixel's spatial context. Pass a larger area."
            )
        grid = TileGrid(scene.height, scene.width, tile, overlap, model.pad_multiple)
    except BaseException:
        scene.close()
        raise
    return scene, grid, dev, batch_size


def _writer_threads(device: torch.device) -> int:
    """Compression threads: all cores when a GPU computes, else one (the CPU cores run the model)."""
    return (os.cpu_count() or 1) if device.type == "cuda" else 1


def _blocksize(grid: TileGrid) -> int:
    m = grid.block_multiple
    for b in (256, 512, 128, 64, 32, 16):
        if m and m % b == 0:
            return b
    return 256


def _base_tags(
    model: Any,
    scene: Scene,
    grid: TileGrid,
    dn_offset: float | None,
    model_id: str | None,
    revision: str | None,
    bands: Sequence[str] | None,
) -> dict[str, str]:
    name, rev = model_identity(model)
    norm = model.config.normalization
    extra = {"INPUT_OPEN_BANDS": json.dumps(list(bands))} if bands else {}  # how to reopen the input
    return {
        **extra,
        "EARTH_EMBED_VERSION": __version__,
        "MODEL": model_id or name,
        "MODEL_REVISION": revision or rev,
        "MODEL_ARCHITECTURE": model.config.architecture,
        "INPUT": scene.source[0] if len(scene.source) == 1 else json.dumps(scene.source),
        "INPUT_BANDS": ",".join(model.bands),
        "DN_OFFSET": str(norm.dn_offset if dn_offset is None else dn_offset),
        "TILE": str(grid.rows.tile),
        "OVERLAP": str(grid.rows.overlap),
        "CREATED": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


@contextlib.contextmanager
def _model_on(model: torch.nn.Module, device: torch.device):
    """Eval mode on ``device`` for the run; the model's mode and device are restored afterwards."""
    was_training = model.training
    try:
        old = next(model.parameters()).device
    except StopIteration:
        old = torch.device("cpu")
    model.eval().to(device)
    try:
        yield model
    finally:
        model.train(was_training).to(old)


def embed_raster(
    model: Any,
    src: str | os.PathLike | Sequence[str | os.PathLike],
    dst: str | os.PathLike,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    dtype: str = "float16",
    progress: bool = True,
    bands: Sequence[str] | None = None,
    dn_offset: float | None = None,
    compress: str = "zstd",
    overwrite: bool = False,
    overviews: bool = False,
    model_id: str | None = None,
    revision: str | None = None,
) -> Path:
    """Write per-pixel embeddings of a Sentinel-2 scene as a GeoTIFF with ``model.embed_dim`` bands.

    ``src``: multi-band GeoTIFF, folder or list of per-band files (see :func:`open_scene`;
    ``bands`` names/picks the input's bands). The output has the input's CRS and transform (finest
    band's grid), bands ``emb_000...``, NaN (int8: -128) where the input is nodata.
    ``tile``/``overlap`` default to 1088/64 px for stride-32 backbones; ``batch_size`` to 1 on CPU,
    4 on CUDA; ``device`` to CUDA when available. ``dtype``: float16 (default), float32 or int8
    (per-band scale/offset in the metadata). ``dn_offset`` overrides the model's DN offset
    (-1000 for processing baseline >= 04.00). The file is a tiled, compressed Cloud-Optimized
    GeoTIFF (directory first, then blocks); ``overviews=True`` adds internal overviews through one
    more pass with GDAL's COG driver. Written under a temporary name, renamed on success.
    """
    scene, grid, dev, batch_size = _prepare(model, src, dst, tile, overlap, batch_size, device, bands, overwrite)
    with scene, _model_on(model, dev), rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        tags = _base_tags(model, scene, grid, dn_offset, model_id, revision, bands)
        tags.update(KIND="embeddings", EMBED_DIM=str(model.embed_dim), OUTPUT_DTYPE=dtype)
        writer = GeoTiffWriter(
            dst,
            height=scene.height,
            width=scene.width,
            count=model.embed_dim,
            crs=scene.crs,
            transform=scene.transform,
            dtype=dtype,
            descriptions=[f"emb_{i:03d}" for i in range(model.embed_dim)],
            tags=tags,
            blocksize=_blocksize(grid),
            compress=compress,
            overwrite=overwrite,
            threads=_writer_threads(dev),
            overviews=overviews,
        )

        def finish(block: np.ndarray, valid: np.ndarray) -> np.ndarray:
            if not valid.all():
                block[:, ~valid] = np.nan
            return block

        with writer:
            stream(
                scene,
                model.bands,
                model,
                lambda x: model.normalize(x, dn_offset),
                model.embed_dim,
                grid,
                finish,
                writer,
                batch_size=batch_size,
                device=dev,
                progress=progress,
                desc="embedding",
            )
    return writer.path


def classify_raster(
    segmenter: Any,
    src: str | os.PathLike | Sequence[str | os.PathLike],
    dst: str | os.PathLike,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    bands: Sequence[str] | None = None,
    dn_offset: float | None = None,
    compress: str = "deflate",
    overwrite: bool = False,
    overviews: bool = False,
    model_id: str | None = None,
    revision: str | None = None,
) -> Path:
    """Write a land-cover map (uint8 GeoTIFF with a colour table) from an :class:`EarthSegmenter`.

    Class ``i`` of ``segmenter.classes`` is written as ``i + 1``; 0 is nodata (like the labelled
    sets' ``labels.tif``). Class names are in the tags ``CLASS_NAMES`` (JSON) and ``CLASS_<value>``.
    Logits of overlapping tiles are blended before the arg-max. Other arguments as :func:`embed_raster`.
    """
    classes = list(getattr(segmenter, "classes", []) or [])
    if not classes:
        raise RasterInputError(
            "classify_raster needs an EarthSegmenter (a model with classes); for an encoder use embed_raster."
        )
    style_tags, colormap = class_map_style(classes, segmenter.class_colors or None)
    scene, grid, dev, batch_size = _prepare(segmenter, src, dst, tile, overlap, batch_size, device, bands, overwrite)
    with scene, _model_on(segmenter, dev), rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        tags = _base_tags(segmenter, scene, grid, dn_offset, model_id, revision, bands)
        tags.update(style_tags)
        writer = GeoTiffWriter(
            dst,
            height=scene.height,
            width=scene.width,
            count=1,
            crs=scene.crs,
            transform=scene.transform,
            dtype="uint8",
            descriptions=["class"],
            tags=tags,
            colormap=colormap,
            blocksize=_blocksize(grid),
            compress=compress,
            overwrite=overwrite,
            threads=_writer_threads(dev),
            overviews=overviews,
        )

        def finish(block: np.ndarray, valid: np.ndarray) -> np.ndarray:
            labels = block.argmax(axis=0).astype(np.uint8) + 1
            return np.where(valid, labels, 0).astype(np.uint8)[None]

        with writer:
            stream(
                scene,
                segmenter.bands,
                segmenter,
                lambda x: segmenter.normalize(x, dn_offset),
                len(classes),
                grid,
                finish,
                writer,
                batch_size=batch_size,
                device=dev,
                progress=progress,
                desc="classifying",
            )
    return writer.path
